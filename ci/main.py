"""The `Fleetgate` Dagger object: the CLI's verbs as functions, plus build, publish and self-test.

Verb functions (plan, wait-gates, assert-enabled, rollout, verify, deploy-production, redeploy,
promote) are generated from the CLI's verb table and the settings table, so they take exactly the
settings the CLI verb takes, and they call the same `pipelines.runner.run_with_settings` the CLI calls,
in the module's own runtime container. Container work (build, publish, self-test, lint-workflows) is
Dagger API calls; their query graphs are asserted offline in tests/test_dagger_graph.py.
"""

from __future__ import annotations

import contextlib
import importlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import dagger
from dagger import DefaultPath, Doc, Ignore, dag, function, object_type

from ci.arguments import (
    BUILD_IGNORE,
    CONFIG_ONLY,
    ExtraArg,
    generated_method,
    never_cached,
    secret_flags,
    settings_flags,
    source_arg,
)
from ci.errors import VerbFailed, exit_doc
from pipelines.cli import VERBS
from pipelines.errors import ExitCode, FleetgateError, UsageError
from pipelines.output import Output, redact_json
from pipelines.settings import (
    CONFIG_FILE,
    SHA_RE,
    TAG_TEMPLATE_FIELDS,
    Option,
    Settings,
    check_template,
    load_config,
    options_for,
    resolve,
)

# Pinned by exact tag: the interpreter the project is developed and tested on (3.11.7), on Debian
# bookworm, whose apt has the `docker-registry` the promote tests start.
PYTHON_IMAGE = "docker.io/library/python:3.11.7-slim-bookworm"
PIP_CACHE = "fleetgate-pip-python3.11"
SRC = "/src"
# Test-time system packages: the promote tests run Debian's registry and need openssl for its tokens;
# the analysis tests run a real Prometheus.
TEST_APT_PACKAGES = ("docker-registry", "openssl", "prometheus")

E = ExitCode
# Which CLI exit codes each verb's failures correspond to (CONTRACT §3), for the function docs.
VERB_EXIT_CODES: dict[str, tuple[ExitCode, ...]] = {
    "plan": (E.FAILED, E.USAGE, E.DISABLED),
    "wait-gates": (E.FAILED, E.USAGE),
    "assert-enabled": (E.FAILED, E.USAGE, E.DISABLED),
    "rollout": (E.FAILED, E.USAGE, E.DISABLED, E.HALTED_MIXED, E.STOOD_DOWN),
    "verify": (E.FAILED, E.USAGE),
    "deploy-production": (E.FAILED, E.USAGE, E.DISABLED, E.HALTED_MIXED, E.STOOD_DOWN),
    "redeploy": (E.FAILED, E.USAGE, E.HALTED_MIXED),
    "promote": (E.FAILED, E.USAGE),
    "approve": (E.FAILED, E.USAGE),
}

# Arguments a verb has besides its settings: the CLI's VERB_EXTRAS and --sandbox/--scenario.
VERB_EXTRAS: dict[str, tuple[ExtraArg, ...]] = {
    "verify": (ExtraArg("only", list[str] | None, None,
                        "Verify only these tenant slugs (comma-separated)."),),
    "redeploy": (ExtraArg("break_lease", bool, False,
                          "Emergency: take over another run's lease (recorded in the ledger)."),),
    "approve": (ExtraArg("reject", bool, False, "Post failure instead: the paused run stops (exit 1, or rolls back)."),
                ExtraArg("comment", str | None, None, "One line shown as the status's description in Gitea.")),
}
SANDBOX_ARGS: tuple[ExtraArg, ...] = (
    ExtraArg("sandbox", bool, False, "Start a simulated Gitea + control plane + fleet on 127.0.0.1 (inside "
             "the function's container) and point every URL at it."),
    ExtraArg("scenario", str, "happy", "Sandbox scenario (with --sandbox)."),
)
CONFIG_SOURCE_DOC = "Project folder whose fleetgate.toml supplies settings not given as arguments."
FULL_SOURCE_DOC = "Project folder (the repository root by default): Dockerfile, tests, fleetgate.toml."


