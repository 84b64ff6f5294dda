"""The approval, soak-watch, analysis and notification settings (CONTRACT §2 rows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.errors import UsageError
from pipelines.redact import Secret, redact
from pipelines.settings import load_config, options_for, resolve

SHA = "0123456789abcdef0123456789abcdef01234567"
BASE: dict[str, Any] = {"sha": SHA, "repo": "acme/fleet", "gitea_url": "https://git.example.com",
                        "required_contexts": ("CI / test (push)",)}


def deploy(env: dict[str, str] | None = None, **flags: Any) -> Any:
    return resolve("deploy-production", {**BASE, **flags}, env or {})


def test_defaults() -> None:
    s = deploy()
    assert (s.approve_after_canary, s.approval_context, s.approval_timeout) == (False, "fleetgate/approve", 3600.0)
    assert (s.health_path, s.prometheus_url, s.analysis_query) == ("", "", "")
    assert (s.analysis_max, s.analysis_inconclusive_limit, s.notify) == (0.0, 3, ())


def test_env_names_and_types() -> None:
    s = deploy({"FLEETGATE_APPROVE_AFTER_CANARY": "true", "FLEETGATE_APPROVAL_TIMEOUT_SECONDS": "2",
                "PROD_TENANT_HEALTH_PATH": "/healthz", "FLEETGATE_PROMETHEUS_URL": "http://127.0.0.1:9090/",
                "FLEETGATE_ANALYSIS_QUERY": "sum(errors)", "FLEETGATE_ANALYSIS_MAX": "0.5",
                "FLEETGATE_ANALYSIS_INCONCLUSIVE_LIMIT": "2", "FLEETGATE_APPROVAL_CONTEXT": "ops/go"})
    assert s.approve_after_canary is True and s.approval_timeout == 2.0 and s.health_path == "/healthz"
    assert s.prometheus_url == "http://127.0.0.1:9090" and s.analysis_max == 0.5
    assert s.analysis_inconclusive_limit == 2 and s.approval_context == "ops/go"


def test_notify_is_a_list_of_secrets_from_flags_or_env() -> None:
    s = deploy({"FLEETGATE_NOTIFY": "json://127.0.0.1:1/a,\nslack://T0/B0/xyzsecret1"})
    assert s.notify == (Secret("json://127.0.0.1:1/a"), Secret("slack://T0/B0/xyzsecret1"))
    assert "xyzsecret1" not in repr(s) and "xyzsecret1" not in redact("posting to slack://T0/B0/xyzsecret1")
    flagged = deploy({"FLEETGATE_NOTIFY": "json://127.0.0.1:1/env"}, notify=("json://127.0.0.1:1/flag",))
    assert [n.reveal() for n in flagged.notify] == ["json://127.0.0.1:1/flag"]


def test_a_bad_notify_url_is_a_usage_error_that_never_echoes_it() -> None:
    with pytest.raises(UsageError) as err:
        deploy(notify=("hunter2-not-a-url",))
    assert "hunter2" not in err.value.message and "item 1" in err.value.message


def test_notify_is_refused_in_the_settings_file(tmp_path: Path) -> None:
    cfg = tmp_path / "fleetgate.toml"
    cfg.write_text('notify = "json://127.0.0.1:1/x"\n')
    with pytest.raises(UsageError, match="secret"):
        load_config(cfg)


@pytest.mark.parametrize("flags, needle", [
    ({"health_path": "healthz"}, "--health-path"),
    ({"health_path": "/a/../admin"}, "--health-path"),
    ({"health_path": "/h ealth"}, "--health-path"),
    ({"health_path": "/h?x=1"}, "--health-path"),
    ({"analysis_query": "up"}, "--prometheus-url"),
    ({"prometheus_url": "ftp://127.0.0.1"}, "http(s) URL"),
    ({"analysis_max": "nan"}, "finite"),
    ({"analysis_max": "lots"}, "number"),
    ({"analysis_inconclusive_limit": "0"}, "≥ 1"),
    ({"approval_timeout": "-1"}, "≥ 0"),
    ({"approval_context": " "}, "--approval-context"),
])
def test_bad_values_are_usage_errors(flags: dict[str, Any], needle: str) -> None:
    with pytest.raises(UsageError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        deploy(**flags)


def test_which_verbs_see_them() -> None:
    deploy_names = {o.name for o in options_for("deploy-production")}
    assert {"approve_after_canary", "approval_timeout", "approval_context", "health_path", "notify",
            "prometheus_url", "analysis_query"} <= deploy_names
    assert "health_path" in {o.name for o in options_for("verify")}


def test_the_plan_shows_the_watch_settings_but_never_a_notify_target() -> None:
    from pipelines.output import redact_json
    from pipelines.plan import build_plan

    plan = build_plan(deploy({"FLEETGATE_NOTIFY": "json://127.0.0.1:1/hook-zz9,json://127.0.0.1:1/b"},
                             approve_after_canary="true", health_path="/healthz"))
    shown = plan["settings"]
    assert shown["notify"] == "set" and shown["approve_after_canary"] is True and shown["health_path"] == "/healthz"
    assert "hook-zz9" not in redact_json(plan)
    assert build_plan(deploy())["settings"]["notify"] == "missing"
