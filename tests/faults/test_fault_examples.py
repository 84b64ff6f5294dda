"""Named fault cases, one per class of issue 8 where a schedule is unlikely to hit it by chance, and a
happy path that proves the fakes can be deployed through at all (else the invariants are vacuous)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from faults.fakes import CONTEXT, Fakes, World
from faults.harness import Case, check, run_in_process, run_subprocess, writes

OLD, TARGET, NEWER = "1" * 40, "2" * 40, "3" * 40
# Where an example asserts an outcome, tenants get a generous verify budget: on a loaded machine the
# schedules' 0.15 s may run out first (a verified tenant ends the wait at once; only stuck ones use it all).
ROOMY = {"PROD_AUTO_DEPLOY_VERIFY_TIMEOUT_SECONDS": "5"}


def world(**changes: object) -> World:
    base = World(tokens={"gitea": "giteaTOKENabc123def456", "cp": "cpTOKENxyz789uvw012"},
                 commits=[OLD, TARGET, NEWER], target=TARGET, tenants={"t0": OLD, "t1": OLD, "t2": OLD},
                 head=TARGET, statuses=[{"id": 1, "context": CONTEXT, "status": "success"}])
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def test_a_clean_fleet_deploys_and_verifies(fakes: Fakes, scratch: Path) -> None:
    run = run_in_process(fakes, Case(world(), env=ROOMY, proxies=False), scratch / "happy")
    check(run)
    assert run.code == 0, run.stderr
    assert run.world.tenants == {"t0": TARGET, "t1": TARGET, "t2": TARGET}
    assert [slugs for slugs, _ in writes(run)] == [["t0"], ["t1", "t2"]]


def test_a_502_on_a_wave_with_the_switch_engaged_is_not_written_again(fakes: Fakes, scratch: Path) -> None:
    # class 1: the CP did the canary, the gateway answered 502, the switch was engaged meanwhile
    w = world(faults={("cp_write", 0): "applied-502"}, flip_after_write=0)
    run = run_in_process(fakes, Case(w, env=ROOMY, proxies=False), scratch / "c1")
    check(run)
    assert len(writes(run)) == 1
    assert run.code == 4


def test_a_tenant_missing_from_the_second_listing_is_still_judged(fakes: Fakes, scratch: Path) -> None:
    # class 8: t2 is written, stays on the old SHA (a straggler within the budget of 1), and the final
    # listing no longer names it: exit 0 only with t2 named (I1), or a failure
    w = world(stuck={"t2"}, drop_from_second_listing="t2")
    case = Case(w, verb="deploy-production", env={**ROOMY, "PROD_AUTO_DEPLOY_MAX_STRAGGLERS": "1"}, max_stragglers=1,
                proxies=False)
    run = run_in_process(fakes, case, scratch / "c8a")
    check(run)
    assert run.code in (0, 1)
    assert "t2" in [slug for slugs, _ in writes(run) for slug in slugs]


def test_a_descendant_reported_in_upper_case_stands_down(fakes: Fakes, scratch: Path) -> None:
    # class 8: t1 runs a newer commit and says so in upper case
    w = world(tenants={"t0": OLD, "t1": NEWER, "t2": OLD}, upper_report={"t1"})
    run = run_in_process(fakes, Case(w, newer_running=["t1"], proxies=False), scratch / "c8b")
    check(run)
    assert run.code == 5
    assert writes(run) == []


def test_a_context_reported_failure_and_success_with_one_id_does_not_pass(fakes: Fakes, scratch: Path) -> None:
    w = world(statuses=[{"id": 5, "context": CONTEXT, "status": "failure"},
                        {"id": 5, "context": CONTEXT, "status": "success"}])
    run = run_in_process(fakes, Case(w, verb="deploy-production", proxies=False), scratch / "c8c")
    check(run)
    assert run.code == 1
    assert writes(run) == []


def test_a_toml_table_is_a_usage_error_not_a_real_deploy(fakes: Fakes, scratch: Path) -> None:
    run = run_in_process(fakes, Case(world(), config="[rollout]\ndry_run = true\n", expect_usage=True,
                                     expect_codes=frozenset({2}), proxies=False), scratch / "c8d")
    check(run)
    assert run.world.requests == []


def test_a_misspelt_repository_never_reads_the_switch_as_off(fakes: Fakes, scratch: Path) -> None:
    # class 3: every path of acme/flet is 404; the real repository's switch is engaged
    w = world(kill="true")
    run = run_in_process(fakes, Case(w, env={"GITHUB_REPOSITORY": "acme/flet"}, expect_codes=frozenset({1}),
                                     proxies=False), scratch / "c3")
    check(run)
    assert writes(run) == []


def test_a_twin_job_with_the_same_run_ids_does_not_share_the_lease(fakes: Fakes, scratch: Path) -> None:
    # class 7: the first job's lease is still held (same GITHUB_RUN_ID/ATTEMPT/JOB); the twin must wait
    first = run_in_process(fakes, Case(world(), env=ROOMY, proxies=False), scratch / "c7a")
    taken = [e[2] for e in first.world.log if e[0] == "lease_ok" and e[1] == "POST"]
    assert taken, first.stderr
    twin = world(lease=taken[0])
    run = run_in_process(fakes, Case(twin, expect_codes=frozenset({1}), proxies=False), scratch / "c7b")
    check(run)
    assert writes(run) == []
    assert run.world.lease == taken[0]  # the other job's lease is left alone


def test_a_dripping_tenant_is_abandoned_at_the_verify_deadline(fakes: Fakes, scratch: Path) -> None:
    # class 7: a /buildinfo answer that drips for ~5 s must be cut at the 0.15 s verify budget, not read
    # to its end byte by byte (each byte would reset a plain read timeout)
    w = world(tenant_faults={("t0", 0): "slow-drip"})
    run = run_in_process(fakes, Case(w, proxies=False), scratch / "c7c")
    fakes.quiesce()
    check(run)
    assert run.world.drip_abandoned >= 1


def test_tokens_echoed_in_every_form_reach_no_output(fakes: Fakes, scratch: Path) -> None:
    # class 6: the CP refuses with both tokens in raw, upper, base64, percent and zero-width-split form
    w = world(faults={("cp_write", 0): "refuse-echo"})
    run = run_in_process(fakes, Case(w, proxies=False), scratch / "c6")
    check(run)
    assert run.code == 1


@pytest.mark.parametrize("verb", ["assert-enabled", "plan"])
@pytest.mark.parametrize("where", ["misspelt repository", "base URL with /api/v1"])
def test_an_engaged_switch_behind_a_404_everywhere_is_never_off(fakes: Fakes, scratch: Path, verb: str,
                                                                 where: str) -> None:
    # class 3: on a wrong repository or base URL every path is 404; the real switch is engaged
    env = ({"GITHUB_REPOSITORY": "acme/flet"} if where == "misspelt repository"
           else {"GITEA_URL": fakes.url("gitea") + "/api/v1"})
    run = run_in_process(fakes, Case(world(kill="true"), verb=verb, env=env, expect_codes=frozenset({1, 2}),
                                     proxies=False), scratch / "c3v")
    check(run)


def test_the_live_switch_engaged_is_exit_3_for_assert_enabled(fakes: Fakes, scratch: Path) -> None:
    run = run_in_process(fakes, Case(world(kill="yes"), verb="assert-enabled", expect_codes=frozenset({3}),
                                     proxies=False), scratch / "ae")
    check(run)


def test_no_client_follows_the_environments_proxies(fakes: Fakes, scratch: Path) -> None:
    # class 6: every *_PROXY points at a recorder; nothing may reach it (I4), the run still deploys
    run = run_in_process(fakes, Case(world(), verb="deploy-production", env=ROOMY), scratch / "proxy")
    check(run)
    assert run.code == 0


PHASES = [("rollout", ("lease", 0)), ("rollout", ("cp_list", 0)), ("rollout", ("tenant", 0)),
          ("rollout", ("kill", 0)), ("rollout", ("cp_write", 0)), ("deploy-production", ("status", 0))]


@pytest.mark.parametrize(("verb", "at"), PHASES, ids=[f"{v}-{k}" for v, (k, _) in PHASES])
def test_sigterm_at_each_phase_releases_the_lease_and_writes_one_done(fakes: Fakes, scratch: Path, verb: str,
                                                                      at: tuple[str, int]) -> None:
    # class 4: the console script as a child process, SIGTERM delivered while a request of that phase waits
    w = world(signal_at=at, statuses=[{"id": 1, "context": CONTEXT, "status": "pending"}]
              if verb == "deploy-production" else [{"id": 1, "context": CONTEXT, "status": "success"}])
    case = Case(w, verb=verb, env={"CI_STATUS_TIMEOUT_SECONDS": "60", "CI_STATUS_POLL_INTERVAL_SECONDS": "0.05"},
                proxies=False)
    run = run_subprocess(fakes, case, scratch / "sig", sig=signal.SIGTERM)
    assert run.world.signalled
    check(run)
    assert run.code == 1
    assert run.done()[0]["outcome"] == "interrupted"
    assert run.world.lease is None, "the lease outlived the run"
