"""The container graphs build, publish and self-test construct, read from the SDK's lazy query builder.

dagger-io builds a chain of selections and sends nothing until a leaf is awaited; here the leaf's
`Context.execute` is replaced by a recorder, so every assertion is about the exact query the engine
would receive (images, mounts, exec args, build args, secrets) — no engine involved.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from dagger import Container, dag
from dagger.client._core import Context, Field
from dagger.client.base import Type

from ci.errors import VerbFailed
from ci.main import PIP_CACHE, PYTHON_IMAGE, TEST_APT_PACKAGES, Fleetgate
from pipelines.selftest import LINT_COMMAND, TEST_COMMAND

SHA = "0123456789abcdef0123456789abcdef01234567"
PASSWORD = "registry-password-value-1234"


@pytest.fixture
def executed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Context]]:
    """Every query a leaf would send, answered like the engine would (publish: a ref with a digest)."""
    calls: list[Context] = []

    async def record(self: Context, return_type: Any = None) -> Any:
        calls.append(self)
        last = self.selections[-1]
        if last.name == "publish":
            return f"{last.args['address']}@sha256:{'ab' * 32}"
        return "ok\n"

    monkeypatch.setattr(Context, "execute", record)
    yield calls


def chain(selections: Any) -> list[tuple[str, str]]:
    return [(f.type_name, f.name) for f in selections]


def args_of(selections: Any, name: str) -> list[dict[str, Any]]:
    return [f.args for f in selections if f.name == name]


def source() -> Any:
    return dag.host().directory("/project")


def contains_text(value: Any, text: str, skip: object = None) -> bool:
    """Whether `text` appears anywhere in a query's arguments, nested objects (but `skip`) included."""
    if value is skip:
        return False
    if isinstance(value, str):
        return text in value
    if isinstance(value, Type):
        return any(contains_text(f.args, text, skip) for f in value._ctx.selections)
    if isinstance(value, dict):
        return any(contains_text(v, text, skip) for v in value.values())
    if isinstance(value, list | tuple):
        return any(contains_text(v, text, skip) for v in value)
    if isinstance(value, Field):
        return contains_text(value.args, text, skip)
    return False


def test_build_is_a_dockerfile_build_of_the_source_with_git_sha() -> None:
    src = source()
    container = Fleetgate().build(source=src, sha=SHA.upper())
    assert isinstance(container, Container)
    selections = container._ctx.selections
    assert chain(selections) == [("Query", "host"), ("Host", "directory"), ("Directory", "dockerBuild")]
    assert selections[1].args == {"path": "/project"}
    build = selections[2].args
    assert build["buildArgs"] == [{"name": "GIT_SHA", "value": SHA}]  # lower-cased, validated
    assert "dockerfile" not in build  # the default, Dockerfile


def test_build_refuses_a_short_sha_before_building() -> None:
    with pytest.raises(VerbFailed) as raised:
        Fleetgate().build(source=source(), sha="0123456")
    assert raised.value.exit_code == 2 and str(raised.value).startswith("fleetgate build: --sha: ")


def test_publish_pushes_the_deploy_tag_and_the_sha_with_the_registry_secret(executed: list[Context]) -> None:
    secret = dag.set_secret("registry-password", PASSWORD)

    async def call() -> str:
        refs: str = await Fleetgate().publish(
            source=source(),
            sha=SHA,
            image="registry.example.com:5000/org/app",
            registry_password=secret,
            registry_username="deployer",
        )
        return refs

    refs = anyio.run(call)
    image = "registry.example.com:5000/org/app"
    assert refs.splitlines() == [f"{image}:staging-0123456@sha256:{'ab' * 32}", f"{image}:{SHA}@sha256:{'ab' * 32}"]
    assert len(executed) == 2
    for ctx, tag in zip(executed, ("staging-0123456", SHA), strict=True):
        selections = ctx.selections
        assert chain(selections) == [
            ("Query", "host"),
            ("Host", "directory"),
            ("Directory", "dockerBuild"),
            ("Container", "withRegistryAuth"),
            ("Container", "publish"),
        ]
        auth = selections[3].args
        assert auth["address"] == image and auth["username"] == "deployer"
        assert auth["secret"] is secret  # the Dagger secret itself, never its plaintext
        assert selections[4].args["address"] == f"{image}:{tag}"
        # The plaintext is only in the test's own setSecret; nothing fleetgate added carries it.
        assert contains_text(secret, PASSWORD)
        assert not any(contains_text(f.args, PASSWORD, skip=secret) for f in selections)


