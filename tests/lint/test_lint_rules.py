"""Every rule against its fixture pair, with exact positions, under both YAML loaders.

Each fixture folder `fixtures/<ID>/` holds `fail*.yml` (linted together) whose header comments
`# expect: ID line:col` list *every* finding the linter must report for them, and `pass*.yml`
(linted together) that must come out clean.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pipelines.lint.config import LintConfig, compile_patterns
from pipelines.lint.engine import Report, lint_files
from pipelines.lint.rules import ALL_RULES
from pipelines.lint.workflow import parse

FIXTURES = Path(__file__).parent / "fixtures"
RULE_DIRS = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())
EXPECT_RE = re.compile(r"^# expect: ([A-Z][0-9]) (\d+):(\d+)$", re.MULTILINE)
LOADERS = [pytest.param(yaml.CSafeLoader, id="libyaml"), pytest.param(yaml.SafeLoader, id="pure-python")]


def found(report: Report) -> set[tuple[str, str, int, int]]:
    return {(f.rule, Path(f.file).name, f.line, f.column) for f in report.findings}


def expected(files: list[Path]) -> set[tuple[str, str, int, int]]:
    return {(m[0], f.name, int(m[1]), int(m[2])) for f in files for m in EXPECT_RE.findall(f.read_text())}


def lint_text(tmp_path: Path, text: str, name: str = "wf.yml", loader: object = None,
              **kwargs: object) -> Report:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return lint_files([path], loader=loader, **kwargs)  # type: ignore[arg-type]


def test_every_rule_has_a_fixture_pair() -> None:
    assert RULE_DIRS == sorted(r.id for r in ALL_RULES)
    for rule in RULE_DIRS:
        assert sorted((FIXTURES / rule).glob("fail*.yml")), rule
        assert sorted((FIXTURES / rule).glob("pass*.yml")), rule


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("rule", RULE_DIRS)
def test_fail_fixtures_report_exactly_the_expected_findings(rule: str, loader: object) -> None:
    files = sorted((FIXTURES / rule).glob("fail*.yml"))
    want = expected(files)
    assert any(r == rule for r, *_ in want), f"{rule}: a fail fixture must expect its own rule"
    assert found(lint_files(files, loader=loader)) == want


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("rule", RULE_DIRS)
def test_pass_fixtures_are_clean(rule: str, loader: object) -> None:
    report = lint_files(sorted((FIXTURES / rule).glob("pass*.yml")), loader=loader)
    assert report.findings == []


def test_findings_carry_severity_message_and_why() -> None:
    report = lint_files([FIXTURES / "G7" / "fail.yml", FIXTURES / "G1" / "fail.yml"])
    by_rule = {f.rule: f for f in report.findings}
    assert by_rule["G7"].severity.value == "warning"
    assert by_rule["G1"].severity.value == "error"
    assert "workflow_dispatch.inputs" in by_rule["G1"].message
    assert by_rule["G1"].why and by_rule["G7"].why
    assert report.errors == 1 and report.warnings == 2


# --- positions inside run: scalars, computed from the style and the original text --------------

SCRIPT_CASES = {
    "literal": ("      - run: |\n          echo one\n"
                "          echo ${{ github.event.issue.title }}\n", (10, 16)),
    "literal-indent-indicator": ("      - run: |2-  # a comment after the header\n            x\n"
                                 "            y ${{ github.event.issue.body }}\n", (10, 15)),
    "folded": ("      - run: >\n          echo\n\n          ${{ github.event.issue.title }}\n", (11, 11)),
    "plain-multiline": ("      - run: echo one\n          two ${{ github.head_ref }}\n", (9, 15)),
    "double-quoted": ('      - run: "echo \\"${{ github.head_ref }}\\""\n', (8, 22)),
    "single-quoted": ("      - run: 'echo ''${{ github.head_ref }}'''\n", (8, 22)),
    "flow-mapping": ("      - {name: x, run: 'echo ${{ github.head_ref }}'}\n", (8, 30)),
}
HEAD = "name: s\non: issues\njobs:\n  j:\n    runs-on: ubuntu-latest\n    steps:\n      - run: make\n"


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("case", sorted(SCRIPT_CASES))
def test_positions_inside_run_scalars(tmp_path: Path, case: str, loader: object) -> None:
    body, (line, col) = SCRIPT_CASES[case]
    report = lint_text(tmp_path, HEAD + body, loader=loader)
    assert [(f.rule, f.line, f.column) for f in report.findings] == [("S1", line, col)]
    # the column really points at the interpolation in the file
    text_line = (HEAD + body).split("\n")[line - 1]
    assert text_line[col - 1:].startswith("${{")


def test_positions_with_crlf_line_endings_and_a_bom(tmp_path: Path) -> None:
    body = SCRIPT_CASES["literal"][0]
    text = "\ufeff" + (HEAD + body).replace("\n", "\r\n")
    report = lint_text(tmp_path, text)
    assert [(f.rule, f.line, f.column) for f in report.findings] == [("S1", 10, 16)]


def test_an_escape_the_source_does_not_show_verbatim_reports_at_the_scalar(tmp_path: Path) -> None:
    # "\x24{{" is "${{" only after unescaping: still found, at the scalar's first character.
    body = '      - run: "echo \\x24{{ github.head_ref }}"\n'
    report = lint_text(tmp_path, HEAD + body)
    assert [(f.rule, f.line, f.column) for f in report.findings] == [("S1", 8, 14)]


# --- the key `on` (YAML 1.1 reads it as boolean true) ---------------------------------------------

def test_bare_on_key_is_the_trigger_key_not_boolean_true(tmp_path: Path) -> None:
    text = "name: x\non:\n  workflow_run:\n    workflows: [ci]\njobs: {}\n"
    assert True in yaml.safe_load(text)  # the hazard: a constructing loader loses the key `on`
    wf = parse("x.yml", text)
    assert [t.name for t in wf.triggers] == ["workflow_run"]
    report = lint_text(tmp_path, text)
    assert [(f.rule, f.line, f.column) for f in report.findings] == [("G2", 3, 3)]


def test_quoted_on_key_and_an_empty_on_are_handled(tmp_path: Path) -> None:
    assert [t.name for t in parse("x.yml", '"on": [push, workflow_run]\njobs: {}\n').triggers] == \
        ["push", "workflow_run"]
    empty = parse("x.yml", "on:\njobs: {}\n")
    assert empty.triggers == []
    assert lint_text(tmp_path, "on:\njobs:\n  a:\n    runs-on: x\n    steps: [{run: make}]\n").findings == []


def test_on_and_quoted_on_are_duplicate_keys(tmp_path: Path) -> None:
    report = lint_text(tmp_path, 'on: push\n"on": workflow_run\njobs: {}\n')
    assert ("G6", 2, 1) in {(f.rule, f.line, f.column) for f in report.findings}
    # the last one wins, as in every YAML loader
    assert ("G2", 2, 7) in {(f.rule, f.line, f.column) for f in report.findings}


# --- G8's version table ----------------------------------------------------------------------------

@pytest.mark.parametrize(("version", "keys"), [
    ((1, 21), {"run-name", "concurrency", "permissions", "timeout-minutes", "continue-on-error",
               "environment", "runs-on"}),
    ((1, 22), {"run-name", "concurrency", "permissions", "timeout-minutes", "continue-on-error",
               "environment", "runs-on"}),
    ((1, 23), {"concurrency", "permissions", "timeout-minutes", "continue-on-error", "environment",
               "runs-on"}),
    ((1, 26), {"timeout-minutes", "continue-on-error", "environment", "runs-on"}),
    ((1, 30), {"environment", "runs-on"}),
])
def test_g8_depends_on_the_gitea_version(version: tuple[int, int], keys: set[str]) -> None:
    path = FIXTURES / "G8" / "fail.yml"
    lines = path.read_text().split("\n")
    report = lint_files([path], gitea_version=version)
    flagged = {lines[f.line - 1][f.column - 1:].split(":")[0] for f in report.findings}
    assert flagged == keys
    assert {f.rule for f in report.findings} <= {"G8"}


# --- production detection ------------------------------------------------------------------------

PROD_BODY = "jobs:\n  d:\n    runs-on: x\n    steps:\n      - run: {cmd}\n"


def test_non_production_workflows_skip_the_production_rules(tmp_path: Path) -> None:
    text = "on: pull_request\n" + PROD_BODY.format(cmd="fleetgate plan --json")
    report = lint_text(tmp_path, text)
    assert report.findings == [] and report.production == []


@pytest.mark.parametrize("cmd", [
    "fleetgate deploy-production",
    "dagger call deploy-production --source .",
    "dagger -m ./ci call publish-and-deploy",
    "|\n          dagger call \\\n            redeploy --target-tag x",
    "curl https://api.moleculesai.app/cp/admin/tenants/redeploy-fleet -o r.json",
])
def test_production_is_detected_from_the_default_patterns(tmp_path: Path, cmd: str) -> None:
    report = lint_text(tmp_path, "on: pull_request\n" + PROD_BODY.format(cmd=cmd))
    assert report.production and {"P3", "P5"} <= {f.rule for f in report.findings}


def test_the_cp_url_alone_or_the_path_alone_is_not_production(tmp_path: Path) -> None:
    for cmd in ("curl https://api.moleculesai.app/healthz", "curl http://localhost/cp/admin/tenants/redeploy-fleet"):
        assert lint_text(tmp_path, "on: pull_request\n" + PROD_BODY.format(cmd=cmd)).production == []


def test_configured_production_patterns_replace_the_defaults(tmp_path: Path) -> None:
    config = LintConfig(production=compile_patterns([[r"\./ship\.sh", r"--prod\b"]], "test"))
    text = "on: pull_request\n" + PROD_BODY.format(cmd="./ship.sh --prod")
    report = lint_text(tmp_path, text, config=config)
    assert report.production and {f.rule for f in report.findings} == {"P3", "P5"}
    assert lint_text(tmp_path, "on: pull_request\n" + PROD_BODY.format(cmd="fleetgate deploy-production"),
                     config=config).production == []


def test_p1_ignores_cancel_in_progress_true(tmp_path: Path) -> None:
    text = ("on: push\nenv: {PROD_AUTO_DEPLOY_DISABLED: x}\n"
            "concurrency:\n  group: p\n  cancel-in-progress: true\n"
            + PROD_BODY.format(cmd="fleetgate deploy-production"))
    assert {f.rule for f in lint_text(tmp_path, text).findings} == {"G8"}


# --- suppressions ----------------------------------------------------------------------------------

def test_a_suppression_covers_its_line_and_the_next_only(tmp_path: Path) -> None:
    steps = ("on: push\njobs:\n  b:\n    runs-on: x\n    steps:\n"
             "      # fleetgate: ignore[G5] mirrored on our Gitea\n"
             "      - uses: a/b/c@v1\n"
             "      - uses: a/b/d@v1\n")
    report = lint_text(tmp_path, steps)
    assert [(f.rule, f.line) for f in report.findings] == [("G5", 8)]


def test_a_suppression_only_silences_the_rules_it_names(tmp_path: Path) -> None:
    text = ("on: push\njobs:\n  b:\n    runs-on: x\n    steps:\n"
            "      - uses: a/b/c@v1  # fleetgate: ignore[G6,S1] wrong rules named\n")
    assert [f.rule for f in lint_text(tmp_path, text).findings] == ["G5"]


def test_l1_cannot_be_suppressed(tmp_path: Path) -> None:
    text = "# fleetgate: ignore[L1] trying to hide a broken file\non: [push\n"
    assert [f.rule for f in lint_text(tmp_path, text).findings] == ["L1"]


# --- unreadable files ------------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "where"), [
    (b"", (1, 1)),
    (b"# only a comment\n", (1, 1)),
    (b"on: push\n---\non: push\n", (2, 1)),
    (b"on: push\njobs: \xff\xfe\n", (1, 1)),
    (b"on: push\njobs: {a: [\n", (3, 1)),
    (b"on: push\njobs: *missing\n", (2, 7)),
])
def test_unparseable_files_are_a_fatal_finding_with_a_position(tmp_path: Path, data: bytes,
                                                                where: tuple[int, int]) -> None:
    path = tmp_path / "bad.yml"
    path.write_bytes(data)
    report = lint_files([path])
    got = [(f.rule, f.severity.value, f.line, f.column) for f in report.findings]
    assert got == [("L1", "error", *where)]


@pytest.mark.parametrize("loader", LOADERS)
def test_hostile_nesting_is_a_finding_not_a_crash(tmp_path: Path, loader: object) -> None:
    # libyaml's composer recurses in C and would take the process down at ~20,000 levels.
    text = "on: push\njobs: " + "[" * 30000 + "]" * 30000 + "\n"
    report = lint_text(tmp_path, text, loader=loader)
    # the top-level mapping is level 1, so level 1001 is the 1000th `[`, at column 7 + 999
    assert [(f.rule, f.line, f.column) for f in report.findings] == [("L1", 2, 1006)]
    # libyaml ≥ 0.2.6 (PyYAML 6.0.4 wheels) stops at 1000 levels itself, with its own words
    assert "nest" in report.findings[0].message
