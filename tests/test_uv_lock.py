"""uv.lock (what the Dagger Python runtime installs the module from) is in sync with pyproject.toml.

`uv lock --check --offline` compares the lock with pyproject.toml without touching an index, so it
runs anywhere; a stale lock fails it. Refresh with `uv lock` (or `python -m uv lock`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UV = [sys.executable, "-m", "uv"]  # the `uv` of the test extra, whatever is on PATH


def uv_lock_check(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*UV, "lock", "--check", "--offline"], cwd=folder, capture_output=True, text=True, timeout=60)


def test_uv_lock_is_in_sync_with_pyproject() -> None:
    proc = uv_lock_check(ROOT)
    assert proc.returncode == 0, f"uv.lock is stale: run `uv lock`\n{proc.stderr}"


def test_the_check_fails_when_pyproject_changes_without_the_lock(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    pyproject = (tmp_path / "pyproject.toml").read_text(encoding="utf-8")
    # Dropping a dependency needs no index to notice, so this fails for staleness, not for being offline.
    edited = pyproject.replace('  "types-PyYAML",\n', "", 1)
    assert edited != pyproject
    (tmp_path / "pyproject.toml").write_text(edited, encoding="utf-8")
    proc = uv_lock_check(tmp_path)
    assert proc.returncode != 0
    assert "needs to be updated" in proc.stderr


def test_the_lock_resolves_the_module_environment_from_pypi() -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
    packages = {p["name"]: p for p in lock["package"]}
    root = packages["fleetgate"]
    assert [d["name"] for d in root["dev-dependencies"]["dagger"]] == ["dagger-io"]
    # From the registry, not a vendored ./sdk: the runtime's `uv sync` gets the pinned release.
    assert packages["dagger-io"]["source"] == {"registry": "https://pypi.org/simple"}