# ---------------------------------------------------------------- running a verb in the module


async def read_config(source: dagger.Directory) -> str:
    """fleetgate.toml from `source`, or "" when it has none."""
    if await source.exists(CONFIG_FILE):
        return await source.file(CONFIG_FILE).contents()
    return ""


@contextlib.contextmanager
def config_file(text: str) -> Iterator[Path]:
    """The config as a file `load_config` can read. Always a file, even empty: otherwise the runner
    would fall back to ./fleetgate.toml of the runtime's working directory, not the given --source."""
    with tempfile.TemporaryDirectory(prefix="fleetgate-config-") as folder:
        path = Path(folder) / CONFIG_FILE
        path.write_text(text, encoding="utf-8")
        yield path


async def run_verb(verb: str, params: dict[str, Any], config_text: str) -> dict[str, Any]:
    """What `fleetgate VERB` does after parsing: resolve (env = {}), run, map errors. Returns the result."""
    from pipelines.runner import run_with_settings

    module_name, func_name = VERBS[verb][0].split(":")
    out = Output(json_mode=False)  # progress to stderr: the function's log
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        with config_file(config_text) as path:
            params = {**params, "config_path": path}
            result: dict[str, Any] = await run_with_settings(verb, func, params, {}, out)
    except FleetgateError as exc:
        out.verb_ended(verb, exc)
        raise VerbFailed(verb, exc.message, exc.exit_code) from None
    code = int(result.get("exit_code", ExitCode.OK))
    if code != ExitCode.OK:
        raise VerbFailed(verb, str(result.get("error") or result.get("message") or "failed"), code)
    return result


async def verb_params(verb: str, values: dict[str, Any]) -> dict[str, Any]:
    """The runner's params for `verb` from a function's argument values."""
    options = options_for(verb)
    params: dict[str, Any] = {**settings_flags(options, values), **await secret_flags(options, values)}
    params["sandbox"] = bool(values.get("sandbox", False))
    params["scenario"] = str(values.get("scenario") or "happy")
    for extra in VERB_EXTRAS.get(verb, ()):
        value = values.get(extra.name)
        params[extra.name] = tuple(value or ()) if extra.name == "only" else value
    return params


def verb_function(verb: str) -> Any:
    """The Dagger function for CLI verb `verb`: same settings, same code, result JSON returned."""
    _, help_text = VERBS[verb]

    async def impl(_self: Any, values: dict[str, Any]) -> str:
        params = await verb_params(verb, values)
        result = await run_verb(verb, params, await read_config(values["source"]))
        return redact_json(result)

    doc = (f"{help_text} Same as `fleetgate {verb}`; returns the result as JSON. "
           f"{exit_doc(VERB_EXIT_CODES[verb])}")
    extras = (source_arg(CONFIG_ONLY, CONFIG_SOURCE_DOC), *VERB_EXTRAS.get(verb, ()), *SANDBOX_ARGS)
    method = generated_method(verb.replace("-", "_"), doc, options_for(verb), extras, impl)
    # Never cached: every call must read the world (gates, kill switch, fleet) again.
    return never_cached(method)


# ---------------------------------------------------------------- container graphs


def checked_sha(sha: str, verb: str) -> str:
    if not SHA_RE.match(sha.strip().lower()):
        raise VerbFailed(verb, f"--sha: expected a full 40-hex commit SHA, got {sha.strip()[:60]!r}",
                         ExitCode.USAGE)
    return sha.strip().lower()


def checked_image(image: str, verb: str) -> str:
    image = image.strip()
    name = image.rsplit("/", 1)[-1]
    if not image or ":" in name or "@" in image or image != image.lower():
        raise VerbFailed(verb, f"--image: expected a lowercase repository without tag or digest, "
                         f"got {image!r}", ExitCode.USAGE)
    return image


