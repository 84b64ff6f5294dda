"""tests/system-packages.sh installs exactly the missing system packages, through apt-get, and only then."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "system-packages.sh"


def run(tmp_path: Path, listing: str, *, apt: bool = True) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """The script with a stand-in `apt-get` (it logs its arguments) first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "apt.log"
    if apt:
        stub = bin_dir / "apt-get"
        stub.write_text(f'#!/bin/sh\necho "$DEBIAN_FRONTEND $*" >> {log}\n', encoding="utf-8")
        stub.chmod(0o755)
        sudo = bin_dir / "sudo"  # when the tests do not run as root
        sudo.write_text('#!/bin/sh\nexec "$@"\n', encoding="utf-8")
        sudo.chmod(0o755)
    for tool in ("sh", "env", "id", "dirname"):  # what the script itself runs, and nothing else from PATH
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    (tmp_path / "list.txt").write_text(listing, encoding="utf-8")
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    proc = subprocess.run(["sh", str(SCRIPT), str(tmp_path / "list.txt")], env=env, capture_output=True, text=True,
                          timeout=60)
    return proc, log.read_text(encoding="utf-8").splitlines() if log.exists() else []


def test_only_the_missing_packages_are_installed(tmp_path: Path) -> None:
    proc, calls = run(tmp_path, "# comment\n\nsh   shell-pkg  # present\nno-such-cmd-fg  its-pkg\nother-fg pkg2\n")
    assert proc.returncode == 0, proc.stderr
    assert calls == ["noninteractive update -qq",
                     "noninteractive install -y -qq --no-install-recommends its-pkg pkg2"]
    assert "its-pkg pkg2" in proc.stderr  # says what it installs


def test_nothing_missing_means_nothing_run(tmp_path: Path) -> None:
    proc, calls = run(tmp_path, "sh shell-pkg\n")
    assert (proc.returncode, calls, proc.stderr) == (0, [], "")


def test_without_apt_get_it_names_the_packages_and_fails(tmp_path: Path) -> None:
    proc, calls = run(tmp_path, "no-such-cmd-fg its-pkg\n", apt=False)
    assert proc.returncode == 1 and calls == []
    assert "its-pkg" in proc.stderr


def test_the_repository_list_names_every_binary_the_test_helpers_start() -> None:
    rows = [line.split()[:2] for line in (ROOT / "tests" / "system-packages.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert {command for command, _ in rows} >= {"docker-registry", "openssl", "prometheus", "chromium", "script"}
    assert os.access(SCRIPT, os.X_OK)
