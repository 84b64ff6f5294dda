"""deploy-production and redeploy over the sandbox, and every exit code through the real CLI."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from test_rollout import ALL, C1, C2, C3, Run, wave_calls

from pipelines.deploy import MANUAL_TAG_VARIABLE, deploy_production, redeploy
from pipelines.errors import ExitCode, FleetgateError
from pipelines.lease import LEASE_VARIABLE
from pipelines.ledger import read_ledger
from pipelines.output import Output
from pipelines.sandbox import Sandbox, serve
from pipelines.sandbox.world import CP_TOKEN, GITEA_TOKEN
from pipelines.settings import resolve

pytestmark = pytest.mark.anyio
TAG_C1 = f"staging-{C1[:7]}"


async def do(verb: str, sb: Sandbox, tmp_path: Path, *, break_lease: bool = False, **flags: Any) -> Run:
    flags.setdefault("ledger", str(tmp_path / "ledger.jsonl"))
    flags.setdefault("soak_seconds", 0.02)
    settings = resolve(verb, flags, {}, overlay=sb.overlay)
    stderr, stdout = io.StringIO(), io.StringIO()
    out = Output(json_mode=True, stream=stderr, stdout=stdout)
    result: dict[str, Any] | None = None
    error: FleetgateError | None = None
    try:
        if verb == "redeploy":
            result = await redeploy(settings, out, break_lease=break_lease)
        else:
            result = await deploy_production(settings, out)
    except FleetgateError as exc:
        error = exc
    return Run(result, error, stderr.getvalue(), stdout.getvalue(), read_ledger(settings.ledger))


# ---------------------------------------------------------------------------------------- deploy-production


async def test_deploy_production_gates_then_a_canaried_verified_rollout(tmp_path: Path) -> None:
    async with serve() as sb:
        run = await do("deploy-production", sb, tmp_path)
        assert run.exit_code == 0, run.stderr
        assert sb.state.tenant_shas() == dict.fromkeys(ALL, C2)
        order = [e["event"] for e in run.ledger]
        assert order[:3] == ["plan", "gate", "kill_switch"]
        assert order.index("gate") < order.index("wave_start") and order[-1] == "done"
        assert len({e["run_id"] for e in run.ledger}) == 1  # one run id joins the gates to the waves
        assert run.ledger[-1]["verified"] is True
        assert "final verify: 7/7" in run.stderr
        assert run.result is not None and run.result["verb"] == "deploy-production"
        # the statuses were read before the first CP write
        status_reads = [r.time for r in sb.state.requests_to("gitea", "GET", f"/commits/{C2}/status")]
        assert status_reads and max(status_reads) < sb.state.writes[0].time


async def test_deploy_production_with_a_failed_gate_contacts_no_cp_and_takes_no_lease(tmp_path: Path,
                                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                                     ) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    async with serve("gate-failure") as sb:
        run = await do("deploy-production", sb, tmp_path)
        assert run.exit_code == 1 and "CI / test (push)" in run.error.message  # type: ignore[union-attr]
        assert sb.state.cp_calls == []
        assert sb.state.requests_to("gitea", "POST") == []
        done = run.events("done")[0]
        assert done["verified"] is False and done["step"] == "wait-gates"
        assert "failed" in summary.read_text()


async def test_deploy_production_stops_at_a_live_kill_switch(tmp_path: Path) -> None:
    async with serve("kill-switch-engaged") as sb:
        run = await do("deploy-production", sb, tmp_path)
        assert run.exit_code == int(ExitCode.DISABLED)
        assert sb.state.cp_calls == [] and sb.state.get_variable(LEASE_VARIABLE) is None


# ---------------------------------------------------------------------------------------- redeploy


async def test_redeploy_goes_back_while_frozen_and_superseded(tmp_path: Path) -> None:
    async with serve("newer-head-green") as sb:  # main moved to a green C3: an auto-deploy would stand down
        for tenant in sb.state.tenants.values():
            tenant.sha = C2
        sb.state.engage_kill_switch()  # auto-deploys are frozen
        run = await do("redeploy", sb, tmp_path, sha=C1, target_tag=TAG_C1)
        assert run.exit_code == 0, run.stderr
        assert sb.state.tenant_shas() == dict.fromkeys(ALL, C1)
        assert wave_calls(sb)[0]["only_slugs"] == ["alpha"]  # still canaried
        assert all(c["target_tag"] == TAG_C1 for c in wave_calls(sb))
        assert sb.state.requests_to("gitea", contains="PROD_AUTO_DEPLOY_DISABLED") == []
        assert sb.state.branches["main"] == C3 and run.events("superseded") == []
        assert run.events("lease")[0]["action"] == "taken"
        assert sb.state.get_variable(LEASE_VARIABLE) is None


async def test_redeploy_takes_its_tag_from_the_gitea_variable_when_no_flag_gives_one(tmp_path: Path) -> None:
    async with serve("partially-deployed") as sb:
        sb.state.set_variable(MANUAL_TAG_VARIABLE, TAG_C1)
        run = await do("redeploy", sb, tmp_path, sha=C1)
        assert run.exit_code == 0, run.stderr
        assert {c["target_tag"] for c in wave_calls(sb)} == {TAG_C1}
        assert f"from Gitea variable {MANUAL_TAG_VARIABLE}" in run.stderr
        assert sb.state.tenant_shas() == dict.fromkeys(ALL, C1)


async def test_redeploy_falls_back_to_the_tag_template(tmp_path: Path) -> None:
    async with serve("partially-deployed") as sb:
        assert resolve("redeploy", {"sha": C1}, {}, overlay=sb.overlay).target_tag == ""  # unset stays unset
        run = await do("redeploy", sb, tmp_path, sha=C1)
        assert run.exit_code == 0, run.stderr
        assert {c["target_tag"] for c in wave_calls(sb)} == {TAG_C1}
        assert "from --tag-template" in run.stderr


async def test_redeploy_of_a_tag_that_does_not_hold_the_sha_stops_at_the_canary(tmp_path: Path) -> None:
    async with serve("partially-deployed") as sb:
        sb.state.set_variable(MANUAL_TAG_VARIABLE, f"staging-{C2[:7]}")  # a stale hand-over
        run = await do("redeploy", sb, tmp_path, sha=C1, verify_timeout=0.3)
        assert run.exit_code == 1 and "canary" in run.error.message  # type: ignore[union-attr]
        assert sb.state.written_slugs == ["alpha"]


async def test_redeploy_rejects_a_malformed_tag_variable_before_writing(tmp_path: Path) -> None:
    async with serve() as sb:
        sb.state.set_variable(MANUAL_TAG_VARIABLE, "staging-x; rm -rf /")
        run = await do("redeploy", sb, tmp_path, sha=C1)
        assert run.exit_code == 1 and MANUAL_TAG_VARIABLE in run.error.message  # type: ignore[union-attr]
        assert sb.state.cp_calls == []


async def test_redeploy_break_lease_takes_over_with_a_record(tmp_path: Path) -> None:
    async with serve("lease-held") as sb:
        for tenant in sb.state.tenants.values():
            tenant.sha = C2
        waited = await do("redeploy", sb, tmp_path, sha=C1, target_tag=TAG_C1, lease_wait=0.1)
        assert waited.exit_code == 1 and "other-run-7" in waited.error.message  # type: ignore[union-attr]
        assert sb.state.writes == []
        run = await do("redeploy", sb, tmp_path, break_lease=True, sha=C1, target_tag=TAG_C1, lease_wait=0.1)
        assert run.exit_code == 0, run.stderr
        broken = [e for e in run.events("lease") if e["action"] == "broken"]
        assert broken[-1]["holder"] == "other-run-7" and broken[-1]["reason"] == "--break-lease"
        assert sb.state.tenant_shas() == dict.fromkeys(ALL, C1)
        assert sb.state.get_variable(LEASE_VARIABLE) is None


# ---------------------------------------------------------------------------------------- the real CLI


# One case per exit code, each a real `python -m pipelines` process (main(), sys.exit and all).
CLI_CASES: list[tuple[str, list[str], int, list[str]]] = [
    ("deploy", ["deploy-production", "--sandbox"], 0,
     ["canary: start — alpha", "canary: CP call ok", "canary: verified", "soak: 0.5s after canary",
      "wave 1: start — bravo, charlie, delta", "wave 2: start", "final verify: 7/7"]),
    ("stuck", ["rollout", "--sandbox", "--scenario", "stuck-tenant", "--soak-seconds", "0", "--verify-timeout",
               "0.3", "--json"], 1, ["delta (stale"]),
    ("usage", ["rollout", "--sandbox", "--batch-size", "0"], 2, ["--batch-size"]),
    ("disabled", ["deploy-production", "--sandbox", "--disabled", "true"], 3, ["kill switch engaged"]),
    ("flips", ["rollout", "--sandbox", "--scenario", "kill-switch-flips", "--soak-seconds", "0"], 4,
     ["the fleet is mixed"]),
    ("superseded", ["rollout", "--sandbox", "--scenario", "newer-head-green"], 5, ["stood down"]),
]


async def test_exit_codes_through_the_real_cli(tmp_path: Path) -> None:
    ours = ("GITHUB_", "GITEA_", "PROD_", "CP_", "CI_", "FLEETGATE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env["NO_COLOR"] = "1"
    results: dict[str, tuple[int, str, str]] = {}

    async def one(name: str, args: list[str]) -> None:
        cwd = tmp_path / name
        cwd.mkdir()
        proc = await anyio.run_process([sys.executable, "-m", "pipelines", *args], cwd=cwd, env=env,
                                       check=False)
        results[name] = (proc.returncode, proc.stdout.decode(), proc.stderr.decode())

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for name, args, _code, _needles in CLI_CASES:
                tg.start_soon(one, name, args)
    for name, _args, code, needles in CLI_CASES:
        returncode, stdout, stderr = results[name]
        assert returncode == code, (name, stderr)
        for needle in needles:
            assert needle in stderr, (name, needle, stderr)
        for secret in (GITEA_TOKEN, CP_TOKEN):
            assert secret not in stdout + stderr, name
    # --json: one object on stdout, carrying the drift report of the failed run
    stuck = json.loads(results["stuck"][1])
    assert stuck["exit_code"] == 1 and stuck["ok"] is False
    assert stuck["tenants"]["delta"]["after"] == C1 and stuck["drift"] == {C2: 3, C1: 4}
    # the deploy's lines come in the order a human reads them
    deploy = results["deploy"][2]
    marks = [deploy.index(n) for n in CLI_CASES[0][3]]
    assert marks == sorted(marks)


async def test_sigterm_while_waiting_for_the_gates_is_one_interrupted_done(tmp_path: Path) -> None:
    import signal

    ledger = tmp_path / "ledger.jsonl"
    async with serve("gates-pending") as sb:
        env = {**os.environ, **sb.env(), "FLEETGATE_LEDGER": str(ledger), "CI_STATUS_POLL_INTERVAL_SECONDS": "30"}
        process = await anyio.open_process([sys.executable, "-m", "pipelines", "deploy-production", "--json"],
                                           env=env)
        try:
            with anyio.fail_after(20):
                while not sb.state.requests_to("gitea", "GET", f"/commits/{sb.state.deploy_sha}/status"):  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(10):
                code = await process.wait()
            assert process.stdout is not None and process.stderr is not None
            stdout, stderr = await read_all(process.stdout), await read_all(process.stderr)
        finally:
            if process.returncode is None:
                process.kill()
            await process.aclose()
    assert code == 1 and "Traceback" not in stderr
    (done,) = [e for e in read_ledger(ledger) if e["event"] == "done"]
    assert done["outcome"] == "interrupted" and done["exit_code"] == 1 and done["step"] == "wait-gates"
    assert json.loads(stdout)["outcome"] == "interrupted"
    assert sb.state.cp_calls == []


async def read_all(stream: anyio.abc.ByteReceiveStream) -> str:
    data = bytearray()
    async for chunk in stream:
        data.extend(chunk)
    return data.decode()
