"""The settings table: validation, precedence, the URL guard, and secrets kept out of files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.errors import UsageError
from pipelines.redact import Secret
from pipelines.settings import OPTIONS, REQUIRED, Kind, check_value, load_config, options_for, resolve, switch_engaged
from pipelines.urlguard import same_origin
from pipelines.verbs import VERBS

SHA = "0123456789abcdef0123456789abcdef01234567"
PROD = "https://api.moleculesai.app"
BASE: dict[str, Any] = {"sha": SHA, "repo": "acme/fleet", "gitea_url": "https://git.example.com",
                        "required_contexts": ("CI / test (push)",)}


def plan(**flags: Any) -> Any:
    return resolve("plan", {**BASE, **flags}, {})


def test_defaults_and_derived_values() -> None:
    s = plan()
    assert s.target_tag == "staging-0123456" and s.short_sha == "0123456"
    assert (s.batch_size, s.soak_seconds, s.max_stragglers, s.on_failure) == (3, 60.0, 0, "halt")
    assert s.cp_url == PROD and s.lease is True and s.live_kill_switch is True and s.enabled is True
    assert s.gitea_token is None and s.cp_token is None
    assert s.tenant_url("alpha") == "https://alpha.moleculesai.app"


def test_uppercase_sha_is_accepted_and_lowercased() -> None:
    assert plan(sha=SHA.upper()).sha == SHA


@pytest.mark.parametrize("flags, needle", [
    ({"sha": SHA[:7]}, "40-hex"),
    ({"sha": SHA + "0"}, "40-hex"),
    ({"sha": "g" * 40}, "40-hex"),
    ({"sha": "HEAD"}, "40-hex"),
    ({"repo": "fleet"}, "owner/name"),
    ({"repo": "acme/fleet/extra"}, "owner/name"),
    ({"repo": "acme /fleet"}, "owner/name"),
    ({"gitea_url": "https://bot:hunter2@git.example.com"}, "credentials"),
    ({"gitea_url": "ftp://git.example.com"}, "http(s) URL"),
    ({"gitea_url": "file:///etc/passwd"}, "http(s) URL"),
    ({"gitea_url": "git.example.com"}, "http(s) URL"),
    ({"gitea_url": "https://git.example.com/?x=1"}, "no query"),
    ({"gitea_url": "https://git.example.com:99999"}, "port"),
    ({"batch_size": "0"}, "≥ 1"),
    ({"batch_size": "-3"}, "≥ 1"),
    ({"batch_size": "2.5"}, "integer"),
    ({"batch_size": "three"}, "integer"),
    ({"max_stragglers": "-1"}, "≥ 0"),
    ({"soak_seconds": "-0.5"}, "≥ 0"),
    ({"soak_seconds": "nan"}, "finite"),
    ({"gate_timeout": "inf"}, "finite"),
    ({"poll_interval": "0"}, "≥ 0.01"),
    ({"cp_timeout": "119"}, "≥ 120"),
    ({"lease_ttl": "0"}, "≥ 1"),
    ({"on_failure": "ignore"}, "halt, rollback"),
    ({"dry_run": "maybe"}, "boolean"),
    ({"canary": "Evil.Example"}, "slug or none"),
    ({"canary": "../x"}, "slug or none"),
    ({"required_contexts": (" , ",)}, "no required status contexts"),
    ({"tag_template": "staging-{nope}"}, "--tag-template"),
    ({"tag_template": "staging-{sha"}, "--tag-template"),
    ({"tag_template": "staging-{sha.x}"}, "--tag-template"),
    ({"tag_template": "staging-{short_sha[0]}"}, "--tag-template"),
    ({"tag_template": "staging-{sha!r}"}, "--tag-template"),
    ({"tenant_url_template": "https://{slug.x}.example.com"}, "only {slug}"),
    ({"tenant_url_template": "https://{slug}.example.com/{slug[0]}"}, "only {slug}"),
    ({"tenant_url_template": "https://fleet.example.com"}, "must contain {slug}"),
    ({"tenant_url_template": "https://{slug}.example.com/{region}"}, "only {slug}"),
    ({"tenant_url_template": "ftp://{slug}.example.com"}, "http(s) URL"),
    ({"tenant_url_template": "https://u:p@{slug}.example.com"}, "credentials"),
])
def test_every_bad_value_is_a_usage_error(flags: dict[str, Any], needle: str) -> None:
    with pytest.raises(UsageError) as info:
        plan(**flags)
    assert needle in info.value.message
    assert "\n" not in info.value.message


@pytest.mark.parametrize("missing, needle", [
    ("sha", "--sha"), ("repo", "--repo"), ("gitea_url", "--gitea-url"),
    ("required_contexts", "required status"),
])
def test_required_settings(missing: str, needle: str) -> None:
    flags = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(UsageError, match=needle):
        resolve("plan", flags, {})


def test_empty_required_contexts_from_env_is_an_error() -> None:
    flags = {k: v for k, v in BASE.items() if k != "required_contexts"}
    with pytest.raises(UsageError, match="no required status contexts"):
        resolve("wait-gates", flags, {"PROD_AUTO_DEPLOY_REQUIRED_CONTEXTS": ",\n,", "GITEA_TOKEN": "tok-123456"})


def test_required_contexts_from_env_split_on_commas_and_newlines() -> None:
    flags = {k: v for k, v in BASE.items() if k != "required_contexts"}
    env = {"PROD_AUTO_DEPLOY_REQUIRED_CONTEXTS": "CI / a (push), CI / b\nCI / a (push)\n", "GITEA_TOKEN": "t-1234"}
    s = resolve("wait-gates", flags, env)
    assert s.required_contexts == ("CI / a (push)", "CI / b")


# ---------------------------------------------------------------- the CP URL guard


@pytest.mark.parametrize("cp_url", [
    "https://api.moleculesai.app.evil.example",
    "https://evil.example/api.moleculesai.app",
    "http://api.moleculesai.app",
    "https://api.moleculesai.app:8443",
    "https://api-moleculesai.app",
])
def test_guard_refuses_lookalikes(cp_url: str) -> None:
    with pytest.raises(UsageError, match="not the production control plane"):
        plan(cp_url=cp_url)
    assert plan(cp_url=cp_url, allow_non_prod_cp_url=True).cp_url == cp_url


def test_guard_refuses_userinfo_even_when_allowed() -> None:
    for allow in (False, True):
        with pytest.raises(UsageError, match="credentials"):
            plan(cp_url="https://api.moleculesai.app@evil.example", allow_non_prod_cp_url=allow)


@pytest.mark.parametrize("cp_url", [
    "https://api.moleculesai.app/", "HTTPS://API.MoleculesAI.app", "https://api.moleculesai.app:443",
    "https://api.moleculesai.app.", " https://api.moleculesai.app ",
])
def test_guard_accepts_the_same_origin_spelled_differently(cp_url: str) -> None:
    plan(cp_url=cp_url)
    assert same_origin(cp_url, PROD)


def test_guard_follows_prod_cp_url() -> None:
    s = plan(cp_url="http://127.0.0.1:8080", prod_cp_url="http://127.0.0.1:8080/")
    assert s.cp_url == "http://127.0.0.1:8080"
    assert not same_origin("http://127.0.0.1:8080", "http://127.0.0.1:80")


# ---------------------------------------------------------------- precedence and config files


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleetgate.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    text = "batch_size = 6\nsoak_seconds = 7\non_failure = 'rollback'\n"
    config, source = load_config(write(tmp_path, text))
    env = {"PROD_AUTO_DEPLOY_BATCH_SIZE": "4", "PROD_AUTO_DEPLOY_SOAK_SECONDS": "8"}
    s = resolve("plan", {**BASE, "batch_size": "5"}, env, config, source)
    assert (s.batch_size, s.soak_seconds, s.on_failure, s.max_stragglers) == (5, 8.0, "rollback", 0)
    s = resolve("plan", BASE, env, config, source)
    assert s.batch_size == 4
    s = resolve("plan", BASE, {}, config, source)
    assert (s.batch_size, s.soak_seconds) == (6, 7.0)
    assert resolve("plan", BASE, {}).batch_size == 3


def test_an_empty_env_value_does_not_override_the_file(tmp_path: Path) -> None:
    config, source = load_config(write(tmp_path, "batch_size = 6\n"))
    assert resolve("plan", BASE, {"PROD_AUTO_DEPLOY_BATCH_SIZE": ""}, config, source).batch_size == 6


def test_gitea_url_env_fallback() -> None:
    flags = {k: v for k, v in BASE.items() if k != "gitea_url"}
    env = {"GITHUB_SERVER_URL": "https://server.example.com"}
    assert resolve("plan", flags, env).gitea_url == "https://server.example.com"
    env["GITEA_URL"] = "https://gitea.example.com/"
    assert resolve("plan", flags, env).gitea_url == "https://gitea.example.com"


def test_kill_switch_env_set_but_empty_is_off_and_unrecognised_is_on() -> None:
    assert resolve("plan", BASE, {"PROD_AUTO_DEPLOY_DISABLED": ""}).enabled is True
    assert resolve("plan", BASE, {"PROD_AUTO_DEPLOY_DISABLED": "sometimes"}).enabled is False
    assert switch_engaged("  DISABLE ") is not None and switch_engaged("Off") is None


def test_tokens_come_in_as_secrets() -> None:
    s = resolve("plan", BASE, {"GITEA_TOKEN": "gitea-tok-123456", "CP_ADMIN_API_TOKEN": "cp-tok-654321"})
    assert isinstance(s.gitea_token, Secret) and s.gitea_token.reveal() == "gitea-tok-123456"
    assert "gitea-tok" not in repr(s) and "cp-tok" not in repr(s)


@pytest.mark.parametrize("text, needle", [
    ("bach_size = 3\n", "unknown setting 'bach_size'"),
    ("gitea_token = 'abc'\n", "is a secret"),
    ("cp_token = 'abc'\n", "is a secret"),
    ("batch_size = \n", "not valid TOML"),
])
def test_bad_config_files(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        load_config(write(tmp_path, text))


def test_bad_values_in_the_file_name_the_file_and_key(tmp_path: Path) -> None:
    config, source = load_config(write(tmp_path, "batch_size = 0\n"))
    with pytest.raises(UsageError, match=r"fleetgate.toml: batch_size: must be ≥ 1"):
        resolve("plan", BASE, {}, config, source)


def test_a_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        load_config(tmp_path / "nope.toml")


def test_tables_in_the_file_are_not_settings(tmp_path: Path) -> None:
    config, _ = load_config(write(tmp_path, "batch_size = 2\n[lint]\nignore = ['G1']\n"))
    assert config == {"batch_size": 2}


def test_the_table_is_consistent() -> None:
    names = [o.name for o in OPTIONS]
    flags = [o.flag for o in OPTIONS]
    assert len(set(names)) == len(names) and len(set(flags)) == len(flags)
    assert all(o.flag == "--" + o.name.replace("_", "-") or o.multiple for o in OPTIONS)
    assert {o.name for o in options_for("wait-gates")} >= {"sha", "repo", "gitea_url", "required_contexts"}
    assert all(o.kind is not Kind.SECRET or not o.default for o in OPTIONS)


@pytest.mark.parametrize("ledger, message", [
    ("/no/such/folder/ledger.jsonl", "does not exist"),
    (".", "is a folder"),
])
def test_an_unwritable_ledger_is_a_usage_error_before_anything_runs(ledger: str, message: str) -> None:
    env = {"GITHUB_SHA": "a" * 40, "GITHUB_REPOSITORY": "o/r", "GITEA_URL": "https://g.example",
           "PROD_AUTO_DEPLOY_REQUIRED_CONTEXTS": "ci", "FLEETGATE_LEDGER": ledger,
           "CP_ADMIN_API_TOKEN": "cp-tok-1234"}
    with pytest.raises(UsageError, match=message):
        resolve("redeploy", {}, env)
    resolve("plan", {}, env)  # plan writes no ledger, so it does not care


# ---------------------------------------------------------------- validation that matches the HTTP layer


@pytest.mark.parametrize("flags, needle", [
    ({"repo": "acme/.."}, "owner/name"),
    ({"repo": "../fleet"}, "owner/name"),
    ({"repo": "acme/."}, "owner/name"),
    ({"repo": "acme/%2e%2e"}, "owner/name"),
    ({"gitea_url": "https://exa\u200bmple.com"}, "not a valid host name"),
    ({"gitea_url": "https://xn--zz.example"}, "not a valid host name"),
    ({"gitea_url": "https://a..b"}, "not a valid host name"),
    ({"gitea_url": "https://ex%41mple.com"}, "not a valid host name"),
    ({"gitea_url": "https://git.example.com\r\nX: y"}, "control characters"),
    ({"gitea_url": "https://git.exa\tmple.com"}, "control characters"),
    ({"cp_url": "https://api.molecules\x00ai.app", "allow_non_prod_cp_url": True}, "control characters"),
    ({"tenant_url_template": "https://fleet.example.com/{{slug}}"}, "same URL"),
    ({"tenant_url_template": "https://{{slug}}.example.com"}, "not a valid host name"),
    ({"tenant_url_template": "https://fleet.example.com/t/{slug}/.."}, "dot segment"),
    ({"tenant_url_template": "https://fleet.example.com/t/{slug}/%2e%2E"}, "dot segment"),
    ({"gitea_url": "https://git.example.com/a/../b"}, "dot segment"),
    ({"gitea_url": "https://[/api"}, "not a valid URL"),
    ({"gitea_url": "https://_\u00e9.example"}, "not a valid host name"),
    ({"tenant_url_template": "https://fleet.example.com/t-{slug}"}, "whole path segment"),
    ({"tenant_url_template": "https://{slug}.exa\u200bmple.com"}, "not a valid host name"),
])
def test_what_the_http_layer_would_refuse_or_fold_is_refused_first(flags: dict[str, Any], needle: str) -> None:
    with pytest.raises(UsageError) as info:
        plan(**flags)
    assert needle in info.value.message and "\n" not in info.value.message


@pytest.mark.parametrize("template", [
    "https://{slug}.moleculesai.app", "https://tenant-{slug}.example.com", "http://127.0.0.1:9/t/{slug}",
    "https://fleet.example.com/{slug}/", "https://bücher.example/{slug}",
])
def test_tenant_templates_that_name_the_tenant_are_accepted(template: str) -> None:
    assert plan(tenant_url_template=template).tenant_url_template == template


@pytest.mark.parametrize("token", ["zq9-123\n456", "zq9-123\r456", "zq9ö-123456", "zq9\x00123456", "zq9\u200b123456"])
def test_a_token_the_http_layer_cannot_send_is_refused_without_being_shown(token: str) -> None:
    for env in ({"GITEA_TOKEN": token}, {"CP_ADMIN_API_TOKEN": token}):
        with pytest.raises(UsageError) as info:
            resolve("plan", BASE, env)
        assert "printable ASCII" in info.value.message and token not in info.value.message
        assert "zq9" not in info.value.message


@pytest.mark.parametrize("text, needle", [
    ("[rollout]\ndry_run = true\n", "[rollout] is a table"),
    ("[settings]\nbatch_size = 2\n", "[settings] is a table"),
    ("dry_run = 'yes please'\n", "dry_run: expected boolean"),
    ("batch_size = '5'\n", "batch_size: expected integer"),
    ("batch_size = true\n", "batch_size: expected integer"),
    ("soak_seconds = [1]\n", "soak_seconds: expected seconds"),
    ("required_contexts = [1, 2]\n", "required_contexts: expected list"),
    ("repo = 5\n", "repo: expected owner/name"),
])
def test_a_settings_file_is_top_level_keys_of_the_right_type(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(UsageError) as info:
        load_config(write(tmp_path, text))
    assert needle in info.value.message


def test_toml_values_of_the_right_type_pass(tmp_path: Path) -> None:
    config, _ = load_config(write(tmp_path, "batch_size = 2\nsoak_seconds = 1.5\ngate_timeout = 3\ndry_run = true\n"
                                  "required_contexts = ['a', 'b']\n[lint]\nignore = ['G1']\n"))
    assert config == {"batch_size": 2, "soak_seconds": 1.5, "gate_timeout": 3, "dry_run": True,
                      "required_contexts": ["a", "b"]}


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_missing_messages_come_from_the_table(verb: str) -> None:
    """Each setting a verb requires, left out alone, stops the verb with that setting's own line."""
    full: dict[str, Any] = {**BASE, "gitea_token": "tok-123456", "cp_token": "tok-654321",
                            "image": "registry.example.com/org/app"}
    required = [o for o in options_for(verb) if o.required_for(verb)]
    assert required or verb == "report", verb  # report reads only the local ledger: it needs nothing
    resolve(verb, full, {})
    for o in required:
        # Left out, or (for a setting with a default) given empty.
        flags = {k: v for k, v in full.items() if k != o.name} | ({} if o.default is REQUIRED else {o.name: " "})
        with pytest.raises(UsageError) as info:
            resolve(verb, flags, {})
        assert info.value.message == o.missing(verb) and info.value.message.startswith(o.flag)


