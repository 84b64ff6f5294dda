"""Bad input through the real CLI entry point: exit 2, one line, and nothing contacted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from loopback import ConnectionRecorder, connection_recorder, run_main

SHA = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "tok-cli-secret-123456"
CP_FLAGS = ("--cp-url", "--prod-cp-url")  # dropped: the guard then compares with the production default


@pytest.fixture
def rec() -> Iterator[ConnectionRecorder]:
    with connection_recorder() as recorder:
        yield recorder


@pytest.fixture(autouse=True)
def in_empty_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray fleetgate.toml


def fleetgate(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str,
              env: dict[str, str] | None = None) -> tuple[int, str, str]:
    return run_main(monkeypatch, capsys, *args, env=env)


def plan_args(rec: ConnectionRecorder, *, drop: tuple[str, ...] = ()) -> list[str]:
    pairs = {
        "--sha": SHA, "--repo": "acme/fleet", "--gitea-url": rec.url,
        "--required-context": "CI / test (push)",
        "--cp-url": rec.url, "--prod-cp-url": rec.url, "--tenant-url-template": rec.url + "/t/{slug}",
        "--gitea-token": TOKEN, "--cp-token": TOKEN,
    }
    return [x for flag, value in pairs.items() if flag not in drop for x in (flag, value)]


CASES: list[tuple[str, tuple[str, ...], tuple[str, ...], dict[str, str], str, str]] = [
    # id, extra args, dropped flags, env, fleetgate.toml, needle
    ("short sha", ("--sha", "0123456"), ("--sha",), {}, "", "40-hex"),
    ("non-hex sha", ("--sha", "z" * 40), ("--sha",), {}, "", "40-hex"),
    ("missing sha", (), ("--sha",), {}, "", "--sha (or GITHUB_SHA) is required"),
    ("bad repo", ("--repo", "acme"), ("--repo",), {}, "", "owner/name"),
    ("userinfo url", ("--gitea-url", "https://bot:pw@git.example.com"), ("--gitea-url",), {}, "",
     "credentials"),
    ("scheme", ("--gitea-url", "ftp://git.example.com"), ("--gitea-url",), {}, "", "http(s) URL"),
    ("batch 0", ("--batch-size", "0"), (), {}, "", "--batch-size: must be ≥ 1"),
    ("soak < 0", ("--soak-seconds", "-1"), (), {}, "", "--soak-seconds: must be ≥ 0"),
    ("cp timeout", ("--cp-timeout", "30"), (), {}, "", "--cp-timeout: must be ≥ 120"),
    ("env int", (), (), {"PROD_AUTO_DEPLOY_BATCH_SIZE": "many"}, "",
     "PROD_AUTO_DEPLOY_BATCH_SIZE: expected an integer"),
    ("no contexts", (), ("--required-context",), {}, "", "no required status contexts"),
    ("empty env contexts", (), ("--required-context",), {"PROD_AUTO_DEPLOY_REQUIRED_CONTEXTS": " , "}, "",
     "no required status contexts"),
    ("toml unknown", (), (), {}, "batch_sise = 2\n", "unknown setting 'batch_sise'"),
    ("toml secret", (), (), {}, "cp_token = 'abc'\n", "cp_token is a secret"),
    ("toml bad value", (), (), {}, "on_failure = 'shrug'\n", "fleetgate.toml: on_failure"),
    ("tag template", ("--tag-template", "v{version}"), (), {}, "", "--tag-template"),
    ("tenant template", ("--tenant-url-template", "http://127.0.0.1:9/t"), ("--tenant-url-template",), {}, "",
     "must contain {slug}"),
    ("guard lookalike", ("--cp-url", "https://api.moleculesai.app.evil.example"), CP_FLAGS, {}, "",
     "not the production control plane"),
    ("guard userinfo", ("--cp-url", "https://api.moleculesai.app@evil.example"), CP_FLAGS, {}, "",
     "credentials"),
    ("guard http", ("--cp-url", "http://api.moleculesai.app"), CP_FLAGS, {}, "",
     "not the production control plane"),
    ("unknown option", ("--bogus",), (), {}, "", "No such option '--bogus'"),
    ("bad canary", ("--canary", "Evil.Example"), (), {}, "", "--canary"),
    ("toml table", (), (), {}, "[rollout]\ndry_run = true\n", "[rollout] is a table"),
    ("toml type", (), (), {}, "dry_run = 'true'\n", "dry_run: expected boolean"),
    ("dot repo", ("--repo", "acme/.."), ("--repo",), {}, "", "owner/name"),
    ("newline token", ("--gitea-token", TOKEN + "\nX-Evil: 1"), ("--gitea-token",), {}, "", "printable ASCII"),
    ("non-ascii token", (), ("--cp-token",), {"CP_ADMIN_API_TOKEN": TOKEN + "é"}, "", "printable ASCII"),
    ("idna host", ("--gitea-url", "http://exa\u200bmple.com"), ("--gitea-url",), {}, "", "not a valid host name"),
    ("one tenant url", ("--tenant-url-template", "http://127.0.0.1:9/t/{{slug}}"), ("--tenant-url-template",), {},
     "", "same URL"),
]


@pytest.mark.parametrize("extra, drop, env, toml, needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan_usage_errors(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                           rec: ConnectionRecorder, tmp_path: Path, extra: tuple[str, ...],
                           drop: tuple[str, ...], env: dict[str, str], toml: str, needle: str) -> None:
    if toml:
        (tmp_path / "fleetgate.toml").write_text(toml, encoding="utf-8")
    code, out, err = fleetgate(monkeypatch, capsys, "plan", *plan_args(rec, drop=drop), *extra, env=env)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert needle in lines[0]
    assert out == ""
    assert TOKEN not in err
    assert rec.settle() == 0  # nothing was contacted


def test_usage_error_with_json_prints_one_error_object(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str],
                                                      rec: ConnectionRecorder) -> None:
    code, out, _ = fleetgate(monkeypatch, capsys, "plan", *plan_args(rec), "--batch-size", "0", "--json")
    assert code == 2
    assert json.loads(out) == {"ok": False, "verb": "plan", "exit_code": 2,
                               "error": "--batch-size: must be ≥ 1, got '0'"}
    assert rec.settle() == 0


@pytest.mark.parametrize("verb, args", [
    ("wait-gates", ("--gate-timeout", "soon")),
    ("wait-gates", ("--poll-interval", "0")),
    ("assert-enabled", ("--repo", "a/b/c")),
    ("verify", ("--cp-url", "https://api.moleculesai.app.evil.example")),
])
def test_other_verbs_validate_too(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                  rec: ConnectionRecorder, verb: str, args: tuple[str, ...]) -> None:
    base = {"--sha": SHA, "--repo": "acme/fleet", "--gitea-url": rec.url, "--required-context": "ci",
            "--gitea-token": TOKEN}
    if verb == "verify":
        base = {"--sha": SHA, "--tenant-url-template": rec.url + "/{slug}"}
    if verb == "assert-enabled":
        base.pop("--sha")
        base.pop("--required-context")
    given = {**base, **dict(zip(args[::2], args[1::2], strict=True))}
    code, _, err = fleetgate(monkeypatch, capsys, verb, *[x for kv in given.items() for x in kv])
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1
    assert rec.settle() == 0


def test_an_unknown_scenario_is_a_usage_error(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = fleetgate(monkeypatch, capsys, "plan", "--sandbox", "--scenario", "no-such-story")
    assert code == 2 and "--scenario: unknown 'no-such-story'" in err


def test_recorder_sees_a_valid_run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                    rec: ConnectionRecorder) -> None:
    """Control: with valid settings the verb does reach the recorder (and fails closed: it never answers)."""
    code, _, err = fleetgate(monkeypatch, capsys, "wait-gates", "--sha", SHA, "--repo", "acme/fleet",
                             "--gitea-url", rec.url, "--required-context", "ci", "--gitea-token", TOKEN,
                             "--gate-timeout", "0.2", "--poll-interval", "0.05")
    assert code == 1, err
    assert rec.settle() >= 1
    assert TOKEN not in err


@pytest.mark.parametrize("flag, env, toml, expected", [
    (None, None, None, 3),
    (None, None, "6", 6),
    (None, "4", "6", 4),
    ("5", "4", "6", 5),
])
def test_precedence_through_the_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                    tmp_path: Path, flag: str | None, env: str | None, toml: str | None,
                                    expected: int) -> None:
    if toml is not None:
        (tmp_path / "fleetgate.toml").write_text(f"batch_size = {toml}\n", encoding="utf-8")
    args = ["plan", "--sandbox", "--no-lease"] + (["--batch-size", flag] if flag else [])
    code, out, err = fleetgate(monkeypatch, capsys, *args,
                               env={"PROD_AUTO_DEPLOY_BATCH_SIZE": env} if env else None)
    assert code == 0, err
    assert json.loads(out)["batch_size"] == expected


@pytest.mark.parametrize("typo, suggestion", [
    ("deploy-prod", "deploy-production"), ("rollot", "rollout"), ("lint-workflow", "lint-workflows"),
])
def test_a_mistyped_verb_gets_a_suggestion(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                           typo: str, suggestion: str) -> None:
    code, out, err = fleetgate(monkeypatch, capsys, typo, "--sha", SHA)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [f"fleetgate: no such verb {typo!r}; did you mean {suggestion}?"]


def test_the_cli_has_exactly_the_verbs_of_the_table() -> None:
    from click.testing import CliRunner

    from pipelines.cli import cli
    from pipelines.verbs import VERB_ROWS

    result = CliRunner().invoke(cli, ["--help"])
    out = result.output
    assert result.exit_code == 0
    listed = {line.split()[0] for line in out.split("Commands:", 1)[1].splitlines() if line.strip()}
    assert listed == {v.name for v in VERB_ROWS} | {"lint-workflows", "self-test", "sandbox"}
    for v in VERB_ROWS:
        assert v.help.split(".")[0][:30] in out, v.name
