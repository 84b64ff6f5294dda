"""The `Fleetgate` Dagger object: the CLI's verbs as functions, plus build, publish and self-test.

The verb functions (plan, wait-gates, …, promote, publish-and-deploy) are in `ci/_verbs.py`, generated from
the verb table (`pipelines/verbs.py`) and the settings table, so they take exactly the settings the CLI
verb takes; they call the same `pipelines.runner.run_with_settings` the CLI calls (ci/run.py), in the
module's own runtime container. Container work (build, publish, self-test, lint-workflows) is Dagger API
calls here; their query graphs are asserted offline in tests/test_dagger_graph.py.
"""

from __future__ import annotations

import time
from typing import Annotated

import dagger
from dagger import DefaultPath, Doc, Ignore, dag, function, object_type

from ci._verbs import VerbFunctions
from ci.arguments import BuildSource, never_cached
from ci.errors import VerbFailed
from pipelines.errors import UsageError
from pipelines.lint.cli import DEFAULT_GITEA_VERSION
from pipelines.lint.cli import FORMATS as LINT_FORMATS
from pipelines.settings import TAG_TEMPLATE_FIELDS, check_value

# Pinned by exact tag: the interpreter the project is developed and tested on (3.11.7), on Debian
# bookworm, whose apt has the `docker-registry` the promote tests start.
PYTHON_IMAGE = "docker.io/library/python:3.11.7-slim-bookworm"
PIP_CACHE = "fleetgate-pip-python3.11"
SRC = "/src"
# Test-time system packages: the promote tests run Debian's registry and need openssl for its tokens;
# the analysis tests run a real Prometheus; the report test opens its HTML page in chromium.
TEST_APT_PACKAGES = ("docker-registry", "openssl", "prometheus", "chromium")

# ---------------------------------------------------------------- container graphs


def checked(verb: str, name: str, value: str) -> str:
    """A setting's value as the settings table checks it (one grammar for build, publish and promote)."""
    try:
        checked_value: str = check_value(name, value)
    except UsageError as exc:
        raise VerbFailed(verb, exc.message, exc.exit_code) from None
    return checked_value


def publish_tags(sha: str, tag_template: str) -> list[str]:
    """The tags a build is published under: the deploy tag (`staging-<sha7>` by default) and the full SHA."""
    deploy_tag = tag_template.format(**dict(zip(TAG_TEMPLATE_FIELDS, (sha, sha[:7]), strict=True)))
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


@object_type
class Fleetgate(VerbFunctions):
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
        git_sha = dagger.BuildArg(name="GIT_SHA", value=checked("build", "sha", sha))
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
        sha = checked("publish", "sha", sha)
        image = checked("publish", "image", image)
        tags = publish_tags(sha, checked("publish", "tag_template", tag_template))
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
        format: Annotated[str, Doc(f"Output format: {', '.join(LINT_FORMATS)}.")] = "human",
        gitea_version: Annotated[str, Doc("Target Gitea version (decides G8).")] = DEFAULT_GITEA_VERSION,
        allow_empty: Annotated[bool, Doc("A folder with no workflow files is not an error.")] = False,
    ) -> str:
        """Lint Gitea/GitHub Actions workflow files; returns the findings. Same as
        `fleetgate lint-workflows`: errors fail the call with the CLI's exit code (1 findings, 2 usage)."""
        argv = ["fleetgate", "lint-workflows", *(dirs or []), "--format", format,
                "--gitea-version", gitea_version]
        if allow_empty:
            argv.append("--allow-empty")
        return await python_with_project(source, "").with_exec(argv).stdout()
