"""The Gitea workflow wrappers: lint-clean, calling registered functions, and the deploy step's exit handling.

The deploy step's shell runs here for real with a stand-in `dagger` on PATH that prints what a failing
fleetgate function prints and exits like the Dagger CLI does (1 for any function error).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_dagger_readme import check_call, dagger_calls

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".gitea" / "workflows"
FILES = ("publish-and-deploy.yml", "manual-redeploy.yml", "self-test.yml", "approve-deploy.yml")


def load(name: str) -> dict[object, object]:
    data = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def steps(name: str) -> list[dict[str, object]]:
    jobs = load(name)["jobs"]
    assert isinstance(jobs, dict) and len(jobs) == 1
    (job,) = jobs.values()
    return list(job["steps"])


def test_fleetgate_lint_workflows_finds_nothing() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines", "lint-workflows", "--format", "json", str(WORKFLOWS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["errors"] == 0 and report["warnings"] == 0 and report["findings"] == []
    assert sorted(Path(f).name for f in report["files"]) == sorted(FILES)
    assert sorted(Path(f).name for f in report["production"]) == ["manual-redeploy.yml", "publish-and-deploy.yml"]


def test_workflows_install_the_dagger_cli_dagger_json_pins() -> None:
    engine = json.loads((ROOT / "dagger.json").read_text(encoding="utf-8"))["engineVersion"]
    for name in FILES:
        installs = [s for s in steps(name) if "install.sh" in str(s.get("run", ""))]
        assert len(installs) == 1, name
        assert installs[0]["env"]["DAGGER_VERSION"] == engine.removeprefix("v"), name  # type: ignore[index]


def test_every_dagger_call_in_a_workflow_is_a_registered_function_with_its_flags() -> None:
    called = {}
    for name in FILES:
        for line in dagger_calls((WORKFLOWS / name).read_text(encoding="utf-8")):
            called[name] = check_call(line)[0]
    assert called == {
        "publish-and-deploy.yml": "publish-and-deploy",
        "manual-redeploy.yml": "redeploy",
        "self-test.yml": "self-test",
        "approve-deploy.yml": "approve",
    }


def test_triggers_and_the_manual_target() -> None:
    assert load("publish-and-deploy.yml")[True] == {"push": {"branches": ["main"]}}  # YAML 1.1: `on` is True
    manual = load("manual-redeploy.yml")[True]
    assert manual == {"workflow_dispatch": None}  # no inputs: Gitea 1.22 drops them
    text = (WORKFLOWS / "manual-redeploy.yml").read_text(encoding="utf-8")
    assert "vars.PROD_MANUAL_REDEPLOY_TARGET_TAG" in text and '--target-tag "$TARGET_TAG"' in text


def test_approve_deploy_takes_no_inputs_and_the_sha_from_a_variable() -> None:
    assert load("approve-deploy.yml")[True] == {"workflow_dispatch": None}  # no inputs: Gitea 1.22 drops them
    text = (WORKFLOWS / "approve-deploy.yml").read_text(encoding="utf-8")
    assert "vars.FLEETGATE_APPROVE_SHA" in text and '--sha "$APPROVE_SHA"' in text
    assert "--gitea-token env://GITEA_TOKEN" in text


def test_secrets_reach_dagger_only_as_env_secret_references() -> None:
    for name in FILES:
        for step in steps(name):
            run = str(step.get("run", ""))
            assert "secrets." not in run, name
            for value in dict(step.get("env", {}) or {}).values():  # type: ignore[call-overload]
                if "secrets." in str(value):
                    assert str(value).startswith("${{ secrets.") and str(value).endswith("}}")
    deploy = (WORKFLOWS / "publish-and-deploy.yml").read_text(encoding="utf-8")
    for ref in (
        "--gitea-token env://GITEA_TOKEN",
        "--cp-token env://CP_ADMIN_API_TOKEN",
        "--registry-password env://REGISTRY_PASSWORD",
    ):
        assert ref in deploy


def deploy_step_script() -> str:
    (step,) = [s for s in steps("publish-and-deploy.yml") if "dagger call" in str(s.get("run", ""))]
    return str(step["run"])


@pytest.mark.parametrize(
    ("dagger_exit", "last_line", "step_exit", "notice"),
    [
        (0, '{"ok": true}', 0, None),
        (1, "fleetgate deploy-production: kill switch engaged: value 'true' (exit 3)", 0, "kill switch engaged"),
        (1, "fleetgate deploy-production: tenant alpha runs a descendant (exit 5)", 0, "stood down"),
        (1, "fleetgate deploy-production: gate 'ci' is failure (exit 1)", 1, None),
        (1, "fleetgate deploy-production: kill switch engaged after writes (exit 4)", 1, None),
        (1, "Error: engine unreachable", 1, None),
        (3, "", 0, "kill switch engaged"),
    ],
)
def test_deploy_step_turns_exit_3_and_5_into_notices_and_fails_otherwise(
    tmp_path: Path, dagger_exit: int, last_line: str, step_exit: int, notice: str | None
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dagger"
    fake.write_text(f'#!/bin/sh\necho "$@" > "{tmp_path}/argv"\necho {json.dumps(last_line)} >&2\nexit {dagger_exit}\n')
    fake.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "GITHUB_SHA": "a" * 40,
        "GITHUB_REPOSITORY": "acme/app",
        "GITHUB_SERVER_URL": "https://gitea.example",
        "GITHUB_REF_NAME": "main",
        "GITEA_TOKEN": "gitea-secret-value",
        "CP_ADMIN_API_TOKEN": "cp-secret-value",
        "REGISTRY_PASSWORD": "registry-secret-value",
        "FLEETGATE_IMAGE": "r.example/app",
        "REGISTRY_USERNAME": "u",
        "REQUIRED_CONTEXTS": "ci",
        "KILL_SWITCH": "",
    }
    proc = subprocess.run(
        ["bash", "-e", "-c", deploy_step_script()], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == step_exit, proc.stdout + proc.stderr
    if notice:
        assert f"::notice title=fleetgate::{notice}" in proc.stdout
    else:
        assert "::notice" not in proc.stdout
    argv = (tmp_path / "argv").read_text()
    assert argv.startswith("call publish-and-deploy ") and "secret-value" not in argv
