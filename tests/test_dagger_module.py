"""The Dagger module, proven without an engine.

Registration runs the SDK's own code path (`dagger.mod.cli.load_module` through the `dagger.mod`
entry point declared in pyproject.toml, then `Module.register`) in a fresh interpreter with the
environment the Python runtime sets. The SDK connects, through its public session variables, to a
stand-in engine on 127.0.0.1 (tests/fake_engine.py) that records every query; the module's
registration is read back from them as data. No SDK internals are imported or patched.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
import pytest

from pipelines.cli import cli
from pipelines.cli import run_verb as cli_run_verb
from pipelines.settings import Kind, Option, options_for
from pipelines.verbs import VERBS

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

# The documented function names (README "Run it with Dagger" lists the same set; test_dagger_readme checks).
EXPECTED_FUNCTIONS = {
    "build",
    "publish",
    "self-test",
    "lint-workflows",
    "plan",
    "wait-gates",
    "assert-enabled",
    "rollout",
    "verify",
    "deploy-production",
    "redeploy",
    "promote",
    "approve",
    "status",
    "lease",
    "report",
    "publish-and-deploy",
}

HARNESS = r"""
import json, os, sys
import anyio
import dagger
from dagger.mod.cli import get_entry_point, load_module
from fake_engine import TOKEN, fake_engine

with fake_engine() as (recorder, port):
    os.environ["DAGGER_SESSION_PORT"] = str(port)
    os.environ["DAGGER_SESSION_TOKEN"] = TOKEN

    async def register():
        async with dagger.connection():
            mod = load_module()
            await mod.register()

    anyio.run(register)
module_id = json.loads(open(os.environ["DAGGER_MODULE_FILE"]).read())
print(json.dumps({"entry_point": get_entry_point().value, "engine_calls": recorder.queries,
                  "query": recorder.expand(module_id)}))
