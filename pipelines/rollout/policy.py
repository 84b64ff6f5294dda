"""The rollout's decisions as pure functions (no I/O, no clock): unit-tested without sockets.

Which failures roll back (with `--on-failure rollback`), and why:
- ROLLED BACK: a wave that fails verification (the canary not verified, or more unverified tenants
  than the straggler budget has left), a wave's CP call that fails for good (refused, `ok: false`,
  502/503/504 or timeouts after the retries), a soak-watch regression or analysis over the budget,
  an approval that was refused or never came, and a final verify over the budget. These are "the
  release is bad, unwanted or did not land": going back is what the setting asks for, and the fleet
  is still ours to write (lease held, switch off).
- NOT rolled back: the kill switch (engaged or unreadable: the switch means "stop writing", and the
  rollback writes pass the same guard, so they could not be made anyway), a lost lease (another run
  may be writing now: writing back would interleave with it), an interruption (SIGTERM/SIGINT: the
  runner is going away; a re-run finishes the work), and any failure before the first write
  (nothing to go back from).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from pipelines.errors import ExitCode
from pipelines.rollout.phase import Phase
from pipelines.settings import SHA_RE
from pipelines.verify import VERIFIED, Reading


class Failure(Enum):
    """Why a run failed, as far as the rollback decision cares."""

    WAVE_UNVERIFIED = "wave unverified"
    CANARY_UNVERIFIED = "canary unverified"
    CP_FAILED = "cp failed"
    SOAK_REGRESSED = "soak regressed"
    APPROVAL = "approval"  # rejected, or no answer within --approval-timeout
    FINAL_VERIFY = "final verify"
    OTHER = "other"  # kill switch unreadable, lease lost, a listing or read that failed, unexpected


ROLLS_BACK = frozenset({Failure.WAVE_UNVERIFIED, Failure.CANARY_UNVERIFIED, Failure.CP_FAILED,
                        Failure.SOAK_REGRESSED, Failure.FINAL_VERIFY, Failure.APPROVAL})


def rolls_back(failure: Failure, *, on_failure: str, written: Sequence[str]) -> bool:
    """Roll back only what this run wrote, only for the failures named in the module docstring."""
    return on_failure == "rollback" and bool(written) and failure in ROLLS_BACK


def normal_sha(seen: str | None) -> str | None:
    """A SHA a tenant reports, lower-cased when it is one (a tenant may report upper case)."""
    if seen is None:
        return None
    low = seen.strip().lower()
    return low if SHA_RE.match(low) else None


def stand_down_candidates(sha: str, before: Mapping[str, Reading]) -> dict[str, list[str]]:
    """Tenants running another valid SHA, by that SHA: each may be a descendant (asked of Gitea)."""
    newer: dict[str, list[str]] = {}
    for slug, reading in sorted(before.items()):
        seen = normal_sha(reading.seen)
        if seen is not None and seen != sha.lower():
            newer.setdefault(seen, []).append(slug)
    return newer


def head_stands_down(sha: str, head: str, head_is_descendant: bool, not_green: Sequence[str]) -> bool:
    """The branch head stands us down when it is a newer descendant whose required contexts are all green."""
    return head.lower() != sha.lower() and head_is_descendant and not not_green


def plan_slices(todo: Sequence[str], canary: str | None, batch_size: int) -> list[tuple[list[str], bool]]:
    """(slugs, is_canary): the canary alone when it still needs the SHA, then `batch_size` at a time."""
    slices: list[tuple[list[str], bool]] = []
    if canary is not None and canary in todo:
        slices.append(([canary], True))
    rest = [s for s in todo if s != canary]
    slices += [(list(rest[i:i + batch_size]), False) for i in range(0, len(rest), batch_size)]
    return slices


@dataclass(frozen=True)
class WaveJudgement:
    ok: bool
    stragglers: list[str]  # the wave's unverified tenants (named whether the wave passes or not)
    reason: str  # why it failed; empty when ok


def judge_wave(slugs: Sequence[str], verified: Sequence[str], *, canary: bool, stragglers_so_far: int,
               max_stragglers: int) -> WaveJudgement:
    """A wave passes when all its tenants verify, or its unverified fit the budget that is left.
    The canary is never a straggler: an unverified canary fails whatever the budget."""
    done = set(verified)
    unverified = [s for s in slugs if s not in done]
    if not unverified:
        return WaveJudgement(True, [], "")
    if canary:
        return WaveJudgement(False, unverified,
                             "canary did not verify (the canary must, whatever --max-stragglers)")
    left = max_stragglers - stragglers_so_far
    if len(unverified) > left:
        return WaveJudgement(False, unverified, f"{len(unverified)} unverified tenant(s), {max(left, 0)} "
                                                "straggler(s) left in the budget")
    return WaveJudgement(True, unverified, "")


def final_judgement(unverified: Sequence[str], max_stragglers: int) -> bool:
    """The whole fleet at the end: unverified (incl. written tenants missing from the listing) within budget."""
    return len(unverified) <= max_stragglers


def still_needed(slugs: Sequence[str], readings: Mapping[str, Reading]) -> list[str]:
    """The retry decision's slugs: the wave's tenants not yet reporting the SHA, in wave order.
    A retry never widens the wave."""
    return [s for s in slugs if s not in readings or readings[s].verdict != VERIFIED]


def ending(*, error_code: ExitCode | None, interrupted: bool, dry_run: bool, waves: int,
           rollback_verified: bool | None) -> tuple[Phase, ExitCode]:
    """The terminal phase (= the `done` outcome word) and the exit code of a run that ended.

    `error_code`: the exit code of the error that ended it (None: it ran to its end);
    `rollback_verified`: None when no rollback ran, else whether every tenant went back, verified.
    """
    if interrupted:
        return Phase.INTERRUPTED, ExitCode.FAILED
    if error_code is None:
        phase = Phase.DRY_RUN if dry_run else (Phase.NOTHING_TO_DO if waves == 0 else Phase.DONE)
        return phase, ExitCode.OK
    by_code = {ExitCode.DISABLED: Phase.DISABLED, ExitCode.HALTED_MIXED: Phase.HALTED,
               ExitCode.STOOD_DOWN: Phase.STOOD_DOWN}
    if error_code in by_code:
        return by_code[error_code], error_code
    if rollback_verified:
        return Phase.ROLLED_BACK, ExitCode.FAILED
    return Phase.FAILED, error_code if error_code != ExitCode.OK else ExitCode.FAILED


def kill_switch_stop(*, written: Sequence[str]) -> ExitCode:
    """An engaged switch at a guard: 4 once anything was written (the fleet is mixed), else 3."""
    return ExitCode.HALTED_MIXED if written else ExitCode.DISABLED
