"""`pip install .` (no extras) is enough for every module of the installed CLI.

A fresh venv gets the package from a real `pip install` of a copy of this checkout, so a dependency that is
imported but not declared (rich once arrived only with dagger-io) fails here. Each module is imported, and
so is every name the package imports anywhere — inside functions and `TYPE_CHECKING` blocks too, since
those are what break on a terminal but not in a pipe.

`ci` is the Dagger module: every one of its files imports `dagger`, which the Dagger runtime installs (the
`dagger` extra / dependency group) and the CLI never needs. Its modules are imported too, and the one
missing name they may report is `dagger`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INSTALL_TIMEOUT = 900.0  # a hang guard for pip on a busy machine, not a speed goal
NOT_COPIED = shutil.ignore_patterns(".venv*", ".git", "build", "dist", "*.egg-info", "__pycache__",
                                    ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis")

# Run by the fresh venv's interpreter in isolated mode (-I: no checkout on sys.path, no PYTHON* env).
PROBE = r'''
import ast, importlib, importlib.util, json, os, sys
report = {"files": {}, "modules": {}, "names": {}}
names = set()
for top in ("pipelines", "ci"):
    folder = importlib.util.find_spec(top).submodule_search_locations[0]  # finds, does not import
    report["files"][top] = folder
    for directory, _, files in sorted(os.walk(folder)):
        for file in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(directory, file)
            parts = os.path.relpath(path, os.path.dirname(folder))[:-3].split(os.sep)
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            with open(path, encoding="utf-8") as handle:
                tree = ast.parse(handle.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module)
            report["modules"][module] = None
for module in report["modules"]:
    if module.endswith(".__main__"):
        continue  # running it is the CLI; its imports are checked with the names below
    try:
        importlib.import_module(module)
    except ImportError as error:
        report["modules"][module] = f"{type(error).__name__}: {error.name or error}"
for name in sorted(names):
    try:
        importlib.import_module(name)
        report["names"][name] = None
    except ImportError as error:
        report["names"][name] = f"{type(error).__name__}: {error.name or error}"
print(json.dumps(report))
'''


def fresh_env(home: Path) -> dict[str, str]:
    """The caller's PATH and pip configuration, nothing of this checkout or its venv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["HOME"] = str(home)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with nothing but `pip install .` of a copy of the checkout; its python."""
    base = tmp_path_factory.mktemp("install")
    source = base / "src"
    shutil.copytree(ROOT, source, ignore=NOT_COPIED)
    venv.create(base / "venv", with_pip=True, symlinks=True)
    python = base / "venv" / "bin" / "python"
    home = base / "home"
    home.mkdir()
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "."], cwd=source, env=fresh_env(home),
                          capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    return python


@pytest.fixture(scope="module")
def probe(installed: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str | None]]:
    cwd = tmp_path_factory.mktemp("elsewhere")
    proc = subprocess.run([str(installed), "-I", "-c", PROBE], cwd=cwd, env=fresh_env(cwd),
                          capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    report: dict[str, dict[str, str | None]] = json.loads(proc.stdout)
    return report


def test_the_probe_reads_the_installed_package_not_the_checkout(probe: dict[str, dict[str, str | None]],
                                                                installed: Path) -> None:
    venv_root = installed.parent.parent
    for folder in probe["files"].values():
        assert folder is not None and Path(folder).is_relative_to(venv_root)
    assert "pipelines.cli" in probe["modules"] and "pipelines.sandbox.world" in probe["modules"]


def test_every_pipelines_module_imports_with_only_the_declared_dependencies(
        probe: dict[str, dict[str, str | None]]) -> None:
    failed = {m: e for m, e in probe["modules"].items() if m.startswith("pipelines") and e is not None}
    assert failed == {}


def test_every_name_the_package_imports_anywhere_is_installed(probe: dict[str, dict[str, str | None]]) -> None:
    failed = {n: e for n, e in probe["names"].items() if e is not None and n.split(".")[0] not in {"dagger", "ci"}}
    assert failed == {}
    assert "rich.console" in probe["names"]  # imported inside a function: the terminal path


def test_ci_modules_lack_only_dagger(probe: dict[str, dict[str, str | None]]) -> None:
    ci = {m: e for m, e in probe["modules"].items() if m == "ci" or m.startswith("ci.")}
    assert ci, "the ci package is installed with the CLI"
    assert {e for e in ci.values() if e is not None} <= {"ModuleNotFoundError: dagger"}


def test_the_installed_cli_runs_a_sandbox_deploy_under_a_terminal(installed: Path, tmp_path: Path) -> None:
    """README's first command, rich path: `script` gives it a pseudo-terminal, as a person's shell would."""
    script = shutil.which("script")
    assert script is not None, "util-linux `script` is needed (tests/system-packages.txt)"
    fleetgate = installed.parent / "fleetgate"
    env = fresh_env(tmp_path)
    env.pop("NO_COLOR", None)
    env["TERM"] = "xterm-256color"
    proc = subprocess.run([script, "-qec", f"{fleetgate} deploy-production --sandbox", "/dev/null"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "Traceback" not in proc.stdout
    assert (tmp_path / "fleetgate-sandbox-ledger.jsonl").exists()
