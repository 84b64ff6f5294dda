"""The rollout engine over in-memory ports: no sockets, a fake clock, stamina in testing mode.

Each test drives `pipelines.rollout.engine.drive` with fakes that record every call, and asserts on
the writes, the exit code and the ONE `done` of the run.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
import stamina

from pipelines.cp import CPAnswer, CPRow, CPUnavailable
from pipelines.errors import ExitCode, Failed, FleetgateError
from pipelines.gitea import CommitStatus
from pipelines.http.client import TimedOut
from pipelines.ledger import Ledger, read_ledger
from pipelines.output import Output
from pipelines.rollout import new_state
from pipelines.rollout.engine import drive
from pipelines.rollout.ports import Ports
from pipelines.sandbox.scenarios import placeholder_overlay
from pipelines.sandbox.world import fake_sha
from pipelines.settings import Settings, resolve
from pipelines.verify import VERIFIED, Reading

pytestmark = pytest.mark.anyio
OLD, NEW = fake_sha("c1"), fake_sha("c2")
SLUGS = ["alpha", "bravo", "charlie", "delta", "echo"]


@pytest.fixture(autouse=True)
def no_backoff() -> Iterator[None]:
    with stamina.set_testing(True, attempts=10, cap=True):  # real attempt counts, no waiting
        yield


# ---------------------------------------------------------------------------------------- fakes
@dataclass
class World:
    """The fleet and a log of everything the engine did, in order."""

    shas: dict[str, str] = field(default_factory=lambda: dict.fromkeys(SLUGS, OLD))
    log: list[tuple[str, Any]] = field(default_factory=list)
    writes: list[tuple[str, list[str]]] = field(default_factory=list)  # (sha written, slugs)

    def sha_of_tag(self, tag: str) -> str:
        return next(sha for sha in (OLD, NEW) if tag.endswith(sha[:7]))


Script = Callable[[str, list[str]], Exception | None]


class FakeCP:
    def __init__(self, world: World, script: Script | None = None, listing: Sequence[str] | None = None,
                 final_listing: Sequence[str] | None = None, partial: bool = True) -> None:
        self.world = world
        self.partial = partial  # a failing call still did its first tenant
        self.script = script or (lambda tag, slugs: None)
        self.listing = list(listing) if listing is not None else None
        self.final_listing = final_listing
        self.listings = 0

    async def list_tenants(self, target_tag: str) -> list[str]:
        self.listings += 1
        self.world.log.append(("list", target_tag))
        if self.listings > 1 and self.final_listing is not None:
            return sorted(self.final_listing)
        return sorted(self.listing if self.listing is not None else self.world.shas)

    async def redeploy_wave(self, target_tag: str, slugs: list[str], *, dry_run: bool) -> CPAnswer:
        self.world.log.append(("write", list(slugs)))
        error = self.script(target_tag, list(slugs))
        if not dry_run:
            sha = self.world.sha_of_tag(target_tag)
            done = (slugs[:1] if self.partial else []) if error is not None else slugs
            for slug in done:
                self.world.shas[slug] = sha
            self.world.writes.append((sha, list(done)))
        if error is not None:
            raise error
        rows = [CPRow(s, "done", "Success", 0, True, "", None) for s in slugs]
        return CPAnswer(ok=True, rows=rows, error="", status=200, sent=tuple(slugs))


class FakeRepo:
    def __init__(self, world: World, switch: Callable[[int], str | None] | None = None) -> None:
        self.world = world
        self.switch = switch or (lambda n: None)
        self.reads = 0

    async def kill_switch(self) -> str | None:
        self.reads += 1
        self.world.log.append(("kill_switch", self.reads))
        return self.switch(self.reads)

    async def is_descendant(self, candidate: str, of: str) -> bool:
        return False

    async def branch_head(self, branch: str) -> str:
        return NEW

    async def combined_status(self, sha: str) -> dict[str, CommitStatus]:
        return {}


class FakeTenants:
    def __init__(self, world: World, stuck: Sequence[str] = ()) -> None:
        self.world = world
        self.stuck = set(stuck)  # these report what they ran before, whatever is written

    def _one(self, slug: str, expected: str | None) -> Reading:
        seen = OLD if slug in self.stuck else self.world.shas[slug]
        verdict = "read" if expected is None else (VERIFIED if seen == expected else "stale")
        return Reading(slug=slug, expected=expected, seen=seen, verdict=verdict, latency_ms=1.0, detail="")

    async def read(self, slugs: Sequence[str], expected: str | None) -> dict[str, Reading]:
        return {s: self._one(s, expected) for s in slugs}

    async def wait_verified(self, slugs: Sequence[str], sha: str, *, timeout: float,  # noqa: ASYNC109
                            interval: float, on_progress: Callable[[int], object] | None = None
                            ) -> dict[str, Reading]:
        return await self.read(slugs, sha)


class FakeLease:
    def __init__(self, world: World) -> None:
        self.world = world
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    async def acquire(self, *, break_held: bool = False) -> None:
        self._held = True
        self.world.log.append(("lease", "taken"))

    async def renew(self) -> None:
        self.world.log.append(("lease", "renewed"))

    async def release(self) -> bool:
        self._held = False
        self.world.log.append(("lease", "released"))
        return True


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        await anyio.lowlevel.checkpoint()


@dataclass
class Run:
    code: int
    result: dict[str, Any]
    world: World
    ledger: list[dict[str, Any]]
    stderr: str

    @property
    def done(self) -> dict[str, Any]:
        (done,) = [e for e in self.ledger if e["event"] == "done"]  # exactly one, always
        return done


def settings_for(tmp_path: Path, ledger_name: str = "ledger.jsonl", **flags: Any) -> Settings:
    flags.setdefault("ledger", str(tmp_path / ledger_name))
    flags.setdefault("soak_seconds", 5)
    flags.setdefault("batch_size", 2)
    flags.setdefault("sha", NEW)
    flags.setdefault("target_tag", f"staging-{NEW[:7]}")
    return resolve("rollout", flags, {}, overlay=placeholder_overlay())


async def go(tmp_path: Path, *, world: World | None = None, cp: FakeCP | None = None, repo: FakeRepo | None = None,
             tenants: FakeTenants | None = None, final_verify: bool = True, manual: bool = False,
             ledger: Ledger | None = None, **flags: Any) -> Run:
    world = world or World()
    s = settings_for(tmp_path, **flags)
    state = new_state(s, verb="rollout", manual=manual)
    ledger = ledger or Ledger(s.ledger, state.run_id)
    ports = Ports(cp=cp or FakeCP(world), repo=repo or FakeRepo(world), tenants=tenants or FakeTenants(world),
                  lease=FakeLease(world), clock=FakeClock())
    stderr = io.StringIO()
    out = Output(json_mode=True, stream=stderr, stdout=io.StringIO())
    try:
        result = await drive(s, out, ports, state, ledger, final_verify=final_verify)
        code = 0
    except FleetgateError as exc:
        result, code = exc.details, int(exc.exit_code)
    return Run(code, result, world, read_ledger(s.ledger), stderr.getvalue())


def writes(world: World) -> list[list[str]]:
    return [args for what, args in world.log if what == "write"]


# ---------------------------------------------------------------------------------------- endings
async def test_a_clean_run_is_deployed_with_one_done_and_every_wave_through_the_guard(tmp_path: Path) -> None:
    run = await go(tmp_path)
    assert run.code == 0 and run.done["outcome"] == "deployed" and run.done["verified"] is True
    assert writes(run.world) == [["alpha"], ["bravo", "charlie"], ["delta", "echo"]]
    # before every write: the lease renewed, then the kill switch read, in that order
    for i, entry in enumerate(run.world.log):
        if entry[0] == "write":
            assert run.world.log[i - 1][0] == "kill_switch" and run.world.log[i - 2] == ("lease", "renewed")
    assert run.world.log[-1] == ("lease", "released")
    assert run.result["lease"] == "released" and run.done["lease"] == "released"  # as it ended, not "taken"
    assert [p for p, _t in run.done["phases"]] == ["lease", "list", "read-before", "stand-down", "canary",
                                                   "waves", "waves", "final-verify", "deployed"]


async def test_json_summary_and_done_come_from_one_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    world = World()
    run = await go(tmp_path, world=world, tenants=FakeTenants(world, stuck=["delta"]), max_stragglers=1)
    done = {k: v for k, v in run.done.items() if k not in ("ts", "event", "result")}
    assert {k: v for k, v in run.result.items() if k not in ("ok", "ledger")} == done
    assert run.done["result"] == run.result  # what `fleetgate report` renders is what was printed
    assert run.result["stragglers"] == ["delta"]
    text = summary.read_text()
    assert "**Stragglers within the budget (1)**: delta" in text and "| delta |" in text


async def test_nothing_to_do_and_dry_run_have_their_words(tmp_path: Path) -> None:
    world = World(shas=dict.fromkeys(SLUGS, NEW))
    run = await go(tmp_path, world=world)
    assert (run.code, run.done["outcome"], writes(world)) == (0, "nothing-to-do", [])
    dry = await go(tmp_path, ledger_name="dry.jsonl", dry_run=True)
    assert (dry.code, dry.done["outcome"], dry.done["verified"]) == (0, "dry-run", False)
    assert dry.world.writes == []
    assert all(t["verdict"] == "not attempted" for t in dry.done["tenants"].values())


async def test_a_failed_canary_leaves_later_waves_not_started_and_tenants_not_attempted(tmp_path: Path) -> None:
    world = World()
    run = await go(tmp_path, world=world, tenants=FakeTenants(world, stuck=["alpha"]), max_stragglers=5)
    assert run.code == 1 and run.done["outcome"] == "failed"
    assert [w["status"] for w in run.done["waves"]] == ["failed", "not started", "not started"]
    assert run.done["tenants"]["echo"] == {"before": OLD, "after": OLD, "verdict": "not attempted"}
    assert run.done["tenants"]["alpha"]["verdict"] == "stale"
    assert writes(world) == [["alpha"]]


# ---------------------------------------------------------------------------------------- the guard
async def test_kill_switch_engaged_at_a_502_retry_means_no_further_write_and_exit_4(tmp_path: Path) -> None:
    # wave 1's call answers 502 after its first tenant; the switch engages before the retry (read #3)
    world = World()
    cp = FakeCP(world, script=lambda tag, slugs: CPUnavailable("CP: HTTP 502", 502) if slugs[0] == "bravo" else None)
    repo = FakeRepo(world, switch=lambda n: "engaged by on-call" if n >= 3 else None)
    run = await go(tmp_path, world=world, cp=cp, repo=repo)
    assert run.code == int(ExitCode.HALTED_MIXED) and run.done["outcome"] == "halted"
    assert writes(world) == [["alpha"], ["bravo", "charlie"]]  # the retry was never sent
    assert repo.reads == 3
    assert "the fleet is mixed" in run.done["message"]
    assert run.world.log[-1] == ("lease", "released")


async def test_a_502_retry_resends_only_the_tenants_not_yet_on_the_sha_each_through_the_guard(tmp_path: Path) -> None:
    world = World()
    failures = iter([CPUnavailable("CP: HTTP 502", 502), TimedOut("CP: no answer within 600s")])

    def script(tag: str, slugs: list[str]) -> Exception | None:
        return next(failures, None) if slugs[0] in ("bravo", "charlie") else None

    repo = FakeRepo(world)
    run = await go(tmp_path, world=world, cp=FakeCP(world, script=script), repo=repo)
    assert run.code == 0, run.stderr
    assert writes(world) == [["alpha"], ["bravo", "charlie"], ["charlie"], ["delta", "echo"]]
    assert repo.reads == 4  # one kill-switch read per call, retries included
    assert run.done["waves"][1]["sent"] == [["bravo", "charlie"], ["charlie"]]


async def test_wave_retries_are_bounded_then_the_wave_fails(tmp_path: Path) -> None:
    world = World()
    cp = FakeCP(world, partial=False,
                script=lambda tag, slugs: CPUnavailable("CP: HTTP 503", 503) if "delta" in slugs else None)
    run = await go(tmp_path, world=world, cp=cp)
    assert run.code == 1 and run.done["outcome"] == "failed" and "HTTP 503 after 4 attempts" in run.done["message"]
    assert writes(world)[2:] == [["delta", "echo"]] * 4  # 1 + 3 retries, each through the guard


async def test_a_refusal_is_not_retried(tmp_path: Path) -> None:
    world = World()
    cp = FakeCP(world, script=lambda tag, slugs: Failed("CP: ok: false — no") if slugs == ["alpha"] else None)
    run = await go(tmp_path, world=world, cp=cp)
    assert run.code == 1 and writes(world) == [["alpha"]]


async def test_rollback_writes_pass_the_guard_and_stop_for_an_engaged_switch(tmp_path: Path) -> None:
    # wave 2 (delta, echo) fails verification; the switch engages before the rollback's first write
    world = World()
    repo = FakeRepo(world, switch=lambda n: "frozen" if n >= 4 else None)
    run = await go(tmp_path, world=world, repo=repo, tenants=FakeTenants(world, stuck=["delta", "echo"]),
                   on_failure="rollback")
    assert run.code == int(ExitCode.HALTED_MIXED) and run.done["outcome"] == "halted"
    assert writes(world) == [["alpha"], ["bravo", "charlie"], ["delta", "echo"]]  # no rollback write
    rollback = run.done["rollback"]
    assert rollback["verified"] is False and "kill switch" in rollback["stopped"]
    assert {"alpha", "bravo", "charlie"} <= set(rollback["not_restored"]) and rollback["restored"] == []
    assert world.shas["alpha"] == NEW  # the mixed fleet is reported, not hidden
    assert run.done["drift"] == {NEW: 3, OLD: 2}


async def test_a_rollback_that_completes_is_rolled_back(tmp_path: Path) -> None:
    world = World()
    run = await go(tmp_path, world=world, tenants=FakeTenants(world, stuck=["delta"]), on_failure="rollback")
    assert run.code == 1 and run.done["outcome"] == "rolled-back"
    assert {s: sha for s, sha in world.shas.items() if s != "delta"} == dict.fromkeys(set(SLUGS) - {"delta"}, OLD)
    assert writes(world)[-3:] == [["alpha", "bravo"], ["charlie"], ["echo"]]  # delta never moved


async def test_the_lease_must_outlive_the_cp_call(tmp_path: Path) -> None:
    run = await go(tmp_path, lease_ttl=150, cp_timeout=300)
    assert run.code == 1 and "--cp-timeout" in run.done["message"]
    assert run.world.writes == [] and run.done["outcome"] == "failed"


# ---------------------------------------------------------------------------------------- final verify
async def test_a_written_tenant_missing_from_the_final_listing_is_a_named_straggler(tmp_path: Path) -> None:
    world = World()
    cp = FakeCP(world, final_listing=[s for s in SLUGS if s != "charlie"])
    run = await go(tmp_path, world=world, cp=cp, max_stragglers=1)
    assert run.code == 0 and run.done["stragglers"] == ["charlie"]
    assert run.done["tenants"]["charlie"]["verdict"] == "not listed"
    assert "charlie" in run.done["message"]


async def test_a_written_tenant_missing_from_the_final_listing_fails_without_budget(tmp_path: Path) -> None:
    world = World()
    cp = FakeCP(world, final_listing=[s for s in SLUGS if s != "charlie"])
    run = await go(tmp_path, world=world, cp=cp, max_stragglers=0)
    assert run.code == 1 and run.done["outcome"] == "failed" and "charlie" in run.done["message"]


# ---------------------------------------------------------------------------------------- crashes
class BrokenTenants(FakeTenants):
    async def read(self, slugs: Sequence[str], expected: str | None) -> dict[str, Reading]:
        async with anyio.create_task_group() as tg:  # how a real reader fails: inside a task group
            async def boom() -> None:
                raise RecursionError("maximum recursion depth exceeded")

            tg.start_soon(boom)
        return {}


async def test_an_exception_group_is_one_line_and_one_done(tmp_path: Path) -> None:
    world = World()
    run = await go(tmp_path, world=world, tenants=BrokenTenants(world))
    assert run.code == 1 and run.done["outcome"] == "failed"
    assert run.done["message"].startswith("unexpected error: RecursionError")
    assert "\n" not in run.done["message"] and run.world.log[-1] == ("lease", "released")


class FullDiskLedger(Ledger):
    def __init__(self, path: Path, run_id: str, fail_after: int) -> None:
        super().__init__(path, run_id)
        self.left = fail_after

    def record(self, event: str, **facts: Any) -> dict[str, Any]:
        self.left -= 1
        if self.left < 0:
            raise OSError(28, "No space left on device", str(self.path))
        return super().record(event, **facts)


async def test_a_full_disk_mid_run_is_one_line_exit_1_and_the_json_still_prints(tmp_path: Path) -> None:
    s = settings_for(tmp_path)
    ledger = FullDiskLedger(Path(s.ledger), "r-1", fail_after=4)
    run = await go(tmp_path, ledger=ledger)
    assert run.code == 1
    assert "No space left on device" in run.result["message"] and run.result["ok"] is False
    assert run.world.log[-1] == ("lease", "released")


async def test_cancelled_from_outside_still_writes_one_interrupted_done(tmp_path: Path) -> None:
    world = World()
    s = settings_for(tmp_path, soak_seconds=3600)
    state = new_state(s, verb="rollout", manual=False)
    ledger = Ledger(s.ledger, state.run_id)

    class SlowClock(FakeClock):
        async def sleep(self, seconds: float) -> None:
            await anyio.sleep_forever()

    ports = Ports(cp=FakeCP(world), repo=FakeRepo(world), tenants=FakeTenants(world), lease=FakeLease(world),
                  clock=SlowClock())
    out = Output(json_mode=True, stream=io.StringIO(), stdout=io.StringIO())
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(drive, s, out, ports, state, ledger)
            while not world.writes:
                await anyio.lowlevel.checkpoint()
            scope.cancel()
    (done,) = [e for e in read_ledger(s.ledger) if e["event"] == "done"]
    assert done["outcome"] == "interrupted" and done["exit_code"] == 1
    assert world.log[-1] == ("lease", "released")
    assert json.dumps(done)  # a complete record
