"""`fleetgate self-test` exits 0/1/2 (never a runner's 5) and names `--source` outside a checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.errors import ExitCode
from pipelines.selftest import fleetgate_code, is_checkout, run_self_test

ROOT = Path(__file__).resolve().parent.parent


def checkout(folder: Path) -> Path:
    (folder / "pyproject.toml").write_text('[project]\nname = "fleetgate"\n', encoding="utf-8")
    (folder / "tests").mkdir()
    return folder


@pytest.mark.parametrize("runner, ours", [(0, 0), (1, 1), (2, 2), (3, 1), (4, 2), (5, 2), (-9, 1), (137, 1)])
def test_a_runners_code_becomes_fleetgates(runner: int, ours: int) -> None:
    assert fleetgate_code(runner) == ours
    assert fleetgate_code(runner) != ExitCode.STOOD_DOWN


def test_pytests_no_tests_is_a_usage_error_naming_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    no_tests = [sys.executable, "-c", "raise SystemExit(5)"]
    assert run_self_test(checkout(tmp_path), run=[no_tests]) == 2
    assert "--source" in capsys.readouterr().err


def test_the_first_failure_wins_and_every_command_runs(tmp_path: Path) -> None:
    usage = [sys.executable, "-c", "raise SystemExit(4)"]
    failed = [sys.executable, "-c", "open('ran', 'w').close(); raise SystemExit(1)"]
    assert run_self_test(checkout(tmp_path), run=[usage, failed]) == 2
    assert (tmp_path / "ran").exists()


def test_outside_a_checkout_it_says_source_and_runs_nothing(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    marker = [sys.executable, "-c", "open('ran', 'w').close()"]
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "something-else"\n', encoding="utf-8")
    (tmp_path / "tests").mkdir()
    assert run_self_test(tmp_path, run=[marker]) == 2
    assert not (tmp_path / "ran").exists()
    assert "pass --source PATH" in capsys.readouterr().err
    assert is_checkout(ROOT)


def test_the_cli_outside_a_checkout_exits_2(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "pipelines", "self-test"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "not a fleetgate checkout" in proc.stderr and "--source" in proc.stderr
