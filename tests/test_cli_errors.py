"""The CLI's last line when a verb fails on the machine itself (not on a remote answer)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pipelines.cli import run_verb


def test_an_os_error_mid_run_is_one_line_and_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "failing_verb.py").write_text(
        "async def run(settings, out, **extra):\n"
        "    raise OSError(28, 'No space left on device', 'fleetgate-ledger.jsonl')\n",
        encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    from failing_verb import run  # type: ignore[import-not-found]

    code = run_verb("verify", {"only": ("alpha",)}, env={"GITHUB_SHA": "a" * 40, "CP_ADMIN_API_TOKEN": "t-123456"},
                    func=run)
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().splitlines() == ["✘ fleetgate verify: No space left on device: fleetgate-ledger.jsonl"]
    assert "Traceback" not in err
    sys.modules.pop("failing_verb", None)
