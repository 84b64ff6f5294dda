"""`status` and `lease` against the sandbox: what is going on now, and breaking a crashed run's lease."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from loopback import run_main

from pipelines.lease import LEASE_VARIABLE
from pipelines.ledger import Ledger, read_ledger
from pipelines.sandbox.scenarios import CRASHED_RUN, SANDBOX_LEDGER
from pipelines.sandbox.world import CP_TOKEN, GITEA_TOKEN


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NO_COLOR", "1")


def fleetgate(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
              *args: str) -> tuple[int, str, str]:
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert GITEA_TOKEN not in out + err and CP_TOKEN not in out + err
    return code, out, err


def test_status_names_the_lease_switch_gates_and_the_interrupted_last_run(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = fleetgate(monkeypatch, capsys, "status", "--sandbox", "--scenario", "lease-interrupted",
                               "--json")
    assert code == 0, err
    status = json.loads(out)
    lease = status["lease"]
    assert lease["held"] is True and lease["run"] == CRASHED_RUN and lease["expired"] is False
    assert lease["holder_ledger"]["outcome"] == "interrupted"
    assert status["kill_switch"] == {"engaged": False, "env": None, "live": None, "live_read": True}
    assert status["branch"]["green"] is True and len(status["branch"]["head"]) == 40
    assert set(status["branch"]["contexts"].values()) == {"success"}
    last = status["last_run"]
    assert (last["run_id"], last["outcome"], last["exit_code"]) == (CRASHED_RUN, "interrupted", 1)
    assert last["last_wave"] == "canary" and last["waves_verified"] == 1
    assert last["last_phase"] == "halted: interrupted"
    assert "fleet" not in status
    assert f"held by run {CRASHED_RUN}" in err and "last run: crashed-run-9" in err


def test_status_fleet_counts_tenants_by_sha(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = fleetgate(monkeypatch, capsys, "status", "--sandbox", "--scenario", "partially-deployed",
                               "--fleet", "--json")
    assert code == 0, err
    fleet = json.loads(out)["fleet"]
    assert fleet["total"] == 7 and sorted(fleet["by_sha"].values()) == [3, 4]
    assert sum(len(s) for s in fleet["tenants_by_sha"].values()) == 7
    assert json.loads(out)["last_run"] is None  # a fresh folder: nothing in the ledger
    assert "last run: none in the ledger" in err


def test_status_sees_an_engaged_switch_and_an_unreadable_gitea_fails(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = fleetgate(monkeypatch, capsys, "status", "--sandbox", "--scenario", "kill-switch-engaged",
                             "--json")
    assert code == 0 and json.loads(out)["kill_switch"]["engaged"] is True
    code, _, err = fleetgate(monkeypatch, capsys, "status", "--sandbox", "--scenario", "gitea-unauthorized")
    assert code == 1 and "401" in err


def test_status_without_a_gitea_token_is_a_usage_error(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = fleetgate(monkeypatch, capsys, "status", "--repo", "acme/fleet",
                             "--gitea-url", "http://127.0.0.1:9")
    assert code == 2 and "--gitea-token" in err


def test_lease_shows_the_holder(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = fleetgate(monkeypatch, capsys, "lease", "--sandbox", "--scenario", "lease-held", "--json")
    assert code == 0, err
    assert json.loads(out)["lease"]["run"] == "other-run-7" and "held by run other-run-7" in err
    code, out, _ = fleetgate(monkeypatch, capsys, "lease", "--sandbox", "--json")
    assert code == 0 and json.loads(out)["lease"] == {"held": False}


def test_lease_break_without_yes_is_refused_before_anything_is_contacted(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Not through the sandbox: no URL answers here, so a contact would fail with exit 1, not 2.
    code, _, err = fleetgate(monkeypatch, capsys, "lease", "--break", "--repo", "acme/fleet",
                             "--gitea-url", "http://127.0.0.1:9", "--gitea-token", "tok-never-sent-1")
    assert code == 2 and "--yes" in err
    assert not Path("fleetgate-ledger.jsonl").exists()


def test_lease_break_yes_deletes_the_lease_and_records_who_held_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import anyio

    from pipelines.leasecmd import run
    from pipelines.output import Output
    from pipelines.sandbox import serve
    from pipelines.sandbox.scenarios import seed_ledger
    from pipelines.settings import resolve

    async def scenario() -> tuple[str | None, list[str]]:
        async with serve("lease-interrupted") as sb:
            settings = resolve("lease", {}, {}, overlay=sb.overlay)
            seed_ledger(sb.state, settings.ledger)  # as `--sandbox` does
            result = await run(settings, Output(), break_=True, yes=True)
            assert result["broken"] is True
            methods = [r.method for r in sb.state.requests_to("gitea", contains=LEASE_VARIABLE)]
            return sb.state.get_variable(LEASE_VARIABLE), methods

    value, methods = anyio.run(scenario)
    assert value is None
    assert methods == ["GET", "GET", "DELETE"]  # read, re-read just before, delete
    events = read_ledger(SANDBOX_LEDGER)
    broken = [e for e in events if e["event"] == "lease" and e.get("action") == "broken"]
    assert len(broken) == 1 and broken[0]["holder"] == CRASHED_RUN and broken[0]["reason"] == "lease --break"
    assert broken[0]["run_id"] != CRASHED_RUN
    # the operator's record is not "the last run": status still reports the crashed run
    from pipelines.report.runs import find_run

    last = find_run(SANDBOX_LEDGER)
    assert last is not None and last.run_id == CRASHED_RUN


def test_lease_break_with_no_lease_breaks_nothing(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = fleetgate(monkeypatch, capsys, "lease", "--sandbox", "--break", "--yes", "--json")
    assert code == 0 and json.loads(out)["broken"] is False and "nothing to break" in err
    assert read_ledger(SANDBOX_LEDGER) == []


def test_assert_enabled_names_the_lease_holder(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = fleetgate(monkeypatch, capsys, "assert-enabled", "--sandbox", "--scenario", "lease-held",
                               "--json")
    assert code == 0, err
    assert json.loads(out)["lease"]["run"] == "other-run-7" and "held by run other-run-7" in err


def test_a_seeded_history_is_written_once(tmp_path: Path) -> None:
    from pipelines.sandbox.scenarios import build_world, seed_ledger

    world = build_world("lease-interrupted")
    path = str(tmp_path / "l.jsonl")
    Ledger(path, "someone-else").record("plan", verb="rollout")
    seed_ledger(world, path)
    seed_ledger(world, path)
    runs = [e["run_id"] for e in read_ledger(path)]
    assert runs.count(CRASHED_RUN) == len(world.ledger_history) and runs[0] == "someone-else"


def test_deploy_production_says_the_holder_was_interrupted_and_how_to_break_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = fleetgate(monkeypatch, capsys, "deploy-production", "--sandbox", "--scenario",
                             "lease-interrupted", "--lease-wait", "0")
    assert code == 1
    assert f"the holder {CRASHED_RUN} deploys this same SHA and its ledger ended `interrupted`" in err
    assert "`fleetgate lease --break --yes`" in err
