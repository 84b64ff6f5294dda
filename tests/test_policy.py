"""The rollout's pure decisions (pipelines/rollout/policy.py): no sockets, no clock."""

from __future__ import annotations

import pytest

from pipelines.errors import ExitCode
from pipelines.rollout.phase import Phase
from pipelines.rollout.policy import (
    Failure,
    ending,
    final_judgement,
    head_stands_down,
    judge_wave,
    kill_switch_stop,
    rolls_back,
    stand_down_candidates,
    still_needed,
)
from pipelines.verify import Reading

SHA = "a" * 40
NEWER = "b" * 40


def reading(slug: str, seen: str | None, verdict: str = "stale") -> Reading:
    return Reading(slug=slug, expected=SHA, seen=seen, verdict=verdict, latency_ms=1.0, detail="")


def test_the_canary_is_never_a_straggler() -> None:
    judged = judge_wave(["c"], [], canary=True, stragglers_so_far=0, max_stragglers=10)
    assert not judged.ok and judged.stragglers == ["c"] and "canary" in judged.reason


def test_a_wave_within_the_budget_that_is_left_passes_naming_its_stragglers() -> None:
    judged = judge_wave(["a", "b", "c"], ["a", "c"], canary=False, stragglers_so_far=1, max_stragglers=2)
    assert judged.ok and judged.stragglers == ["b"]
    over = judge_wave(["a", "b", "c"], ["a"], canary=False, stragglers_so_far=1, max_stragglers=2)
    assert not over.ok and over.stragglers == ["b", "c"] and "1 straggler(s) left" in over.reason


def test_final_judgement_counts_every_unverified_tenant() -> None:
    assert final_judgement(["x"], 1) and not final_judgement(["x", "y"], 1)


def test_a_retry_resends_only_the_wave_tenants_not_yet_on_the_sha_in_wave_order() -> None:
    readings = {"a": reading("a", SHA, "verified"), "b": reading("b", None, "unreachable"),
                "intruder": reading("intruder", None)}
    assert still_needed(["c", "b", "a"], readings) == ["c", "b"]  # unread counts as needed; never widened


def test_an_upper_case_descendant_sha_is_a_stand_down_candidate() -> None:
    before = {"t1": reading("t1", NEWER.upper(), "invalid"), "t2": reading("t2", SHA, "verified"),
              "t3": reading("t3", None, "unreachable")}
    assert stand_down_candidates(SHA, before) == {NEWER: ["t1"]}


def test_the_branch_head_stands_down_only_when_newer_descendant_and_green() -> None:
    assert head_stands_down(SHA, NEWER, True, [])
    assert not head_stands_down(SHA, NEWER, True, ["ci"])
    assert not head_stands_down(SHA, NEWER, False, [])
    assert not head_stands_down(SHA, SHA.upper(), True, [])


@pytest.mark.parametrize("failure, rolls", [
    (Failure.WAVE_UNVERIFIED, True), (Failure.CANARY_UNVERIFIED, True), (Failure.CP_FAILED, True),
    (Failure.SOAK_REGRESSED, True), (Failure.FINAL_VERIFY, True), (Failure.OTHER, False),
])
def test_which_failures_roll_back(failure: Failure, rolls: bool) -> None:
    assert rolls_back(failure, on_failure="rollback", written=["a"]) is rolls
    assert rolls_back(failure, on_failure="halt", written=["a"]) is False
    assert rolls_back(failure, on_failure="rollback", written=[]) is False  # nothing to go back from


@pytest.mark.parametrize("kwargs, expected", [
    ({"error_code": None, "dry_run": False, "waves": 3}, (Phase.DONE, ExitCode.OK)),
    ({"error_code": None, "dry_run": False, "waves": 0}, (Phase.NOTHING_TO_DO, ExitCode.OK)),
    ({"error_code": None, "dry_run": True, "waves": 3}, (Phase.DRY_RUN, ExitCode.OK)),
    ({"error_code": ExitCode.DISABLED}, (Phase.DISABLED, ExitCode.DISABLED)),
    ({"error_code": ExitCode.HALTED_MIXED}, (Phase.HALTED, ExitCode.HALTED_MIXED)),
    ({"error_code": ExitCode.STOOD_DOWN}, (Phase.STOOD_DOWN, ExitCode.STOOD_DOWN)),
    ({"error_code": ExitCode.FAILED}, (Phase.FAILED, ExitCode.FAILED)),
    ({"error_code": ExitCode.FAILED, "rollback_verified": True}, (Phase.ROLLED_BACK, ExitCode.FAILED)),
    ({"error_code": ExitCode.FAILED, "rollback_verified": False}, (Phase.FAILED, ExitCode.FAILED)),
    ({"error_code": ExitCode.HALTED_MIXED, "rollback_verified": False}, (Phase.HALTED, ExitCode.HALTED_MIXED)),
    ({"error_code": None, "interrupted": True}, (Phase.INTERRUPTED, ExitCode.FAILED)),
])
def test_the_outcome_word_and_exit_code_of_an_ending(kwargs: dict[str, object], expected: tuple[Phase, ExitCode]
                                                     ) -> None:
    args: dict[str, object] = {"error_code": None, "interrupted": False, "dry_run": False, "waves": 1,
                               "rollback_verified": None, **kwargs}
    phase, code = ending(**args)  # type: ignore[arg-type]
    assert (phase, code) == expected and phase.terminal
    assert phase.value in {"deployed", "nothing-to-do", "dry-run", "disabled", "stood-down", "halted", "failed",
                           "rolled-back", "interrupted"}  # CONTRACT §5's words, nothing else


def test_an_engaged_switch_is_3_before_any_write_and_4_after() -> None:
    assert kill_switch_stop(written=[]) is ExitCode.DISABLED
    assert kill_switch_stop(written=["a"]) is ExitCode.HALTED_MIXED
