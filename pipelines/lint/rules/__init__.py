"""Every rule, one module each. The order here is the order of the SARIF rules table."""

from __future__ import annotations

from pipelines.lint.model import Rule
from pipelines.lint.rules import (
    g1_dispatch_inputs,
    g2_workflow_run,
    g3_name_slash,
    g4_duplicate_name,
    g5_subpath_uses,
    g6_duplicate_keys,
    g7_github_api,
    g8_ignored_keys,
    l1_unreadable,
    l2_bad_suppression,
    p1_concurrency_serialisation,
    p2_raw_cp_response,
    p3_kill_switch,
    p4_continue_on_error,
    p5_triggers,
    p6_secrets_in_run,
    s1_untrusted_event,
    s2_prt_checkout,
)

ALL_RULES: tuple[Rule, ...] = tuple(m.RULE for m in (
    g1_dispatch_inputs, g2_workflow_run, g3_name_slash, g4_duplicate_name, g5_subpath_uses, g6_duplicate_keys,
    g7_github_api, g8_ignored_keys,
    p1_concurrency_serialisation, p2_raw_cp_response, p3_kill_switch, p4_continue_on_error, p5_triggers,
    p6_secrets_in_run,
    s1_untrusted_event, s2_prt_checkout,
    l1_unreadable, l2_bad_suppression,
))
BY_ID: dict[str, Rule] = {r.id: r for r in ALL_RULES}
