"""The container graphs build, publish and self-test construct, as the engine would receive them.

The SDK connects through its public session variables to a stand-in engine on 127.0.0.1
(tests/fake_engine.py) that records every query and answers like the engine would (publish: a ref with
a digest), so every assertion is about the exact queries sent (images, mounts, exec args, build args,
secrets) — no engine, and no SDK internals imported or patched.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import dagger
import pytest
from dagger import dag
from fake_engine import TOKEN, Recorder, fake_engine

from ci.errors import VerbFailed
from ci.main import PIP_CACHE, PYTHON_IMAGE, TEST_APT_PACKAGES, Fleetgate
from pipelines.selftest import LINT_COMMAND, TEST_COMMAND

SHA = "0123456789abcdef0123456789abcdef01234567"
PASSWORD = "registry-password-value-1234"
Step = dict[str, Any]


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    with fake_engine() as (recorder, port):
        monkeypatch.setenv("DAGGER_SESSION_PORT", str(port))
        monkeypatch.setenv("DAGGER_SESSION_TOKEN", TOKEN)
        yield recorder


def connected(call: Callable[[], Awaitable[Any]]) -> Any:
    """`call()` with the SDK connected (to the stand-in engine of the `engine` fixture)."""

    async def go() -> Any:
        async with dagger.connection():
            return await call()

    return anyio.run(go)


def chain(selections: list[Step]) -> list[tuple[str, str]]:
    return [(s["type"], s["field"]) for s in selections]


def args_of(selections: list[Step], name: str) -> list[dict[str, Any]]:
    return [s["args"] for s in selections if s["field"] == name]


def source() -> Any:
    return dag.host().directory("/project")


def contains_text(value: Any, text: str, skip: object = None) -> bool:
    """Whether `text` appears anywhere in a query's arguments, nested objects (but `skip`) included."""
    if value == skip:
        return False
    if isinstance(value, str):
        return text in value
    if isinstance(value, dict):
        return any(contains_text(v, text, skip) for v in value.values())
    if isinstance(value, list | tuple):
        return any(contains_text(v, text, skip) for v in value)
    return False


def test_build_is_a_dockerfile_build_of_the_source_with_git_sha(engine: Recorder) -> None:
    async def call() -> str:
        container = Fleetgate().build(source=source(), sha=SHA.upper())
        assert isinstance(container, dagger.Container)
        return str(await container.id())

    selections = engine.chain_of(connected(call))
    assert chain(selections) == [("Query", "host"), ("Host", "directory"), ("Directory", "dockerBuild")]
    assert selections[1]["args"] == {"path": "/project"}
    build = selections[2]["args"]
    assert build["buildArgs"] == [{"name": "GIT_SHA", "value": SHA}]  # lower-cased, validated
    assert "dockerfile" not in build  # the default, Dockerfile


def test_build_refuses_a_short_sha_before_building() -> None:
    with pytest.raises(VerbFailed) as raised:
        Fleetgate().build(source=source(), sha="0123456")
    assert raised.value.exit_code == 2 and str(raised.value).startswith("fleetgate build: --sha: ")


def test_publish_pushes_the_deploy_tag_and_the_sha_with_the_registry_secret(engine: Recorder) -> None:
    image = "registry.example.com:5000/org/app"

    async def call() -> str:
        refs: str = await Fleetgate().publish(
            source=source(),
            sha=SHA,
            image=image,
            registry_password=dag.set_secret("registry-password", PASSWORD),
            registry_username="deployer",
        )
        return refs

    refs = connected(call)
    assert refs.splitlines() == [f"{image}:staging-0123456@sha256:{'ab' * 32}", f"{image}:{SHA}@sha256:{'ab' * 32}"]
    executed = engine.executed()
    assert len(executed) == 2
    secret = [{"type": "Query", "field": "setSecret", "args": {"name": "registry-password", "plaintext": PASSWORD}}]
    for selections, tag in zip(executed, ("staging-0123456", SHA), strict=True):
        assert chain(selections) == [
            ("Query", "host"),
            ("Host", "directory"),
            ("Directory", "dockerBuild"),
            ("Container", "withRegistryAuth"),
            ("Container", "publish"),
        ]
        auth = selections[3]["args"]
        assert auth["address"] == image and auth["username"] == "deployer"
        assert auth["secret"] == secret  # the Dagger secret itself, never its plaintext
        assert selections[4]["args"]["address"] == f"{image}:{tag}"
        # The plaintext is only in the test's own setSecret; nothing fleetgate added carries it.
        assert not any(contains_text(s["args"], PASSWORD, skip=secret) for s in selections)


