"""runbooks/guarantees.md stays true: every test and invariant it names exists."""

from __future__ import annotations

import re
from pathlib import Path

from faults import harness, test_fault_examples, test_fault_schedules

DOC = Path(__file__).resolve().parents[2] / "runbooks" / "guarantees.md"


def test_every_test_the_guarantees_name_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    named = set(re.findall(r"`(?:[\w/.]+::)?(test_\w+)`", text))
    existing = {n for m in (test_fault_examples, test_fault_schedules) for n in dir(m) if n.startswith("test_")}
    assert named, "the guarantees name no test"
    assert named <= existing, f"named but missing: {sorted(named - existing)}"
    for invariant in re.findall(r"`harness\.(\w+)`", text):
        assert callable(getattr(harness, invariant, None)), invariant
    assert "does NOT guarantee" in text


def test_the_readme_links_the_guarantees() -> None:
    assert "runbooks/guarantees.md" in (DOC.parents[1] / "README.md").read_text(encoding="utf-8")
