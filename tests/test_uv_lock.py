"""uv.lock (what the Dagger Python runtime installs the module from) is in sync with pyproject.toml.

Checked twice, neither needing an index nor a uv cache (a fresh machine has neither):
- `lock_drift` compares what pyproject.toml declares (dependencies, extras, dependency groups, Python)
  with what uv.lock recorded of it, and that every declared name was resolved. A stale lock fails here
  with the difference spelled out.
- `uv lock --check --offline` with an empty cache: when the lock matches, uv validates it without
  resolving. (When it does not match, uv would have to resolve, which offline and uncached it cannot —
  that is why the difference itself is computed by `lock_drift`, not read from uv's message.)
Refresh with `uv lock` (or `python -m uv lock`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
UV = [sys.executable, "-m", "uv"]  # the `uv` of the test extra, whatever is on PATH

Row = tuple[str, str, str]  # name, specifier, marker


def _declared(requirement: str, extra: str | None = None) -> Row:
    parsed = Requirement(requirement)
    markers = [str(parsed.marker)] if parsed.marker else []
    if extra is not None:
        markers.append(f"extra == '{canonicalize_name(extra)}'")
    return canonicalize_name(parsed.name), str(parsed.specifier), " and ".join(markers)


def _locked(entry: dict[str, Any]) -> Row:
    return (canonicalize_name(entry["name"]), str(SpecifierSet(entry.get("specifier", ""))), entry.get("marker", ""))


def lock_drift(folder: Path) -> list[str]:
    """Every way uv.lock disagrees with pyproject.toml in `folder`; empty when in sync."""
    project = tomllib.loads((folder / "pyproject.toml").read_text(encoding="utf-8"))
    lock = tomllib.loads((folder / "uv.lock").read_text(encoding="utf-8"))
    name = canonicalize_name(project["project"]["name"])
    packages = {canonicalize_name(p["name"]): p for p in lock["package"]}
    if name not in packages:
        return [f"{name} is not in uv.lock"]
    metadata = packages[name].get("metadata", {})
    drift: list[str] = []

    def compare(what: str, declared: set[Row], locked: set[Row]) -> None:
        drift.extend(f"{what}: declared, not locked: {row}" for row in sorted(declared - locked))
        drift.extend(f"{what}: locked, no longer declared: {row}" for row in sorted(locked - declared))

    extras = project["project"].get("optional-dependencies", {})
    declared_dist = {_declared(r) for r in project["project"].get("dependencies", [])}
    declared_dist |= {_declared(r, extra) for extra, rows in extras.items() for r in rows}
    compare("requires-dist", declared_dist, {_locked(e) for e in metadata.get("requires-dist", [])})
    compare("extras", {(canonicalize_name(e), "", "") for e in extras},
            {(canonicalize_name(e), "", "") for e in metadata.get("provides-extras", [])})
    groups = project.get("dependency-groups", {})
    locked_groups = metadata.get("requires-dev", {})
    for group in sorted(set(groups) | set(locked_groups)):
        compare(f"group {group}", {_declared(r) for r in groups.get(group, [])},
                {_locked(e) for e in locked_groups.get(group, [])})
    if lock.get("requires-python") != project["project"].get("requires-python"):
        drift.append(f"requires-python: lock {lock.get('requires-python')!r}, "
                     f"pyproject {project['project'].get('requires-python')!r}")
    unresolved = {row[0] for row in declared_dist} - set(packages)
    drift.extend(f"declared, never resolved: {n}" for n in sorted(unresolved))
    return drift


def uv_lock_check(folder: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UV_CACHE_DIR": str(cache), "UV_NO_CONFIG": "1"}
    return subprocess.run([*UV, "lock", "--check", "--offline"], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=120)


def copy_project(into: Path, edit: tuple[str, str] | None = None) -> Path:
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, into / name)
    if edit is not None:
        pyproject = (into / "pyproject.toml").read_text(encoding="utf-8")
        edited = pyproject.replace(*edit, 1)
        assert edited != pyproject
        (into / "pyproject.toml").write_text(edited, encoding="utf-8")
    return into


def test_uv_lock_is_in_sync_with_pyproject() -> None:
    assert lock_drift(ROOT) == [], "uv.lock is stale: run `uv lock`"


def test_uv_accepts_the_lock_with_an_empty_cache_and_no_index(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    proc = uv_lock_check(copy_project(tmp_path), tmp_path / "cache")
    assert proc.returncode == 0, f"uv.lock is stale: run `uv lock`\n{proc.stderr}"


def test_a_dropped_dependency_is_drift(tmp_path: Path) -> None:
    folder = copy_project(tmp_path, ('  "types-PyYAML",\n', ""))
    assert lock_drift(folder) == [
        "requires-dist: locked, no longer declared: ('types-pyyaml', '', \"extra == 'test'\")"]
    (tmp_path / "cache").mkdir()
    assert uv_lock_check(folder, tmp_path / "cache").returncode != 0


def test_a_new_dependency_is_drift_and_unresolved(tmp_path: Path) -> None:
    folder = copy_project(tmp_path, ('  "anyio>=4.4",\n', '  "anyio>=4.4",\n  "Some_Package>=1",\n'))
    assert lock_drift(folder) == ["requires-dist: declared, not locked: ('some-package', '>=1', '')",
                                  "declared, never resolved: some-package"]


def test_a_changed_pin_group_or_python_is_drift(tmp_path: Path) -> None:
    group = 'dagger = ["dagger-io==0.21.11"]\n\n[tool.uv]'
    pin = copy_project(tmp_path, (group, group.replace("0.21.11", "0.22.0")))
    assert [line.split(":")[0] for line in lock_drift(pin)] == ["group dagger", "group dagger"]
    python = copy_project(tmp_path, ('requires-python = ">=3.11"', 'requires-python = ">=3.12"'))
    assert [line.split(":")[0] for line in lock_drift(python)] == ["requires-python"]


def test_the_lock_resolves_the_module_environment_from_pypi() -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
    packages = {p["name"]: p for p in lock["package"]}
    root = packages["fleetgate"]
    assert [d["name"] for d in root["dev-dependencies"]["dagger"]] == ["dagger-io"]
    # From the registry, not a vendored ./sdk: the runtime's `uv sync` gets the pinned release.
    assert packages["dagger-io"]["source"] == {"registry": "https://pypi.org/simple"}
