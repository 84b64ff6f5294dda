"""The rollout rules (CONTRACT §1) over the sandbox: real loopback sockets, the world's timestamped logs."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from pipelines.errors import ExitCode, FleetgateError
from pipelines.lease import LEASE_VARIABLE
from pipelines.ledger import read_ledger
from pipelines.output import Output
from pipelines.rollout import rollout
from pipelines.rollout.policy import plan_slices
from pipelines.sandbox import Sandbox, serve
from pipelines.sandbox.world import CP_TOKEN, GITEA_TOKEN, fake_sha
from pipelines.settings import Settings, resolve
from tests.ran import Run

pytestmark = pytest.mark.anyio
C1, C2, C3 = fake_sha("c1"), fake_sha("c2"), fake_sha("c3")
ALL = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf"]


def settings_for(sb: Sandbox, tmp_path: Path, verb: str = "rollout", **flags: Any) -> Settings:
    flags.setdefault("ledger", str(tmp_path / "ledger.jsonl"))
    flags.setdefault("soak_seconds", 0.02)
    return resolve(verb, flags, {}, overlay=sb.overlay)


async def do_rollout(sb: Sandbox, tmp_path: Path, *, manual: bool = False, break_lease: bool = False,
                     final_verify: bool = False, **flags: Any) -> Run:
    flags.setdefault("gitea_retry_deadline", 2.0)
    settings = settings_for(sb, tmp_path, **flags)
    stderr, stdout = io.StringIO(), io.StringIO()
    out = Output(json_mode=True, stream=stderr, stdout=stdout)
    result: dict[str, Any] | None = None
    error: FleetgateError | None = None
    try:
        result = await rollout(settings, out, manual=manual, break_lease=break_lease,
                               final_verify=final_verify)
    except FleetgateError as exc:
        error = exc
    return Run(result, error, stderr.getvalue(), stdout.getvalue(), read_ledger(settings.ledger))


def wave_calls(sb: Sandbox) -> list[dict[str, Any]]:
    """Bodies of the CP calls that carried only_slugs (waves, not the listing)."""
    return [c.body for c in sb.state.cp_calls if isinstance(c.body, dict) and c.body.get("only_slugs")]


# ---------------------------------------------------------------------------------------- the happy path


async def test_canary_alone_first_then_waves_within_the_batch_size(tmp_path: Path) -> None:
    async with serve() as sb:
        run = await do_rollout(sb, tmp_path, batch_size=2)
        assert run.exit_code == 0, run.stderr
        calls = wave_calls(sb)
        assert [c["only_slugs"] for c in calls] == [["alpha"], ["bravo", "charlie"], ["delta", "echo"],
                                                    ["foxtrot", "golf"]]
        for body in calls:
            assert body["confirm"] is True and body["dry_run"] is False and body["soak_seconds"] == 0
            assert body["batch_size"] == len(body["only_slugs"]) <= 2
            assert "canary_slug" not in body
        assert sb.state.tenant_shas() == dict.fromkeys(ALL, C2)
        assert sb.state.get_variable(LEASE_VARIABLE) is None
        assert run.result is not None and run.result["outcome"] == "deployed"
        assert [w["kind"] for w in run.result["waves"]] == ["canary", "wave", "wave", "wave"]


async def test_each_wave_is_verified_before_the_next_wave_is_written(tmp_path: Path) -> None:
    async with serve("slow-tenants") as sb:
        run = await do_rollout(sb, tmp_path, batch_size=3, soak_seconds=0)  # no soak watch re-reading them
        assert run.exit_code == 0, run.stderr
        w = sb.state
        starts = [c.start for c in w.cp_calls if isinstance(c.body, dict) and c.body.get("only_slugs")]
        writes = w.writes
        assert len(writes) == len(starts) == 3
        for i, write in enumerate(writes[:-1]):
            next_call = starts[i + 1]
            for slug in write.slugs:
                # every read of this tenant after its write (its verification) is over before the
                # next wave's CP call starts; there is at least one
                after = [r.time for r in w.buildinfo_reads if r.slug == slug and r.time > write.time]
                assert after, f"{slug} was never read after its write"
                assert max(after) < next_call, f"{slug} was still being read when the next wave was sent"
        events = [e["event"] for e in run.ledger if e["event"] in ("wave_start", "wave_verified")]
        assert events == ["wave_start", "wave_verified"] * 3


async def test_no_auth_header_to_tenants_and_each_token_only_to_its_origin(tmp_path: Path) -> None:
    async with serve() as sb:
        run = await do_rollout(sb, tmp_path)
        assert run.exit_code == 0
        for r in sb.state.requests:
            auth = r.headers.get("authorization", "")
            if r.service == "tenants":
                assert not auth and not any(GITEA_TOKEN in v or CP_TOKEN in v for v in r.headers.values())
            elif r.service == "gitea":
                assert auth == f"token {GITEA_TOKEN}"
            else:
                assert auth == f"Bearer {CP_TOKEN}"
        assert sb.state.buildinfo_reads


# ------------------------------------------------------------------------------ stragglers and halts


async def test_a_stuck_canary_halts_whatever_the_straggler_budget(tmp_path: Path) -> None:
    async with serve("stuck-canary") as sb:
        run = await do_rollout(sb, tmp_path, max_stragglers=5, verify_timeout=0.3)
        assert run.exit_code == 1
        assert "canary" in run.error.message and "alpha" in run.error.message  # type: ignore[union-attr]
        assert sb.state.written_slugs == ["alpha"]  # nothing after the canary
        assert run.events("wave_failed")[0]["stragglers"] == ["alpha"]
        assert sb.state.get_variable(LEASE_VARIABLE) is None


async def test_stragglers_within_the_budget_are_named_and_the_run_completes(tmp_path: Path) -> None:
    async with serve("stuck-tenant") as sb:
        run = await do_rollout(sb, tmp_path, max_stragglers=1, verify_timeout=0.3)
        assert run.exit_code == 0, run.stderr
        assert run.result is not None and run.result["stragglers"] == ["delta"]
        assert "delta" in run.stderr
        assert sorted(sb.state.written_slugs) == sorted(ALL)
        assert run.events("done")[0]["verified"] is True


async def test_stragglers_over_the_budget_fail_the_wave_and_stop_the_run(tmp_path: Path) -> None:
    async with serve("stuck-tenant") as sb:
        sb.state.tenants["charlie"].stuck = True
        run = await do_rollout(sb, tmp_path, max_stragglers=1, verify_timeout=0.3)
        assert run.exit_code == 1
        message = run.error.message  # type: ignore[union-attr]
        assert "charlie" in message and "delta" in message  # every straggler named
        assert sb.state.written_slugs == ["alpha", "bravo", "charlie", "delta"]  # no wave 2
        report = run.report
        assert report["drift"] == {C2: 2, C1: 5}  # which tenants run which SHA
        assert report["tenants"]["delta"]["after"] == C1
        assert run.events("done")[0]["verified"] is False


async def test_a_502_is_retried_only_for_the_unfinished_tenants(tmp_path: Path) -> None:
    async with serve("cp-5xx") as sb:
        run = await do_rollout(sb, tmp_path)
        assert run.exit_code == 0, run.stderr
        sent = [c["only_slugs"] for c in wave_calls(sb)]
        # canary: 502 after alpha was done: nothing left to re-send.
        # wave 1: 502 after bravo was done: re-send only the rest.
        assert sent == [["alpha"], ["bravo", "charlie", "delta"], ["charlie", "delta"],
                        ["echo", "foxtrot", "golf"]]
        assert sb.state.tenant_shas() == dict.fromkeys(ALL, C2)


async def test_the_cp_refusing_is_exit_1(tmp_path: Path) -> None:
    async with serve("cp-refuses") as sb:
        run = await do_rollout(sb, tmp_path)
        assert run.exit_code == 1 and "maintenance window" in run.error.message  # type: ignore[union-attr]
        assert sb.state.writes == []
        assert len(wave_calls(sb)) == 1


async def test_hostile_slugs_fail_the_run_and_are_never_requested(tmp_path: Path) -> None:
    async with serve("hostile-slug") as sb:
        run = await do_rollout(sb, tmp_path)
        assert run.exit_code == 1
        message = run.error.message  # type: ignore[union-attr]
        assert "rejected tenant slug" in message and "\x1b" not in message and "\n" not in message
        assert sb.state.writes == [] and wave_calls(sb) == []
        assert sb.state.requests_to("tenants") == []
        assert sb.state.get_variable(LEASE_VARIABLE) is None


# ---------------------------------------------------------------------------------------- stand-down


@pytest.mark.parametrize("scenario", ["tenant-on-descendant", "newer-head-green"])
async def test_stand_down_before_the_first_write(tmp_path: Path, scenario: str) -> None:
    async with serve(scenario) as sb:
        run = await do_rollout(sb, tmp_path)
        assert run.exit_code == int(ExitCode.STOOD_DOWN)
        assert C3[:12] in run.error.message  # type: ignore[union-attr]
        assert sb.state.writes == [] and wave_calls(sb) == []
        assert run.events("superseded")[0]["newer_sha"] == C3
        assert sb.state.get_variable(LEASE_VARIABLE) is None
        # the lease came first: it was taken (and released) before the stand-down
        actions = [e["action"] for e in run.events("lease")]
        assert actions == ["taken", "released"]


async def test_a_newer_head_with_pending_contexts_does_not_stand_the_run_down(tmp_path: Path) -> None:
    async with serve("newer-head-pending") as sb:
        run = await do_rollout(sb, tmp_path)
        assert run.exit_code == 0, run.stderr
        assert sb.state.tenant_shas() == dict.fromkeys(ALL, C2)
        assert run.events("superseded") == []


async def test_a_head_that_moves_after_the_first_write_does_not_stop_the_run(tmp_path: Path) -> None:
    async with serve("head-moves-mid-run") as sb:
        run = await do_rollout(sb, tmp_path)
        assert run.exit_code == 0, run.stderr
        assert sb.state.branches["main"] == C3
        assert sb.state.tenant_shas() == dict.fromkeys(ALL, C2)


# ---------------------------------------------------------------------------------------- kill switch


async def test_kill_switch_flipped_mid_run_halts_with_exit_4_and_no_later_write(tmp_path: Path) -> None:
    async with serve("kill-switch-flips") as sb:
        run = await do_rollout(sb, tmp_path)
        assert run.exit_code == int(ExitCode.HALTED_MIXED)
        assert len(sb.state.writes) == 2  # the switch engaged as the 2nd write arrived: no 3rd
        assert run.report["drift"] == {C2: 4, C1: 3}
        assert "4 on" in run.error.message and "3 on" in run.error.message  # type: ignore[union-attr]
        assert sb.state.get_variable(LEASE_VARIABLE) is None
        assert run.events("halt")[0]["reason"] == "kill switch"


async def test_kill_switch_engaged_before_the_first_write_is_exit_3(tmp_path: Path) -> None:
    async with serve("kill-switch-engaged") as sb:
        run = await do_rollout(sb, tmp_path)
        assert run.exit_code == int(ExitCode.DISABLED)
        assert sb.state.writes == []


async def test_an_unreadable_kill_switch_is_exit_1_before_any_write(tmp_path: Path) -> None:
    async with serve("kill-switch-unreadable") as sb:
        run = await do_rollout(sb, tmp_path, gitea_retry_deadline=0.3)
        assert run.exit_code == 1 and "PROD_AUTO_DEPLOY_DISABLED" in run.error.message  # type: ignore[union-attr]
        assert sb.state.writes == []
        assert sb.state.get_variable(LEASE_VARIABLE) is None


async def test_the_kill_switch_is_reread_before_every_write(tmp_path: Path) -> None:
    async with serve() as sb:
        run = await do_rollout(sb, tmp_path)
        assert run.exit_code == 0
        reads = [r.time for r in sb.state.requests_to("gitea", "GET", "PROD_AUTO_DEPLOY_DISABLED")]
        starts = [c.start for c in sb.state.cp_calls if isinstance(c.body, dict) and c.body.get("only_slugs")]
        assert len(reads) == len(starts) == 3
        for read, start in zip(reads, starts, strict=True):
            assert read < start
        renewals = [r.time for r in sb.state.requests_to("gitea", "PUT", LEASE_VARIABLE)]
        assert len(renewals) == 3 and all(r < s for r, s in zip(renewals, starts, strict=True))


# ---------------------------------------------------------------------------------------- lease


async def test_two_runs_against_one_sandbox_never_interleave_their_writes(tmp_path: Path) -> None:
    async with serve() as sb:
        runs: dict[str, Run] = {}

        async def deploy_c2() -> None:
            runs["c2"] = await do_rollout(sb, tmp_path, ledger=str(tmp_path / "a.jsonl"), lease_wait=20,
                                          batch_size=2)

        async def back_to_c1() -> None:
            # a manual redeploy of the previous release: it also writes, and must wait its turn
            runs["c1"] = await do_rollout(sb, tmp_path, ledger=str(tmp_path / "b.jsonl"), lease_wait=20,
                                          batch_size=2, manual=True, sha=C1, target_tag=f"staging-{C1[:7]}")

        sb.state.tenants["alpha"].sha = C2  # so the c1 redeploy has something to write too
        async with anyio.create_task_group() as tg:
            tg.start_soon(deploy_c2)
            tg.start_soon(back_to_c1)
        assert runs["c2"].exit_code == 0 and runs["c1"].exit_code == 0, (runs["c2"].stderr, runs["c1"].stderr)
        tags = [w.tag for w in sb.state.writes]
        assert set(tags) == {f"staging-{C1[:7]}", f"staging-{C2[:7]}"}
        first = tags[0]
        switch = tags.index(next(t for t in tags if t != first))
        assert all(t == first for t in tags[:switch]) and all(t != first for t in tags[switch:])
        assert sb.state.get_variable(LEASE_VARIABLE) is None
        # the waiting run took the lease after the other released it
        a_released = next(e["ts"] for e in runs["c2"].events("lease") if e["action"] == "released")
        b_taken = next(e["ts"] for e in runs["c1"].events("lease") if e["action"] == "taken")
        a_taken = next(e["ts"] for e in runs["c2"].events("lease") if e["action"] == "taken")
        b_released = next(e["ts"] for e in runs["c1"].events("lease") if e["action"] == "released")
        assert b_taken >= a_released or a_taken >= b_released


async def test_an_expired_lease_is_broken_with_a_record(tmp_path: Path) -> None:
    async with serve("lease-expired") as sb:
        run = await do_rollout(sb, tmp_path)
        assert run.exit_code == 0, run.stderr
        broken = [e for e in run.events("lease") if e["action"] == "broken"]
        assert broken and broken[0]["holder"] == "crashed-run-3"
        assert sb.state.get_variable(LEASE_VARIABLE) is None


async def test_a_held_lease_makes_the_run_wait_then_fail_naming_the_holder(tmp_path: Path) -> None:
    async with serve("lease-held") as sb:
        run = await do_rollout(sb, tmp_path, lease_wait=0.2)
        assert run.exit_code == 1 and "other-run-7" in run.error.message  # type: ignore[union-attr]
        assert sb.state.writes == [] and sb.state.cp_calls == []
        assert "other-run-7" in (sb.state.get_variable(LEASE_VARIABLE) or "")


async def test_no_lease_writes_no_variable(tmp_path: Path) -> None:
    async with serve() as sb:
        run = await do_rollout(sb, tmp_path, lease=False)
        assert run.exit_code == 0
        assert sb.state.requests_to("gitea", contains=LEASE_VARIABLE) == []
        assert "--no-lease" in run.stderr


# ------------------------------------------------------------------------------ rollback, re-run, dry run


async def test_rollback_restores_every_changed_tenant_and_verifies(tmp_path: Path) -> None:
    async with serve("stuck-tenant") as sb:
        run = await do_rollout(sb, tmp_path, on_failure="rollback", verify_timeout=0.3)
        assert run.exit_code == 1
        assert sb.state.tenant_shas() == dict.fromkeys(ALL, C1)
        rollback = run.report["rollback"]
        assert rollback["verified"] is True
        assert sorted(rollback["restored"]) == ["alpha", "bravo", "charlie", "delta"]
        back = [w for w in sb.state.writes if w.tag == f"staging-{C1[:7]}"]
        assert sorted(s for w in back for s in w.slugs) == ["alpha", "bravo", "charlie"]  # delta never moved
        assert {"echo", "foxtrot", "golf"}.isdisjoint(s for w in sb.state.writes for s in w.slugs)
        assert [e["action"] for e in run.events("rollback")][-1] == "done"
        assert "rolled back 4" in run.error.message  # type: ignore[union-attr]


async def test_a_rerun_skips_tenants_already_on_the_sha(tmp_path: Path) -> None:
    async with serve("partially-deployed") as sb:
        run = await do_rollout(sb, tmp_path)
        assert run.exit_code == 0, run.stderr
        assert sb.state.written_slugs == ["echo", "foxtrot", "golf"]
        assert run.result is not None and run.result["skipped"] == ["alpha", "bravo", "charlie", "delta"]
        assert "canary alpha already reports" in run.stderr
        again = await do_rollout(sb, tmp_path)
        assert again.exit_code == 0
        assert again.result is not None and again.result["outcome"] == "nothing-to-do"
        assert len(sb.state.writes) == 1


async def test_a_dry_run_writes_nothing(tmp_path: Path) -> None:
    async with serve() as sb:
        run = await do_rollout(sb, tmp_path, dry_run=True)
        assert run.exit_code == 0 and run.result is not None and run.result["outcome"] == "dry-run"
        assert sb.state.writes == []
        assert all(c.body["dry_run"] is True for c in sb.state.cp_calls)
        assert [c["only_slugs"] for c in wave_calls(sb)] == [["alpha"], ALL[1:4], ALL[4:7]]
        assert [r.method for r in sb.state.requests if r.service == "gitea"
                and r.method not in ("GET",)] == []  # not even a lease
        assert sb.state.tenant_shas() == dict.fromkeys(ALL, C1)
        assert run.events("done")[0]["verified"] is False


# ---------------------------------------------------------------------------------------- secrets


async def test_no_token_in_stdout_stderr_ledger_or_summary(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    async with serve("leaky-errors") as sb:
        sb.state.tenants["charlie"].stuck = True  # a failing run too: the error path must be clean as well
        run = await do_rollout(sb, tmp_path, verify_timeout=0.3)
        assert run.exit_code == 1
        texts = {"stdout": run.stdout, "stderr": run.stderr,
                 "ledger": (tmp_path / "ledger.jsonl").read_text(), "summary": summary.read_text(),
                 "details": json.dumps(run.report, default=str)}
        for where, text in texts.items():
            for secret in (GITEA_TOKEN, CP_TOKEN, "hunter2-pass"):
                assert secret not in text, where
        assert "fleetgate rollout" in texts["summary"]


# ---------------------------------------------------------------------------------------- signals


async def test_sigterm_mid_run_releases_the_lease(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    async with serve() as sb:
        env = {**os.environ, **sb.env(), "FLEETGATE_LEDGER": str(ledger),
               "PROD_AUTO_DEPLOY_SOAK_SECONDS": "60"}  # it will sit in the soak after the canary
        process = await anyio.open_process([sys.executable, "-m", "pipelines", "rollout"], env=env)
        try:
            with anyio.fail_after(20):
                while not sb.state.writes:  # noqa: ASYNC110 - the world is shared with the child's requests
                    await anyio.sleep(0.02)
            assert sb.state.get_variable(LEASE_VARIABLE) is not None
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(10):
                code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
            await process.aclose()
        assert code == 1
        assert sb.state.get_variable(LEASE_VARIABLE) is None
        assert sb.state.written_slugs == ["alpha"]
        events = read_ledger(ledger)
        assert any(e["event"] == "halt" and e.get("reason") == "interrupted" for e in events)
        assert events[-1]["event"] == "done" and events[-1]["verified"] is False


# ---------------------------------------------------------------------------------------- planning


def test_plan_slices() -> None:
    assert plan_slices(["a", "b", "c", "d", "e"], "c", 2) == [(["c"], True), (["a", "b"], False), (["d", "e"], False)]
    assert plan_slices(["a", "b", "c"], None, 5) == [(["a", "b", "c"], False)]
    assert plan_slices(["b"], "a", 1) == [(["b"], False)]  # canary already done: no canary wave