def test_publish_honours_the_tag_template(engine: Recorder) -> None:
    async def call() -> None:
        await Fleetgate().publish(
            source=source(),
            sha=SHA,
            image="r.example/app",
            registry_password=dag.set_secret("p", PASSWORD),
            tag_template="rel-{sha}",
        )

    connected(call)
    assert [c[-1]["args"]["address"] for c in engine.executed()] == [f"r.example/app:rel-{SHA}", f"r.example/app:{SHA}"]


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
    engine: Recorder, kwargs: dict[str, str], flag: str
) -> None:
    async def call() -> None:
        values: dict[str, Any] = {
            "source": source(),
            "sha": SHA,
            "image": "r.example/app",
            "registry_password": dag.set_secret("p", PASSWORD),
            **kwargs,
        }
        await Fleetgate().publish(**values)

    with pytest.raises(VerbFailed) as raised:
        connected(call)
    assert raised.value.exit_code == 2 and f"fleetgate publish: {flag}: " in str(raised.value)
    assert engine.executed() == []


def test_self_test_runs_the_projects_tests_in_the_pinned_image_never_from_cache(engine: Recorder) -> None:
    async def call() -> str:
        out: str = await Fleetgate().self_test(source=source())
        return out

    connected(call)
    connected(call)
    executed = engine.executed()
    assert len(executed) == 2
    selections = executed[0]
    assert chain(selections)[:3] == [("Query", "container"), ("Container", "from"), ("Container", "withEnvVariable")]
    assert chain(selections)[-1] == ("Container", "stdout")
    # Pinned: an exact patch version and distribution, or a digest; never a floating tag.
    image = selections[1]["args"]["address"]
    assert image == PYTHON_IMAGE and (re.search(r":\d+\.\d+\.\d+-slim-\w+$", image) or "@sha256:" in image)
    cache = args_of(selections, "withMountedCache")
    assert len(cache) == 1 and cache[0]["path"] == "/root/.cache/pip"
    assert cache[0]["cache"] == [{"type": "Query", "field": "cacheVolume", "args": {"key": PIP_CACHE}}]
    mounted = args_of(selections, "withDirectory")
    assert len(mounted) == 1 and mounted[0]["path"] == "/src"
    assert chain(mounted[0]["source"]) == [("Query", "host"), ("Host", "directory")]
    assert mounted[0]["source"][1]["args"] == {"path": "/project"}
    assert args_of(selections, "withWorkdir") == [{"path": "/src"}]
    execs = [a["args"] for a in args_of(selections, "withExec")]
    assert execs[0] == ["pip", "install", ".[test]"]
    assert all(pkg in execs[1][-1] for pkg in TEST_APT_PACKAGES)
    assert execs[-1] == ["fleetgate", "self-test", "--source", "/src"]
    # The exec right before `stdout` is the test run, and a per-call variable precedes it: two calls, two graphs.
    names = chain(selections)
    assert names[-2] == ("Container", "withExec") and names[-3] == ("Container", "withEnvVariable")
    stamps = [s[-3]["args"] for s in executed]
    assert stamps[0]["name"] == stamps[1]["name"] == "FLEETGATE_SELF_TEST_RUN"
    assert stamps[0]["value"] != stamps[1]["value"]


def test_self_test_command_is_the_readme_test_command_and_lint_workflows() -> None:
    assert TEST_COMMAND == ("-m", "pytest", "-q")
    assert LINT_COMMAND[-1] == "lint-workflows"


def test_lint_workflows_runs_the_cli_linter_on_the_source(engine: Recorder) -> None:
    async def call() -> str:
        out: str = await Fleetgate().lint_workflows(source=source(), dirs=[".gitea/workflows"], format="json")
        return out

    connected(call)
    execs = [a["args"] for a in args_of(engine.executed()[0], "withExec")]
    assert execs == [
        ["pip", "install", "."],
        ["fleetgate", "lint-workflows", ".gitea/workflows", "--format", "json", "--gitea-version", "1.22"],
    ]


def test_run_self_test_runs_every_command_and_returns_the_first_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    from pipelines.selftest import commands, run_self_test

    (tmp_path / "pyproject.toml").write_text('[project]\nname = "fleetgate"\n', encoding="utf-8")
    (tmp_path / "tests").mkdir()  # a checkout, as far as self-test looks
    failing = [sys.executable, "-c", "raise SystemExit(3)"]
    marker = [sys.executable, "-c", "open('second-ran', 'w').close()"]
    assert run_self_test(tmp_path, run=[failing, marker]) == 1  # the runner's 3 is fleetgate's "failed"
    assert (tmp_path / "second-ran").exists()  # a failing test run does not hide the lint result
    assert "exited 3" in capsys.readouterr().err
    assert run_self_test(tmp_path, run=[marker]) == 0
    assert run_self_test(tmp_path / "missing") == 2
    assert [c[1:] for c in commands()] == [list(TEST_COMMAND), list(LINT_COMMAND)]