def publish_tags(sha: str, tag_template: str, verb: str) -> list[str]:
    """The tags a build is published under: the deploy tag (`staging-<sha7>` by default) and the full SHA."""
    try:
        check_template(tag_template, TAG_TEMPLATE_FIELDS, "--tag-template")
    except UsageError as exc:
        raise VerbFailed(verb, exc.message, exc.exit_code) from None
    deploy_tag = tag_template.format(sha=sha, short_sha=sha[:7])
    return list(dict.fromkeys([deploy_tag, sha]))


def python_with_project(source: dagger.Directory, extras: str) -> dagger.Container:
    """The pinned Python image with the project installed from `source` at /src (pip cache kept)."""
    return (
        dag.container()
        .from_(PYTHON_IMAGE)
        .with_env_variable("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .with_env_variable("PYTHONUNBUFFERED", "1")
        .with_mounted_cache("/root/.cache/pip", dag.cache_volume(PIP_CACHE))
        .with_directory(SRC, source)
        .with_workdir(SRC)
        .with_exec(["pip", "install", f".{extras}"])
    )


def self_test_container(source: dagger.Directory, run_stamp: str) -> dagger.Container:
    """`fleetgate self-test` in the pinned image. `run_stamp` changes every call so the test exec is
    never answered from the cache: a self-test that did not run proves nothing."""
    return (
        python_with_project(source, "[test]")
        .with_exec(["sh", "-c", "apt-get update -qq && apt-get install -qqy --no-install-recommends "
                    + " ".join(TEST_APT_PACKAGES)])
        .with_env_variable("FLEETGATE_SELF_TEST_RUN", run_stamp)
        .with_exec(["fleetgate", "self-test", "--source", SRC])
    )


# ---------------------------------------------------------------- publish-and-deploy


def publish_and_deploy_options() -> tuple[Option, ...]:
    """deploy-production's settings, then promote's that it lacks (the registry ones)."""
    merged = {o.name: o for o in (*options_for("deploy-production"), *options_for("promote"))}
    return tuple(merged.values())


def validated(verb: str, params: dict[str, Any], config_text: str) -> Settings:
    """`resolve` for `verb` as the runner will do it, raising the CLI's usage error (exit 2)."""
    try:
        with config_file(config_text) as path:
            config, where = load_config(path)
            return resolve(verb, params, {}, config, where)
    except UsageError as exc:
        raise VerbFailed(verb, exc.message, exc.exit_code) from None


async def publish_and_deploy_impl(fleetgate: Any, values: dict[str, Any]) -> str:
    source: dagger.Directory = values["source"]
    config_text = await read_config(source)
    deploy = await verb_params("deploy-production", values)
    promote = await verb_params("promote", values)
    # Every setting of both verbs is validated before anything is built, pushed or contacted.
    validated("deploy-production", deploy, config_text)
    settings = validated("promote", promote, config_text)
    if values.get("registry_password") is None:
        raise VerbFailed("publish", "--registry-password is required to publish the image", ExitCode.USAGE)
    refs: str = await fleetgate.publish(
        source=source, sha=settings.sha, image=settings.image, registry_password=values["registry_password"],
        registry_username=settings.registry_username, tag_template=settings.tag_template)
    tests: str = await fleetgate.self_test(source=source)
    deployed = await run_verb("deploy-production", deploy, config_text)
    promoted = await run_verb("promote", promote, config_text)
    last_test_line = tests.strip().splitlines()[-1:]
    return redact_json({"ok": True, "published": refs.splitlines(), "self_test": last_test_line,
                        "deploy": deployed, "promote": promoted})


BuildSource = Annotated[dagger.Directory, DefaultPath("/"), Ignore(list(BUILD_IGNORE)), Doc(FULL_SOURCE_DOC)]


@object_type
class Fleetgate:
    """Gated, canaried, verified production deploys for a multi-tenant fleet."""

    @function
    def build(
        self,
        source: BuildSource,
        sha: Annotated[str, Doc("Full 40-hex commit SHA being built; passed as build arg GIT_SHA.")],
        dockerfile: Annotated[str, Doc("Dockerfile path inside --source.")] = "Dockerfile",
    ) -> dagger.Container:
        """Build the image from the Dockerfile in --source with build arg GIT_SHA.

        Fails with `(exit 2)` on a malformed SHA, before anything is built."""
        git_sha = dagger.BuildArg(name="GIT_SHA", value=checked_sha(sha, "build"))
        return source.docker_build(dockerfile=dockerfile, build_args=[git_sha])

    @never_cached
    async def publish(
        self,
        source: BuildSource,
        sha: Annotated[str, Doc("Full 40-hex commit SHA to build and publish.")],
        image: Annotated[str, Doc("Image repository without tag, e.g. registry.example.com/org/app. "
                                  "CLI: --image.")],
        registry_password: Annotated[dagger.Secret, Doc("Registry password or token (env://NAME). "
                                                        "CLI: --registry-password.")],
        registry_username: Annotated[str, Doc("Registry user. CLI: --registry-username.")] = "",
        tag_template: Annotated[str, Doc("Deploy tag for a SHA ({sha}, {short_sha}). CLI: --tag-template.")]
        = "staging-{short_sha}",
    ) -> str:
        """Build and push the image as <image>:staging-<sha7> and <image>:<sha>; returns the refs with
        digests, one per line.

        Fails with `(exit 2)` on a malformed SHA, image or tag template, before anything is built; a failed
        build or push fails the call (CLI exit 1)."""
        sha = checked_sha(sha, "publish")
        image = checked_image(image, "publish")
        tags = publish_tags(sha, tag_template, "publish")
        built: dagger.Container = self.build(source=source, sha=sha)
        container = built.with_registry_auth(image, registry_username, registry_password)
        return "\n".join([await container.publish(f"{image}:{tag}") for tag in tags])

    @never_cached
    async def self_test(self, source: BuildSource) -> str:
        """The project's tests (python -m pytest -q) and lint-workflows, in the pinned Python image:
        reproduce a red CI run with `dagger call self-test`. Never cached. A failing command fails the call
        with its exit code (CLI: `fleetgate self-test`)."""
        return await self_test_container(source, f"{time.time_ns()}").stdout()

    @function
    async def lint_workflows(
        self,
        source: Annotated[dagger.Directory, DefaultPath("/"),
                          Ignore(["*", "!.gitea", "!.github", "!fleetgate.toml", "!pyproject.toml",
                                  "!README.md", "!pipelines"]),
                          Doc("Project folder holding the workflow folders and the linter.")],
        dirs: Annotated[list[str] | None,
                        Doc("Workflow folders inside --source (default: .gitea/workflows).")] = None,
        format: Annotated[str, Doc("Output format: human, json, sarif, github.")] = "human",
        gitea_version: Annotated[str, Doc("Target Gitea version (decides G8).")] = "1.22",
        allow_empty: Annotated[bool, Doc("A folder with no workflow files is not an error.")] = False,
    ) -> str:
        """Lint Gitea/GitHub Actions workflow files; returns the findings. Same as
        `fleetgate lint-workflows`: errors fail the call with the CLI's exit code (1 findings, 2 usage)."""
        argv = ["fleetgate", "lint-workflows", *(dirs or []), "--format", format,
                "--gitea-version", gitea_version]
        if allow_empty:
            argv.append("--allow-empty")
        return await python_with_project(source, "").with_exec(argv).stdout()

    plan = verb_function("plan")
    wait_gates = verb_function("wait-gates")
    assert_enabled = verb_function("assert-enabled")
    rollout = verb_function("rollout")
    verify = verb_function("verify")
    deploy_production = verb_function("deploy-production")
    redeploy = verb_function("redeploy")
    promote = verb_function("promote")
    approve = verb_function("approve")

    publish_and_deploy = never_cached(
        generated_method(
            "publish_and_deploy",
            "The main job from a push: build, publish (staging-<sha7> and the SHA), self-test, "
            "deploy-production, promote; returns what each step did as JSON. Settings as for "
            "deploy-production and promote. A failing step stops the chain; its line names it. "
            + exit_doc(VERB_EXIT_CODES["deploy-production"]),
            publish_and_deploy_options(),
            (source_arg(BUILD_IGNORE, FULL_SOURCE_DOC),),
            publish_and_deploy_impl,
        )
    )