"""


def kebab(python_name: str) -> str:
    """What `dagger call` shows: the engine camelCases the name, the CLI kebab-cases that."""
    head, *rest = python_name.split("_")
    camel = head + "".join(p[:1].upper() + p[1:] for p in rest)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1-\2", camel).lower()


@dataclass
class Arg:
    name: str
    kind: str  # STRING_KIND, LIST_KIND of ..., OBJECT Secret/Directory, ...
    optional: bool
    doc: str
    default_path: str | None
    ignore: list[str] | None
    default_value: str | None


@dataclass
class Func:
    name: str
    doc: str
    cache: str | None
    returns: str
    args: dict[str, Arg] = field(default_factory=dict)


def _typedef(selections: list[dict[str, Any]]) -> tuple[str, bool]:
    kind, optional = "?", False
    for s in selections:
        if s["field"] == "withOptional":
            optional = bool(s["args"].get("optional", True))
        elif s["field"] == "withKind":
            kind = s["args"]["kind"]
        elif s["field"] == "withListOf":
            kind = f"LIST_OF {_typedef(s['args']['elementType'])[0]}"
        elif s["field"] == "withObject":
            kind = f"OBJECT {s['args']['name']}"
    return kind, optional


def _function(selections: list[dict[str, Any]]) -> Func:
    first = selections[0]
    assert (first["type"], first["field"]) == ("Query", "function")
    fn = Func(
        name=kebab(first["args"]["name"]),
        doc="",
        cache=None,
        returns=_typedef(first["args"]["returnType"])[0],
    )
    for s in selections[1:]:
        a = s["args"]
        if s["field"] == "withDescription":
            fn.doc = a["description"]
        elif s["field"] == "withCachePolicy":
            fn.cache = a["policy"]
        elif s["field"] == "withArg":
            kind, optional = _typedef(a["typeDef"])
            fn.args[kebab(a["name"])] = Arg(
                kebab(a["name"]),
                kind,
                optional,
                a.get("description") or "",
                a.get("defaultPath"),
                a.get("ignore"),
                a.get("defaultValue"),
            )
    return fn


@dataclass
class Registration:
    entry_point: str
    engine_calls: int
    module_doc: str
    objects: dict[str, str]
    functions: dict[str, Func]


@functools.cache
def registration() -> Registration:
    """Run the SDK registration once per test process (it costs an interpreter start and a dagger import)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        # What `uv sync` leaves behind for the entry point: a dist-info whose entry_points.txt is built from
        # pyproject.toml (not hard-coded here), with the source on the path as an editable install puts it.
        dist = Path(tmp, "fleetgate-0.1.0.dist-info")
        dist.mkdir()
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fleetgate\nVersion: 0.1.0\n")
        groups = PYPROJECT["project"]["entry-points"]
        (dist / "entry_points.txt").write_text(
            "".join(
                f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items())
                for group, eps in groups.items()
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("DAGGER_")}
        env.update(
            {
                # What the 0.21 Python runtime sets for a module named "fleetgate" (WithSource).
                "DAGGER_MODULE": "fleetgate",
                "DAGGER_MAIN_OBJECT": "Fleetgate",
                "DAGGER_DEFAULT_PYTHON_PACKAGE": "fleetgate",
                "DAGGER_MODULE_FILE": str(Path(tmp, "module.json")),
                "PYTHONPATH": os.pathsep.join([tmp, str(ROOT), str(ROOT / "tests")]),
            }
        )
        proc = subprocess.run(
            [sys.executable, "-c", HARNESS], cwd=tmp, env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    query = data["query"]
    assert (query[0]["type"], query[0]["field"]) == ("Query", "module")
    module_doc, objects, functions = "", {}, {}
    for s in query[1:]:
        if s["field"] == "withDescription":
            module_doc = s["args"]["description"]
        elif s["field"] == "withObject":
            for t in s["args"]["object"]:
                if t["field"] == "withObject":
                    objects[t["args"]["name"]] = t["args"].get("description", "")
                elif t["field"] == "withFunction":
                    fn = _function(t["args"]["function"])
                    functions[fn.name] = fn
    return Registration(data["entry_point"], data["engine_calls"], module_doc, objects, functions)


def expected_kind(o: Option) -> str:
    base = {
        Kind.SECRET: "OBJECT Secret",
        Kind.LIST: "LIST_OF STRING_KIND",
        Kind.BOOL: "BOOLEAN_KIND",
        Kind.INT: "INTEGER_KIND",
        Kind.SECONDS: "FLOAT_KIND",
        Kind.NUMBER: "FLOAT_KIND",
    }.get(o.kind, "STRING_KIND")
    return f"LIST_OF {base}" if o.multiple and o.kind is not Kind.LIST else base


def cli_option_names(verb: str) -> set[str]:
    """Long option names of `fleetgate VERB`: settings, verb extras and --sandbox/--scenario."""
    command = cli.get_command(None, verb)
    assert command is not None
    names = set()
    for p in command.params:
        long = next(o for o in p.opts if o.startswith("--"))
        names.add(long[2:])
    return names - {"config", "json", "help"}


# ---------------------------------------------------------------- registration


def test_registration_registers_every_documented_function_on_the_fleetgate_object() -> None:
    reg = registration()
    assert reg.engine_calls >= 1  # the typedefs' IDs, then the module's
    assert (
        reg.entry_point == "ci:Fleetgate" == PYPROJECT["project"]["entry-points"]["dagger.mod"]["main_object"]
    )
    assert set(reg.objects) == {"Fleetgate"}
    assert set(reg.functions) == EXPECTED_FUNCTIONS
    assert reg.module_doc.startswith("fleetgate: from green main")


def test_every_cli_verb_is_a_function_with_the_same_arguments_as_the_cli_command() -> None:
    functions = registration().functions
    for verb in VERBS:
        fn = functions[verb]
        # --sandbox and --scenario are front-door options in the CLI too; --source replaces --config.
        assert set(fn.args) == cli_option_names(verb) | {"source"}, verb
        for o in options_for(verb):
            arg = fn.args[o.flag[2:]]
            assert arg.kind == expected_kind(o), (verb, o.flag)
            assert arg.optional and arg.default_value in (None, "null"), (verb, o.flag)
            assert o.doc.split(".")[0] in arg.doc and f"CLI: {o.flag}." in arg.doc, (verb, o.flag)


def test_verb_functions_read_only_fleetgate_toml_from_the_source_directory() -> None:
    for verb in VERBS:
        source = registration().functions[verb].args["source"]
        # A default path is what makes it optional for the caller (the SDK does not mark it nullable).
        assert source.kind == "OBJECT Directory" and source.default_path == "/"
        assert source.ignore == ["*", "!fleetgate.toml"]


def test_every_function_and_argument_is_documented_and_failures_name_the_cli_exit_codes() -> None:
    for fn in registration().functions.values():
        assert len(fn.doc) > 40, fn.name
        for arg in fn.args.values():
            assert arg.doc.strip(), (fn.name, arg.name)
    for verb in [*VERBS, "publish-and-deploy"]:
        doc = " ".join(registration().functions[verb].doc.split())
        assert "(exit N)" in doc and "1 failed, fail-closed" in doc and "2 usage" in doc, verb
    deploy_doc = " ".join(registration().functions["deploy-production"].doc.split())
    assert "5 stood down" in deploy_doc and "3 disabled" in deploy_doc


def test_tokens_are_dagger_secrets() -> None:
    functions = registration().functions
    secrets = {
        name: fn.args[name].kind
        for fn in functions.values()
        for name in ("gitea-token", "cp-token", "registry-password")
        if name in fn.args
    }
    assert set(secrets) == {"gitea-token", "cp-token", "registry-password"}
    assert set(secrets.values()) == {"OBJECT Secret"}
    assert functions["publish"].args["registry-password"].optional is False


def test_functions_that_touch_the_world_are_never_cached_and_build_is() -> None:
    functions = registration().functions
    never = {name for name, fn in functions.items() if fn.cache == "Never"}
    assert never == EXPECTED_FUNCTIONS - {"build", "lint-workflows"}
    assert functions["build"].cache is None and functions["build"].returns == "OBJECT Container"


def test_container_functions_take_the_source_with_a_default_path_and_ignores() -> None:
    functions = registration().functions
    for name in ("build", "publish", "self-test", "publish-and-deploy"):
        source = functions[name].args["source"]
        assert source.default_path == "/", name
        assert source.ignore is not None and ".git" in source.ignore and ".venv" in source.ignore, name
    assert set(functions["build"].args) == {"source", "sha", "dockerfile"}
    assert set(functions["publish"].args) == {
        "source",
        "sha",
        "image",
        "registry-password",
        "registry-username",
        "tag-template",
    }
    assert set(functions["self-test"].args) == {"source"}


def test_publish_and_deploy_takes_deploy_production_and_promote_settings() -> None:
    args = set(registration().functions["publish-and-deploy"].args)
    wanted = {o.flag[2:] for o in (*options_for("deploy-production"), *options_for("promote"))}
    assert args == wanted | {"source"}


# ---------------------------------------------------------------- packaging and pins


def test_dagger_json_pins_the_engine_that_matches_the_locked_sdk() -> None:
    config = json.loads((ROOT / "dagger.json").read_text(encoding="utf-8"))
    assert config["name"] == "fleetgate" and config["sdk"]["source"] == "python" and config["source"] == "."
    pins = {
        dep
        for deps in (
            PYPROJECT["project"]["optional-dependencies"]["test"],
            PYPROJECT["project"]["optional-dependencies"]["dagger"],
            PYPROJECT["dependency-groups"]["dagger"],
        )
        for dep in deps
        if dep.startswith("dagger-io")
    }
    assert len(pins) == 1
    pinned = pins.pop().split("==")[1]
    assert config["engineVersion"] == f"v{pinned}"
    lock = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
    assert [p["version"] for p in lock["package"] if p["name"] == "dagger-io"] == [pinned]
    assert version("dagger-io") == pinned, "the tests must run the SDK version the module locks"


def test_the_runtime_gets_dagger_io_and_ci_while_the_cli_install_stays_without_it() -> None:
    # `uv sync --no-dev` (the runtime) installs default groups; pip ignores them.
    assert "dagger" in PYPROJECT["tool"]["uv"]["default-groups"]
    assert not any(d.startswith("dagger-io") for d in PYPROJECT["project"]["dependencies"])
    assert "ci*" in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    assert "/sdk" in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()


def test_the_cli_never_imports_dagger() -> None:
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom pipelines.cli import cli\n"
        "for verb in ['--help', 'plan', 'deploy-production', 'self-test', 'lint-workflows']:\n"
        "    CliRunner().invoke(cli, [verb, '--help'] if verb != '--help' else [verb])\n"
        "print(sorted(m for m in sys.modules if m == 'dagger' or m.startswith(('dagger.', 'ci'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# ---------------------------------------------------------------- the adapter runs the CLI's code


class NoConfig:
    """A source directory without fleetgate.toml (the adapter only asks whether it has one)."""

    async def exists(self, path: str) -> bool:
        return False


def cli_outcome(
    verb: str, params: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any]]:
    code = cli_run_verb(verb, {**params, "json_mode": True}, env={})
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return code, payload