@pytest.mark.parametrize("name, value, needle", [
    ("sha", "HEAD", "40-hex"),
    ("image", "registry.example.com/org/app:v1", "without a tag"),
    ("image", "org/app", "registry host"),
    ("image", "registry.example.com/Org/App", "not a valid repository name"),
    ("tag_template", "v{version}", "only {sha} and {short_sha}"),
])
def test_one_grammar_for_sha_image_and_tag_template(name: str, value: str, needle: str) -> None:
    with pytest.raises(UsageError, match=re.escape(needle)):
        check_value(name, value)
    with pytest.raises(UsageError, match=re.escape(needle)):
        plan(**{name: value}) if name != "image" else resolve("promote", {**BASE, "image": value}, {})


# ---------------------------------------------------------------- what the table accepts, httpx sends


HOST_CHARS = st.sampled_from([*"abcz09-._%{}", "\u00e9", "\u00fc", "\u200b", "\u202e", "\x00", "\n", " ", "\t",
                              "\u0301", "xn--", ":", "@", "[", "]"])


@given(host=st.lists(HOST_CHARS, min_size=1, max_size=12).map("".join))
def test_a_url_the_table_accepts_is_one_httpx_sends_unchanged_in_host(host: str) -> None:
    import httpx

    url = f"https://{host}/api"
    try:
        accepted = plan(gitea_url=url).gitea_url
    except UsageError as exc:
        assert "\n" not in exc.message
        return
    request = httpx.Request("GET", accepted)  # would raise for what httpx refuses
    assert request.url.host and all(c.isascii() and c.isprintable() for c in str(request.url))


