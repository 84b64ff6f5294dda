"""`fleetgate lint-workflows`: formats, exit codes, config, folders, and the real console script."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.lint.cli import main
from pipelines.lint.rules import ALL_RULES

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[2]
HUMAN_RE = re.compile(
    r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|warning)\[(?P<id>[A-Z]\d)\] .+$")


def run(capsys: pytest.CaptureFixture[str], *dirs: Path, **kwargs: object) -> tuple[int, str, str]:
    code = main(list(dirs), **kwargs)  # type: ignore[arg-type]
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """A folder with one fatal finding (G5) and one warning (G7)."""
    folder = tmp_path / "workflows"
    folder.mkdir()
    shutil.copy(FIXTURES / "G5" / "fail.yml", folder / "g5.yml")
    shutil.copy(FIXTURES / "G7" / "fail.yml", folder / "g7.yaml")
    (folder / "notes.txt").write_text("not a workflow: ignored")
    return folder


# --- exit codes ----------------------------------------------------------------------------------

def test_clean_folder_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, FIXTURES / "G1" / "pass.yml", FIXTURES / "P2" / "pass.yml")
    assert (code, out) == (0, "")
    assert "2 files, 0 errors, 0 warnings" in err


def test_warnings_only_exit_0_and_errors_exit_1(capsys: pytest.CaptureFixture[str], mixed: Path) -> None:
    code, out, _ = run(capsys, mixed / "g7.yaml")
    assert code == 0 and "warning[G7]" in out
    code, out, err = run(capsys, mixed)
    assert code == 1
    assert "2 files, 2 errors, 2 warnings" in err


def test_missing_folder_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, tmp_path / "nope")
    assert (code, out) == (2, "")
    assert err.strip() == f"fleetgate lint-workflows: {tmp_path / 'nope'}: no such folder"


def test_empty_folder_is_a_usage_error_unless_allowed(capsys: pytest.CaptureFixture[str],
                                                       tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("no workflows here")
    code, _, err = run(capsys, tmp_path)
    assert code == 2 and "--allow-empty" in err
    code, out, err = run(capsys, tmp_path, allow_empty=True)
    assert (code, out) == (0, "") and "0 files" in err


def test_default_folder_is_gitea_workflows(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys)
    assert code == 2 and ".gitea/workflows: no such folder" in err
    (tmp_path / ".gitea" / "workflows").mkdir(parents=True)
    shutil.copy(FIXTURES / "G3" / "fail.yml", tmp_path / ".gitea" / "workflows" / "ci.yml")
    code, out, _ = run(capsys)
    assert code == 1 and out.startswith(".gitea/workflows/ci.yml:2:7: error[G3] ")


def test_files_are_yml_and_yaml_in_sorted_order(capsys: pytest.CaptureFixture[str], mixed: Path) -> None:
    _, out, _ = run(capsys, mixed)
    files = [HUMAN_RE.match(line).group("file") for line in out.splitlines()]  # type: ignore[union-attr]
    assert files == sorted(files) and {Path(f).name for f in files} == {"g5.yml", "g7.yaml"}


def test_unparseable_yaml_is_a_finding_not_a_crash(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, FIXTURES / "L1" / "fail.yml")
    assert code == 1
    assert out.startswith(f"{FIXTURES / 'L1' / 'fail.yml'}:7:11: error[L1] not valid YAML")


@pytest.mark.parametrize(("version", "message"), [("abc", "expected MAJOR.MINOR"), ("1.18", "from 1.19 on")])
def test_bad_gitea_version_is_a_usage_error(capsys: pytest.CaptureFixture[str], version: str,
                                            message: str) -> None:
    code, out, err = run(capsys, FIXTURES / "G1" / "pass.yml", gitea_version=version)
    assert (code, out) == (2, "") and message in err


def test_unknown_format_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, FIXTURES / "G1" / "pass.yml", fmt="xml")[0] == 2


# --- formats -------------------------------------------------------------------------------------

def test_human_format(capsys: pytest.CaptureFixture[str], mixed: Path) -> None:
    _, out, _ = run(capsys, mixed)
    parsed = [HUMAN_RE.match(line) for line in out.splitlines()]
    assert all(parsed)
    assert [(m["id"], m["line"], m["col"], m["sev"]) for m in parsed if m] == [
        ("G5", "9", "15", "error"), ("G5", "11", "15", "error"),
        ("G7", "10", "20", "warning"), ("G7", "12", "24", "warning")]


def test_json_format(capsys: pytest.CaptureFixture[str], mixed: Path) -> None:
    code, out, _ = run(capsys, mixed, fmt="json")
    data = json.loads(out)
    assert code == 1 and data["ok"] is False
    assert (data["errors"], data["warnings"]) == (2, 2)
    assert [Path(f).name for f in data["files"]] == ["g5.yml", "g7.yaml"]
    first = data["findings"][0]
    assert set(first) == {"rule", "severity", "file", "line", "column", "message", "why"}
    assert (first["rule"], first["severity"], first["line"], first["column"]) == ("G5", "error", 9, 15)


def test_sarif_format_is_sarif_2_1_0(capsys: pytest.CaptureFixture[str], mixed: Path) -> None:
    # No SARIF schema package is installable from PyPI here, so the structure is asserted.
    _, out, _ = run(capsys, mixed, fmt="sarif")
    sarif = json.loads(out)
    assert sarif["version"] == "2.1.0" and "sarif-2.1.0" in sarif["$schema"]
    (run_,) = sarif["runs"]
    driver = run_["tool"]["driver"]
    assert driver["name"] and driver["version"]
    rule_ids = [r["id"] for r in driver["rules"]]
    assert rule_ids == [r.id for r in ALL_RULES]
    for rule in driver["rules"]:
        assert rule["shortDescription"]["text"] and rule["fullDescription"]["text"] and rule["help"]["text"]
        assert rule["defaultConfiguration"]["level"] in ("error", "warning")
    results = run_["results"]
    assert len(results) == 4
    for result in results:
        assert rule_ids[result["ruleIndex"]] == result["ruleId"]
        assert result["level"] in ("error", "warning") and result["message"]["text"]
        (location,) = result["locations"]
        physical = location["physicalLocation"]
        assert not physical["artifactLocation"]["uri"].startswith("./")
        assert set(physical["region"]) == {"startLine", "startColumn"}
    assert [(r["ruleId"], r["locations"][0]["physicalLocation"]["region"]["startLine"],
             r["locations"][0]["physicalLocation"]["region"]["startColumn"], r["level"])
            for r in results] == [
        ("G5", 9, 15, "error"), ("G5", 11, 15, "error"), ("G7", 10, 20, "warning"), ("G7", 12, 24, "warning")]


def test_github_format(capsys: pytest.CaptureFixture[str], mixed: Path) -> None:
    _, out, _ = run(capsys, mixed, fmt="github")
    lines = out.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith(
        f"::error file={mixed / 'g5.yml'},line=9,col=15,title=G5 subpath-action::uses: ")
    assert lines[2].startswith(f"::warning file={mixed / 'g7.yaml'},line=10,col=20,title=G7 github-api-url::")
    # workflow-command escaping: no raw newline, and ':' / ',' escaped in properties
    assert all(line.startswith("::") for line in lines)


def test_github_format_escapes_properties(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = tmp_path / "a,b:c"
    folder.mkdir()
    shutil.copy(FIXTURES / "G3" / "fail.yml", folder / "x.yml")
    _, out, _ = run(capsys, folder, fmt="github")
    assert "file=" + str(folder).replace(",", "%2C").replace(":", "%3A") + "/x.yml,line=2,col=7" in out


# --- config --------------------------------------------------------------------------------------

def test_config_disables_rules(capsys: pytest.CaptureFixture[str], mixed: Path, tmp_path: Path) -> None:
    config = tmp_path / "fleetgate.toml"
    config.write_text('cp_url = "https://api.moleculesai.app"\n[lint]\ndisable = ["g5"]\n')
    code, out, _ = run(capsys, mixed, config_path=config)
    assert code == 0 and "G5" not in out and "G7" in out


def test_config_is_read_from_the_working_directory(capsys: pytest.CaptureFixture[str], mixed: Path,
                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fleetgate.toml").write_text('[lint]\ndisable = ["G5", "G7"]\n')
    monkeypatch.chdir(tmp_path)
    assert run(capsys, mixed)[:2] == (0, "")


def test_config_production_patterns(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    wf = tmp_path / "wf"
    wf.mkdir()
    (wf / "ship.yml").write_text("on: pull_request\njobs:\n  a:\n    runs-on: x\n    steps:\n"
                                 "      - run: ./ship.sh --prod\n")
    config = tmp_path / "fleetgate.toml"
    config.write_text('[lint]\nproduction_patterns = [["ship\\\\.sh", "--prod"]]\n')
    code, out, err = run(capsys, wf, config_path=config)
    assert code == 1 and "error[P5]" in out and "production deploys:" in err
    assert run(capsys, wf)[0] == 0  # the defaults do not see it


@pytest.mark.parametrize(("toml", "message"), [
    ('[lint]\ndisable = ["Z9"]\n', "unknown rule 'Z9'"),
    ('[lint]\ndisable = ["L1"]\n', "L1 cannot be disabled"),
    ('[lint]\ndisable = "G8"\n', "disable must be a list"),
    ('[lint]\nignore = ["G8"]\n', "unknown key 'ignore'"),
    ('[lint]\nproduction_patterns = ["("]\n', "bad production pattern"),
    ('[lint]\nproduction_patterns = []\n', "non-empty list"),
    ("lint = 3\n", "must be a table"),
    ("[lint\n", "not valid TOML"),
])
def test_bad_config_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path, toml: str,
                                     message: str) -> None:
    config = tmp_path / "fleetgate.toml"
    config.write_text(toml)
    code, out, err = run(capsys, FIXTURES / "G1" / "pass.yml", config_path=config)
    assert (code, out) == (2, "") and message in err


def test_explicit_config_must_exist(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, FIXTURES / "G1" / "pass.yml", config_path=tmp_path / "missing.toml")
    assert code == 2 and "no such file" in err


# --- the real console script ---------------------------------------------------------------------

def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def test_console_script_is_wired_and_imports_nothing_heavy(mixed: Path) -> None:
    proc = _cli("-X", "importtime", "-m", "pipelines", "lint-workflows", "--format", "json", str(mixed))
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["errors"] == 2
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert {"click", "yaml", "pipelines"} <= imported
    assert not imported & {"httpx", "anyio", "rich", "starlette", "uvicorn", "stamina", "httpcore", "asyncio"}


def test_console_script_usage_errors_exit_2(tmp_path: Path) -> None:
    proc = _cli("-m", "pipelines", "lint-workflows", str(tmp_path / "missing"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().endswith("no such folder")
    proc = _cli("-m", "pipelines", "lint-workflows", "--format", "xml", str(tmp_path))
    assert proc.returncode == 2


# --- the project's own workflows -----------------------------------------------------------------

def test_the_projects_own_workflows_lint_clean(capsys: pytest.CaptureFixture[str]) -> None:
    folder = REPO / ".gitea" / "workflows"
    files = sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")])
    assert files, f"{folder} holds no workflow files: the project's own CI must be linted"
    code, out, err = run(capsys, folder, config_path=REPO / "fleetgate.toml"
                         if (REPO / "fleetgate.toml").is_file() else None)
    assert (code, out) == (0, ""), out + err
