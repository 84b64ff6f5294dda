"""Progress a person can follow, in a real rollout over the sandbox: wave k of n, the CP call and the
verify wait as lines, and slug lists cut for humans while the ledger keeps them whole."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from pipelines.ledger import read_ledger
from pipelines.output import Output
from pipelines.rollout import rollout
from pipelines.sandbox import serve
from pipelines.settings import resolve

pytestmark = pytest.mark.anyio


async def test_a_big_half_done_fleet_reads_as_waves_of_n_with_cut_lists(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    err = io.StringIO()
    async with serve("partially-deployed", tenants=40) as sb:
        settings = resolve("rollout", {"ledger": str(ledger), "soak_seconds": 0.01, "batch_size": 12},
                           {}, overlay=sb.overlay)
        result = await rollout(settings, Output(stream=err))
    assert result["exit_code"] == 0
    lines = err.getvalue().splitlines()
    skipped = next(line for line in lines if line.startswith("already on"))
    assert skipped.endswith("… and 10 more") and "skipped 20:" in skipped
    assert any("canary alpha already reports" in line for line in lines)  # skipped: no canary wave
    starts = [line for line in lines if ": start — " in line]
    assert len(starts) == 2
    assert starts[0].startswith("wave 1: start — ") and starts[0].endswith("… and 2 more (1 of 2)")  # 12 → 10
    assert starts[1].startswith("wave 2: start — ") and starts[1].endswith("(2 of 2)")
    assert any(line.startswith("wave 1 (1 of 2): CP call — ") for line in lines)
    verifying = [line for line in lines if line.startswith("wave 2 (2 of 2): verifying")]
    assert verifying[0].startswith("wave 2 (2 of 2): verifying — 0 of 8 verified — ")
    assert verifying[-1].startswith("wave 2 (2 of 2): verifying — 8 of 8 verified — ")
    # the ledger keeps every slug
    starts_logged = [e for e in read_ledger(ledger) if e["event"] == "wave_start"]
    assert [len(e["slugs"]) for e in starts_logged] == [12, 8]