def test_publish_honours_the_tag_template() -> None:
    async def call(executed: list[Context]) -> None:
        await Fleetgate().publish(
            source=source(),
            sha=SHA,
            image="r.example/app",
            registry_password=dag.set_secret("p", PASSWORD),
            tag_template="rel-{sha}",
        )

    # With a template that is the SHA itself, the image is pushed once.
    calls: list[Context] = []

    async def record(self: Context, return_type: Any = None) -> Any:
        calls.append(self)
        return "r.example/app:x@sha256:00"

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Context, "execute", record)
        anyio.run(call, calls)
    assert [c.selections[-1].args["address"] for c in calls] == [f"r.example/app:rel-{SHA}", f"r.example/app:{SHA}"]


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"sha": "abc"}, "--sha"),
        ({"image": "r.example/app:latest"}, "--image"),
        ({"image": "r.example/app@sha256:00"}, "--image"),
        # The settings table's image grammar (registry.parse_image), the one promote uses:
        ({"image": "org/app"}, "--image"),
        ({"image": "r.example/Org/App"}, "--image"),
        ({"image": "https://r.example"}, "--image"),
        ({"tag_template": "{nope}"}, "--tag-template"),
        ({"tag_template": "{sha.x}"}, "--tag-template"),
    ],
)
def test_publish_refuses_bad_input_before_building_or_pushing(
    executed: list[Context], kwargs: dict[str, str], flag: str
) -> None:
    values: dict[str, Any] = {
        "source": source(),
        "sha": SHA,
        "image": "r.example/app",
        "registry_password": dag.set_secret("p", PASSWORD),
        **kwargs,
    }

    async def call() -> None:
        await Fleetgate().publish(**values)

    with pytest.raises(VerbFailed) as raised:
        anyio.run(call)
    assert raised.value.exit_code == 2 and f"fleetgate publish: {flag}: " in str(raised.value)
    assert executed == []


def test_self_test_runs_the_projects_tests_in_the_pinned_image_never_from_cache(executed: list[Context]) -> None:
    src = source()

    async def call() -> str:
        out: str = await Fleetgate().self_test(source=src)
        return out

    anyio.run(call)
    anyio.run(call)
    assert len(executed) == 2
    selections = executed[0].selections
    assert chain(selections)[:3] == [("Query", "container"), ("Container", "from"), ("Container", "withEnvVariable")]
    assert chain(selections)[-1] == ("Container", "stdout")
    # Pinned: an exact patch version and distribution, or a digest; never a floating tag.
    image = selections[1].args["address"]
    assert image == PYTHON_IMAGE and (re.search(r":\d+\.\d+\.\d+-slim-\w+$", image) or "@sha256:" in image)
    cache = args_of(selections, "withMountedCache")
    assert len(cache) == 1 and cache[0]["path"] == "/root/.cache/pip"
    assert chain(cache[0]["cache"]._ctx.selections) == [("Query", "cacheVolume")]
    assert cache[0]["cache"]._ctx.selections[0].args == {"key": PIP_CACHE}
    mounted = args_of(selections, "withDirectory")
    assert len(mounted) == 1 and mounted[0]["path"] == "/src" and mounted[0]["source"] is src
    assert args_of(selections, "withWorkdir") == [{"path": "/src"}]
    execs = [a["args"] for a in args_of(selections, "withExec")]
    assert execs[0] == ["pip", "install", ".[test]"]
    assert all(pkg in execs[1][-1] for pkg in TEST_APT_PACKAGES)
    assert execs[-1] == ["fleetgate", "self-test", "--source", "/src"]
    # The exec right before `stdout` is the test run, and a per-call variable precedes it: two calls, two graphs.
    names = chain(selections)
    assert names[-2] == ("Container", "withExec") and names[-3] == ("Container", "withEnvVariable")
    stamps = [ctx.selections[-3].args for ctx in executed]
    assert stamps[0]["name"] == stamps[1]["name"] == "FLEETGATE_SELF_TEST_RUN"
    assert stamps[0]["value"] != stamps[1]["value"]


def test_self_test_command_is_the_readme_test_command_and_lint_workflows() -> None:
    assert TEST_COMMAND == ("-m", "pytest", "-q")
    assert LINT_COMMAND[-1] == "lint-workflows"


def test_lint_workflows_runs_the_cli_linter_on_the_source(executed: list[Context]) -> None:
    async def call() -> str:
        out: str = await Fleetgate().lint_workflows(source=source(), dirs=[".gitea/workflows"], format="json")
        return out

    anyio.run(call)
    selections = executed[0].selections
    execs = [a["args"] for a in args_of(selections, "withExec")]
    assert execs == [
        ["pip", "install", "."],
        ["fleetgate", "lint-workflows", ".gitea/workflows", "--format", "json", "--gitea-version", "1.22"],
    ]


def test_run_self_test_runs_every_command_and_returns_the_first_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    from pipelines.selftest import commands, run_self_test

    failing = [sys.executable, "-c", "raise SystemExit(3)"]
    marker = [sys.executable, "-c", "open('second-ran', 'w').close()"]
    assert run_self_test(tmp_path, run=[failing, marker]) == 3
    assert (tmp_path / "second-ran").exists()  # a failing test run does not hide the lint result
    assert "exited 3" in capsys.readouterr().err
    assert run_self_test(tmp_path, run=[marker]) == 0
    assert run_self_test(tmp_path / "missing") == 2
    assert [c[1:] for c in commands()] == [list(TEST_COMMAND), list(LINT_COMMAND)]
