"""The deploy lease against the sandbox's Gitea over loopback: take, renew, release, wait, break."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from pipelines.errors import Failed
from pipelines.gitea import GiteaClient
from pipelines.lease import LEASE_VARIABLE, Lease, LeaseValue
from pipelines.ledger import Ledger, read_ledger
from pipelines.output import Output
from pipelines.sandbox import Sandbox, serve

pytestmark = pytest.mark.anyio
SHA = "a" * 40


@asynccontextmanager
async def lease_in(sb: Sandbox, tmp_path: Path, *, run_id: str = "run-1", wait: float = 0.0,
                   ttl: float = 60.0) -> AsyncIterator[tuple[Lease, io.StringIO]]:
    stream = io.StringIO()
    token = sb.overlay["gitea_token"]
    async with GiteaClient(sb.gitea_url, sb.state.repo, token, retry_deadline=2.0) as gitea:
        yield Lease(gitea, run_id=run_id, sha=SHA, ttl=ttl, wait=wait, poll_interval=0.02,
                    out=Output(stream=stream), ledger=Ledger(tmp_path / "ledger.jsonl", run_id)), stream


def lease_events(tmp_path: Path) -> list[tuple[str, str]]:
    events = read_ledger(tmp_path / "ledger.jsonl")
    return [(e["action"], e["run_id"]) for e in events if e["event"] == "lease"]


async def test_take_renew_release(tmp_path: Path) -> None:
    async with serve() as sb, lease_in(sb, tmp_path, ttl=120) as (lease, _):
        before = datetime.now(UTC)
        await lease.acquire()
        value = sb.state.get_variable(LEASE_VARIABLE)
        assert value is not None
        raw = json.loads(value)
        assert set(raw) == {"run", "sha", "expires"} and raw["run"] == "run-1" and raw["sha"] == SHA
        assert raw["expires"].endswith("Z")
        parsed = LeaseValue.parse(value)
        assert parsed is not None
        assert before + timedelta(seconds=118) <= parsed.expires <= datetime.now(UTC) + timedelta(seconds=121)
        sb.state.set_variable(LEASE_VARIABLE, LeaseValue("run-1", SHA, before).to_json())  # about to expire
        await lease.renew()
        renewed = LeaseValue.parse(sb.state.get_variable(LEASE_VARIABLE) or "")
        assert renewed is not None and renewed.expires > before + timedelta(seconds=100)
        await lease.release()
        assert sb.state.get_variable(LEASE_VARIABLE) is None
    assert lease_events(tmp_path) == [("taken", "run-1"), ("renewed", "run-1"), ("released", "run-1")]


async def test_valid_lease_of_another_run_waits_then_fails_naming_it(tmp_path: Path) -> None:
    async with serve("lease-held") as sb, lease_in(sb, tmp_path, wait=0.2) as (lease, _):
        held = sb.state.get_variable(LEASE_VARIABLE)
        started = anyio.current_time()
        with pytest.raises(Failed, match="other-run-7") as caught:
            await lease.acquire()
        assert anyio.current_time() - started >= 0.2
        assert "--lease-wait" in caught.value.message
        assert sb.state.get_variable(LEASE_VARIABLE) == held  # never touched
        await lease.release()  # not ours: a no-op
        assert sb.state.get_variable(LEASE_VARIABLE) == held
        assert lease.held is False


async def test_waiting_run_takes_the_lease_once_the_holder_releases(tmp_path: Path) -> None:
    async with serve("lease-held") as sb, lease_in(sb, tmp_path, wait=5.0) as (lease, stream):
        async def holder_finishes() -> None:
            with anyio.fail_after(5):
                while "waiting" not in stream.getvalue():  # noqa: ASYNC110 - the waiter has seen the holder
                    await anyio.sleep(0.01)
            sb.state.delete_variable(LEASE_VARIABLE)

        async with anyio.create_task_group() as tg:
            tg.start_soon(holder_finishes)
            await lease.acquire()
        assert json.loads(sb.state.get_variable(LEASE_VARIABLE) or "{}")["run"] == "run-1"
        await lease.release()


async def test_expired_lease_is_broken_and_recorded(tmp_path: Path) -> None:
    async with serve("lease-expired") as sb, lease_in(sb, tmp_path) as (lease, _):
        await lease.acquire()
        assert json.loads(sb.state.get_variable(LEASE_VARIABLE) or "{}")["run"] == "run-1"
        await lease.release()
    broken = [e for e in read_ledger(tmp_path / "ledger.jsonl") if e.get("action") == "broken"]
    assert len(broken) == 1 and broken[0]["holder"] == "crashed-run-3" and broken[0]["reason"] == "expired"
    # the break is a delete then a create, in that order
    methods = [r.method for r in sb.state.requests_to("gitea", contains=LEASE_VARIABLE)]
    assert methods[:4] == ["POST", "GET", "DELETE", "POST"]


async def test_unparseable_lease_is_held_and_never_broken(tmp_path: Path) -> None:
    async with serve() as sb, lease_in(sb, tmp_path, wait=0.1) as (lease, _):
        sb.state.set_variable(LEASE_VARIABLE, "locked by bob")
        with pytest.raises(Failed, match="unparseable") as caught:
            await lease.acquire()
        assert "fleetgate lease --break --yes" in caught.value.message
        assert sb.state.get_variable(LEASE_VARIABLE) == "locked by bob"


async def test_break_held_takes_over_a_valid_lease_with_a_record(tmp_path: Path) -> None:
    async with serve("lease-held") as sb, lease_in(sb, tmp_path) as (lease, _):
        await lease.acquire(break_held=True)
        assert json.loads(sb.state.get_variable(LEASE_VARIABLE) or "{}")["run"] == "run-1"
        await lease.release()
    broken = [e for e in read_ledger(tmp_path / "ledger.jsonl") if e.get("action") == "broken"]
    assert broken[0]["holder"] == "other-run-7" and broken[0]["reason"] == "--break-lease"


async def test_lost_race_500_rereads_and_waits_for_the_winner(tmp_path: Path) -> None:
    async with serve("lease-held") as sb, lease_in(sb, tmp_path, wait=0.05) as (lease, _):
        sb.state.gitea_faults.post_race_500 = True
        with pytest.raises(Failed, match="other-run-7"):
            await lease.acquire()


async def test_lost_lease_is_neither_renewed_nor_deleted(tmp_path: Path) -> None:
    async with serve() as sb, lease_in(sb, tmp_path) as (lease, _):
        await lease.acquire()
        usurper = LeaseValue("run-2", SHA, datetime.now(UTC) + timedelta(hours=1)).to_json()
        sb.state.set_variable(LEASE_VARIABLE, usurper)  # ours expired and another run broke it
        with pytest.raises(Failed, match="lost: now held by run run-2"):
            await lease.renew()
        await lease.release()
        assert sb.state.get_variable(LEASE_VARIABLE) == usurper


async def test_release_runs_when_the_holder_is_cancelled(tmp_path: Path) -> None:
    async with serve() as sb, lease_in(sb, tmp_path) as (lease, _):
        with anyio.move_on_after(0.3):
            try:
                await lease.acquire()
                await anyio.sleep(30)
            finally:
                await lease.release()
        assert sb.state.get_variable(LEASE_VARIABLE) is None


def test_lease_value_parsing() -> None:
    good = LeaseValue.parse('{"run":"r","sha":"s","expires":"2026-01-01T00:00:00Z"}')
    assert good is not None and good.expires == datetime(2026, 1, 1, tzinfo=UTC)
    for bad in ("", "[]", "null", '{"run":"r","sha":"s"}',
                '{"run":"r","sha":"s","expires":"2026-01-01T00:00:00"}',  # no offset: not RFC 3339
                '{"run":"","sha":"s","expires":"2026-01-01T00:00:00Z"}',
                '{"run":"r","sha":"s","expires":"soon"}'):
        assert LeaseValue.parse(bad) is None, bad


async def test_a_same_sha_holder_whose_ledger_ended_interrupted_is_named_with_the_way_out(
        tmp_path: Path) -> None:
    crashed = Ledger(tmp_path / "ledger.jsonl", "crashed-1")
    crashed.record("plan", verb="deploy-production", sha=SHA)
    crashed.record("wave_start", wave=0, label="canary", canary=True, slugs=["alpha"])
    crashed.record("done", sha=SHA, exit_code=1, outcome="interrupted")
    async with serve() as sb, lease_in(sb, tmp_path, wait=0.0) as (lease, _):
        sb.state.hold_lease(run="crashed-1", sha=SHA, expires_in=600)
        with pytest.raises(Failed) as caught:
            await lease.acquire()
        assert sb.state.get_variable(LEASE_VARIABLE) is not None  # named, never broken on our own
    message = caught.value.message
    assert "crashed-1 deploys this same SHA" in message and "ended `interrupted`" in message
    assert "fleetgate lease --break --yes" in message


async def test_a_holder_of_another_sha_or_unknown_to_the_ledger_gets_no_such_note(tmp_path: Path) -> None:
    Ledger(tmp_path / "ledger.jsonl", "crashed-2").record("done", sha="b" * 40, exit_code=1,
                                                          outcome="interrupted")
    async with serve() as sb, lease_in(sb, tmp_path, wait=0.0) as (lease, _):
        sb.state.hold_lease(run="crashed-2", sha="b" * 40, expires_in=600)
        with pytest.raises(Failed) as caught:
            await lease.acquire()
    assert "interrupted" not in caught.value.message