TOKEN_CHARS = st.characters(min_codepoint=0, max_codepoint=0x3000)


@given(token=st.text(TOKEN_CHARS, min_size=1, max_size=24))
def test_a_token_the_table_accepts_is_a_header_httpx_sends_and_a_refused_one_is_never_shown(token: str) -> None:
    import httpx

    from pipelines import redact

    token = f"zq9{token}"
    known = set(redact._KNOWN)  # every Secret registers for redaction: leave no random text behind
    try:
        try:
            secret = resolve("plan", BASE, {"GITEA_TOKEN": token}).gitea_token
        except UsageError as exc:
            assert "zq9" not in exc.message
            return
        assert secret is not None
        headers = {"Authorization": f"token {secret.reveal()}"}
        request = httpx.Request("GET", "https://git.example.com/api/v1", headers=headers)
        assert request.headers["Authorization"] == f"token {token.strip()}"
    finally:
        redact._KNOWN.clear()
        redact._KNOWN.update(known)


@given(template=st.tuples(st.sampled_from(["https://", "http://"]),
                          st.lists(st.sampled_from(["{slug}", "{{slug}}", "fleet", ".", "-", "/", "..", "%2e", "t",
                                                    "example.com", "{slug}."]), min_size=1, max_size=6))
       .map(lambda parts: parts[0] + "".join(parts[1])))
def test_an_accepted_tenant_template_gives_every_tenant_its_own_url(template: str) -> None:
    import httpx

    try:
        s = plan(tenant_url_template=template)
    except UsageError:
        return
    urls = {str(httpx.URL(s.tenant_url(slug))) for slug in ("alpha", "bravo", "charlie")}
    assert len(urls) == 3, template