GATE_ARGS: dict[str, Any] = {"repo": "acme/fleet", "gitea_url": "http://127.0.0.1:9", "required_context": ["ci"]}


def call_function(name: str, **args: Any) -> str:
    """A `Fleetgate` function run the way the engine runs it: awaited, its string result returned."""
    from ci.main import Fleetgate

    async def go() -> str:
        result: str = await getattr(Fleetgate(), name)(**args)
        return result

    return anyio.run(go)

@pytest.mark.parametrize(("scenario", "exit_code"), [("kill-switch-engaged", 3), ("tenant-on-descendant", 5)])
def test_a_failing_verb_raises_the_clis_one_line_and_exit_code(
    scenario: str, exit_code: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ci.errors import VerbFailed, exit_code_of

    ledger = str(tmp_path / "ledger.jsonl")
    code, payload = cli_outcome(
        "deploy-production", {"sandbox": True, "scenario": scenario, "ledger": ledger}, capsys
    )
    assert code == exit_code

    with pytest.raises(VerbFailed) as raised:
        call_function("deploy_production", source=NoConfig(), sandbox=True, scenario=scenario, ledger=ledger)
    line = str(raised.value)
    assert line == f"fleetgate deploy-production: {payload['error']} (exit {exit_code})"
    assert "\n" not in line and exit_code_of(line) == exit_code == raised.value.exit_code


def test_a_passing_verb_returns_the_clis_result_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:

    ledger = str(tmp_path / "ledger.jsonl")

    result = json.loads(call_function("deploy_production", source=NoConfig(), sandbox=True, ledger=ledger))
    assert result["ok"] is True and result["outcome"] == "deployed" and result["exit_code"] == 0
    assert result["changed"] and not result["stragglers"]
    assert Path(ledger).read_text(encoding="utf-8").count('"event": "done"') == 1


def test_usage_errors_match_the_cli_before_anything_is_contacted(capsys: pytest.CaptureFixture[str]) -> None:
    from ci.errors import VerbFailed

    code, payload = cli_outcome(
        "wait-gates",
        {
            "sha": "not-a-sha",
            "repo": "acme/fleet",
            "gitea_url": "http://127.0.0.1:9",
            "required_contexts": ("ci",),
        },
        capsys,
    )
    assert code == 2

    with pytest.raises(VerbFailed) as raised:
        call_function("wait_gates", source=NoConfig(), sha="not-a-sha", **GATE_ARGS)
    assert str(raised.value) == f"fleetgate wait-gates: {payload['error']} (exit 2)"


def test_settings_come_from_fleetgate_toml_in_the_source_directory(tmp_path: Path) -> None:
    from ci.errors import VerbFailed

    class WithConfig:
        async def exists(self, path: str) -> bool:
            return path == "fleetgate.toml"

        def file(self, path: str) -> WithConfig:
            return self

        async def contents(self) -> str:
            return "gate_timeout = -5\n"

    with pytest.raises(VerbFailed) as raised:
        call_function("wait_gates", source=WithConfig(), sha="a" * 40, **GATE_ARGS)
    assert raised.value.exit_code == 2 and "fleetgate.toml: gate_timeout" in str(raised.value)


# ---------------------------------------------------------------- the verb functions are source, from the table


def test_the_generated_verb_functions_are_current() -> None:
    from ci.generate import TARGET, render

    assert TARGET.read_text(encoding="utf-8") == render(), "ci/_verbs.py is stale: run python -m ci.generate"


def test_every_verb_of_the_table_is_a_plain_method_with_its_exit_codes() -> None:
    import inspect

    from ci._verbs import VerbFunctions
    from ci.errors import EXIT_MEANINGS

    for verb in VERBS.values():
        method = getattr(VerbFunctions, verb.python_name)
        source = inspect.getsource(method)
        assert f"run_function({verb.name!r}, locals())" in source
        doc = " ".join(registration().functions[verb.name].doc.split())
        for code in verb.exits:
            assert f"{int(code)} {EXIT_MEANINGS[code]}" in doc, (verb.name, code)


def test_a_verb_failure_leaves_the_sdk_as_its_one_line_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through the SDK's own `Module.call` (what runs a function), with the module's settings."""
    import ci  # noqa: F401 - sets the SDK's switch
    from ci.errors import VerbFailed
    from ci.main import Fleetgate

    module = Fleetgate.__dagger_module__  # type: ignore[attr-defined]
    assert module.log_exceptions is False

    async def failing() -> str:
        raise VerbFailed("plan", "--sha: expected a full 40-hex commit SHA, got 'HEAD'", 2)

    with pytest.raises(Exception) as raised:
        anyio.run(module.call, failing)
    assert str(raised.value) == "fleetgate plan: --sha: expected a full 40-hex commit SHA, got 'HEAD' (exit 2)"
    assert "Traceback" not in caplog.text
