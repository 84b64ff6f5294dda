"""Every setting, defined once (CONTRACT §2).

The `Settings` dataclass *is* the table: each field carries its flag, env names, default, group
and doc in its metadata. The CLI options, the Dagger arguments, `plan`, the README table and
validation are all derived from it. Precedence: flag > (sandbox) > env > fleetgate.toml > default.
"""

from __future__ import annotations

import os
import re
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipelines.errors import UsageError
from pipelines.redact import Secret
from pipelines.urlguard import PRODUCTION_CP_URL, check_cp_url

SHA_RE = re.compile(r"^[0-9a-f]{40}$")
REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
TRUTHY = frozenset({"1", "true", "yes", "on", "disabled", "disable"})
FALSY = frozenset({"", "0", "false", "no", "off", "enabled", "enable"})
CONFIG_FILE = "fleetgate.toml"
TAG_TEMPLATE_FIELDS = ("sha", "short_sha")
NOTIFY_URL_RE = re.compile(r"^[a-z][a-z0-9+.-]*://[\x21-\x7e]+$")  # printable ASCII, no white space
HEALTH_PATH_RE = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")


class Kind(Enum):
    STR = "string"
    SHA = "40-hex SHA"
    REPO = "owner/name"
    URL = "http(s) URL"
    INT = "integer"
    SECONDS = "seconds"
    BOOL = "boolean"
    LIST = "list"
    CHOICE = "choice"
    SECRET = "secret"  # noqa: S105 - a kind name, not a password
    SWITCH = "kill switch"
    CANARY = "slug or none"
    TEMPLATE = "template"
    NUMBER = "number"


class Group(Enum):
    """Which verbs see a setting: a verb lists the groups it uses (`VERB_GROUPS`)."""

    COMMIT = "commit"
    GITEA = "gitea"
    GATES = "gates"
    KILL_SWITCH = "kill switch"
    CP = "control plane"
    ROLLOUT = "rollout"
    TAG = "tag"
    TENANTS = "tenants"
    LEASE = "lease"
    LEDGER = "ledger"
    REGISTRY = "registry"
    APPROVAL = "approval"
    WATCH = "watch"
    NOTIFY = "notify"


REQUIRED: Any = None  # a required setting has no default; the verb that needs it says so


@dataclass(frozen=True)
class Option:
    """One row of the settings table."""

    name: str
    flag: str
    env: tuple[str, ...]
    default: Any
    kind: Kind
    group: Group
    doc: str
    minimum: float | None = None
    choices: tuple[str, ...] = ()
    negatable: bool = False  # a `--x/--no-x` pair
    multiple: bool = False  # a repeatable flag
    shown_default: str = ""  # how the docs state a derived default

    @property
    def config_key(self) -> str:
        return self.name

    @property
    def default_text(self) -> str:
        if self.shown_default:
            return self.shown_default
        if self.default is REQUIRED:
            return "required" if self.kind not in (Kind.SECRET, Kind.CANARY, Kind.SWITCH) else "unset"
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        if isinstance(self.default, tuple):
            return ", ".join(self.default) or "none"
        return str(self.default)


def opt(
    flag: str,
    *env: str,
    default: Any,
    kind: Kind,
    group: Group,
    doc: str,
    minimum: float | None = None,
    choices: tuple[str, ...] = (),
    negatable: bool = False,
    multiple: bool = False,
    shown_default: str = "",
) -> Any:
    """A dataclass field whose metadata is its table row (the name is filled in later)."""
    row = dict(
        flag=flag, env=env, default=default, kind=kind, group=group, doc=doc, minimum=minimum,
        choices=choices, negatable=negatable, multiple=multiple, shown_default=shown_default,
    )
    return field(metadata={"fleetgate": row})


C, G, GT, K, CP, R, T, L, LD, RG = (
    Group.COMMIT, Group.GITEA, Group.GATES, Group.KILL_SWITCH, Group.CP, Group.ROLLOUT,
    Group.TENANTS, Group.LEASE, Group.LEDGER, Group.REGISTRY,
)
TG = Group.TAG
AP, W, N = Group.APPROVAL, Group.WATCH, Group.NOTIFY


@dataclass(frozen=True, kw_only=True)
class Settings:
    # -- what to deploy, and where it comes from
    sha: str = opt("--sha", "GITHUB_SHA", default=REQUIRED, kind=Kind.SHA, group=C,
                   doc="Full 40-hex commit SHA to deploy.")
    repo: str = opt("--repo", "GITHUB_REPOSITORY", default=REQUIRED, kind=Kind.REPO, group=G,
                    doc="owner/name of the repository on Gitea.")
    gitea_url: str = opt("--gitea-url", "GITEA_URL", "GITHUB_SERVER_URL", default=REQUIRED, kind=Kind.URL,
                         group=G, doc="Gitea base URL (no /api/v1).")
    gitea_token: Secret | None = opt("--gitea-token", "GITEA_TOKEN", default=REQUIRED, kind=Kind.SECRET, group=G,
                                     shown_default="required for gates, kill switch, lease",
                                     doc="Gitea token; sent only to the Gitea origin.")
    gitea_retry_deadline: float = opt("--gitea-retry-deadline", "FLEETGATE_GITEA_RETRY_SECONDS", default=60.0,
                                      kind=Kind.SECONDS, group=G, minimum=0,
                                      doc="How long one Gitea read may be retried (429, 5xx, lost connections) "
                                      "before the step fails closed; within a gate wait, never past its timeout.")
    # -- gates
    branch: str = opt("--branch", "GITHUB_REF_NAME", default="main", kind=Kind.STR, group=GT,
                      doc="Branch whose head decides the stand-down rule.")
    required_contexts: tuple[str, ...] = opt(
        "--required-context", "PROD_AUTO_DEPLOY_REQUIRED_CONTEXTS", default=(), kind=Kind.LIST, group=GT,
        multiple=True, doc="Status context that must be success on the exact SHA (repeatable; env: comma "
        "or newline separated). An empty list is a configuration error.")
    poll_interval: float = opt("--poll-interval", "CI_STATUS_POLL_INTERVAL_SECONDS", default=15.0,
                               kind=Kind.SECONDS, group=GT, minimum=0.01, doc="Gate polling interval.")
    gate_timeout: float = opt("--gate-timeout", "CI_STATUS_TIMEOUT_SECONDS", default=1800.0, kind=Kind.SECONDS,
                              group=GT, minimum=0, doc="Give up waiting for gates after this long.")
    # -- kill switch
    disabled: str = opt("--disabled", "PROD_AUTO_DEPLOY_DISABLED", default="", kind=Kind.SWITCH, group=K,
                        doc="Kill switch at plan time (truthy: 1, true, yes, on, disabled, disable; any case).")
    live_kill_switch: bool = opt("--live-kill-switch", default=True, kind=Kind.BOOL, group=K, negatable=True,
                                 doc="Re-read the Gitea Actions variable PROD_AUTO_DEPLOY_DISABLED before "
                                 "every CP write.")
    # -- control plane
    cp_url: str = opt("--cp-url", "CP_URL", default=PRODUCTION_CP_URL, kind=Kind.URL, group=CP,
                      doc="Control-plane base URL.")
    prod_cp_url: str = opt("--prod-cp-url", "PROD_CP_URL", default=PRODUCTION_CP_URL, kind=Kind.URL, group=CP,
                           doc="The URL the guard treats as production.")
    allow_non_prod_cp_url: bool = opt("--allow-non-prod-cp-url", "PROD_ALLOW_NON_PROD_CP_URL", default=False,
                                      kind=Kind.BOOL, group=CP,
                                      doc="Required when --cp-url differs from --prod-cp-url.")
    cp_token: Secret | None = opt("--cp-token", "CP_ADMIN_API_TOKEN", default=REQUIRED, kind=Kind.SECRET,
                                  group=CP, shown_default="required for CP calls",
                                  doc="Control-plane admin token; sent only to the CP origin.")
    cp_timeout: float = opt("--cp-timeout", "PROD_AUTO_DEPLOY_ROLLOUT_HTTP_TIMEOUT_SECONDS", default=600.0,
                            kind=Kind.SECONDS, group=CP, minimum=120,
                            doc="Read timeout of a wave's CP call (the CP answers when the wave's slowest "
                            "tenant is done).")
    cp_retry_backoff: float = opt("--cp-retry-backoff", "PROD_AUTO_DEPLOY_CP_RETRY_BACKOFF_SECONDS", default=5.0,
                                  kind=Kind.SECONDS, group=CP, minimum=0,
                                  doc="First wait before retrying a 502/503/504 or a lost connection to the "
                                  "CP; doubles for each of the three retries (5, 10, 20 s).")
    # -- rollout
    target_tag: str = opt("--target-tag", "PROD_AUTO_DEPLOY_TARGET_TAG", default=REQUIRED, kind=Kind.STR,
                          group=TG, shown_default="--tag-template applied to --sha",
                          doc="Image tag the CP deploys (default: --tag-template applied to --sha).")
    tag_template: str = opt("--tag-template", "PROD_TAG_TEMPLATE", default="staging-{short_sha}",
                            kind=Kind.TEMPLATE, group=TG,
                            doc="How a SHA maps to a tag ({sha}, {short_sha}); used for rollback.")
    canary: str = opt("--canary", "PROD_AUTO_DEPLOY_CANARY_SLUG", default=REQUIRED, kind=Kind.CANARY, group=R,
                      shown_default="first tenant of the CP listing",
                      doc="Canary tenant slug (default: first tenant of the CP listing); `none` disables "
                      "the canary wave.")
    batch_size: int = opt("--batch-size", "PROD_AUTO_DEPLOY_BATCH_SIZE", default=3, kind=Kind.INT, group=R,
                          minimum=1, doc="Tenants per wave after the canary.")
    soak_seconds: float = opt("--soak-seconds", "PROD_AUTO_DEPLOY_SOAK_SECONDS", default=60.0,
                              kind=Kind.SECONDS, group=R, minimum=0, doc="Wait after each verified wave.")
    max_stragglers: int = opt("--max-stragglers", "PROD_AUTO_DEPLOY_MAX_STRAGGLERS", default=0, kind=Kind.INT,
                              group=R, minimum=0,
                              doc="Tenants that may stay unverified before the run fails (never the canary).")
    on_failure: str = opt("--on-failure", "PROD_AUTO_DEPLOY_ON_FAILURE", default="halt", kind=Kind.CHOICE,
                          group=R, choices=("halt", "rollback"),
                          doc="halt, or rollback (every tenant this run changed goes back to the SHA it "
                          "had, verified).")
    dry_run: bool = opt("--dry-run", "PROD_AUTO_DEPLOY_DRY_RUN", default=False, kind=Kind.BOOL, group=R,
                        doc="CP calls carry dry_run: true; nothing changes.")
    # -- tenants
    tenant_url_template: str = opt("--tenant-url-template", "PROD_TENANT_URL_TEMPLATE",
                                   default="https://{slug}.moleculesai.app", kind=Kind.TEMPLATE, group=T,
                                   doc="Base URL of a tenant ({slug}); /buildinfo is appended.")
    verify_timeout: float = opt("--verify-timeout", "PROD_AUTO_DEPLOY_VERIFY_TIMEOUT_SECONDS", default=60.0,
                                kind=Kind.SECONDS, group=T, minimum=0,
                                doc="How long a wave's tenants may take to report the SHA on /buildinfo.")
    verify_interval: float = opt("--verify-interval", "PROD_AUTO_DEPLOY_VERIFY_INTERVAL_SECONDS", default=5.0,
                                 kind=Kind.SECONDS, group=T, minimum=0.01,
                                 doc="How often unverified tenants' /buildinfo is re-read.")
    health_path: str = opt("--health-path", "PROD_TENANT_HEALTH_PATH", default="", kind=Kind.STR, group=T,
                           shown_default="unset",
                           doc="A path on each tenant (e.g. /healthz) that must answer 2xx wherever /buildinfo is "
                           "read.")
    # -- approval after the canary, and the soak watch
    approve_after_canary: bool = opt("--approve-after-canary", "FLEETGATE_APPROVE_AFTER_CANARY", default=False,
                                     kind=Kind.BOOL, group=W,
                                     doc="Pause after the verified canary until the approval context on the SHA "
                                     "is success (go on) or failure (stop).")
    approval_context: str = opt("--approval-context", "FLEETGATE_APPROVAL_CONTEXT", default="fleetgate/approve",
                                kind=Kind.STR, group=AP,
                                doc="The status context that approves (success) or rejects (failure) a paused run.")
    approval_timeout: float = opt("--approval-timeout", "FLEETGATE_APPROVAL_TIMEOUT_SECONDS", default=3600.0,
                                  kind=Kind.SECONDS, group=W, minimum=0,
                                  doc="How long to wait for approval before failing.")
    prometheus_url: str = opt("--prometheus-url", "FLEETGATE_PROMETHEUS_URL", default="", kind=Kind.URL, group=W,
                              shown_default="unset",
                              doc="Prometheus base URL for --analysis-query (no token is sent to it).")
    analysis_query: str = opt("--analysis-query", "FLEETGATE_ANALYSIS_QUERY", default="", kind=Kind.STR, group=W,
                              shown_default="unset",
                              doc="A PromQL instant query evaluated on every soak-watch tick; its value must stay "
                              "≤ --analysis-max.")
    analysis_max: float = opt("--analysis-max", "FLEETGATE_ANALYSIS_MAX", default=0.0, kind=Kind.NUMBER, group=W,
                              doc="The largest acceptable value of the query; above it fails the wave.")
    analysis_inconclusive_limit: int = opt(
        "--analysis-inconclusive-limit", "FLEETGATE_ANALYSIS_INCONCLUSIVE_LIMIT", default=3, kind=Kind.INT,
        group=W, minimum=1,
        doc="Consecutive ticks with no data or an error before the analysis fails closed.")
    notify: tuple[Secret, ...] = opt(
        "--notify", "FLEETGATE_NOTIFY", default=(), kind=Kind.SECRET, group=N, multiple=True,
        doc="Where to tell people how a run ended (and that it waits for approval): Apprise URLs (slack://, "
        "msteams://, json://host/path, mailto://; repeatable; env: comma or newline separated). Secrets, never "
        "printed; a failed notification is a warning, never a failed deploy.")
    # -- lease
    lease: bool = opt("--lease", "FLEETGATE_USE_LEASE", default=True, kind=Kind.BOOL, group=L, negatable=True,
                      doc="Serialise deploys through a lease held in Gitea; --no-lease is shown in the plan.")
    lease_ttl: float = opt("--lease-ttl", "FLEETGATE_LEASE_TTL_SECONDS", default=900.0, kind=Kind.SECONDS,
                           group=L, minimum=1, doc="Lease expiry; renewed before every wave.")
    lease_wait: float = opt("--lease-wait", "FLEETGATE_LEASE_WAIT_SECONDS", default=3600.0, kind=Kind.SECONDS,
                            group=L, minimum=0, doc="How long to wait for another run's lease before failing.")
    # -- ledger
    ledger: str = opt("--ledger", "FLEETGATE_LEDGER", default="fleetgate-ledger.jsonl", kind=Kind.STR,
                      group=LD, doc="Append-only JSON Lines record of the run.")
    # -- registry (promote)
    image: str = opt("--image", "FLEETGATE_IMAGE", default=REQUIRED, kind=Kind.STR, group=RG,
                     doc="Image repository without tag, e.g. registry.example.com/org/app.")
    promote_tag: str = opt("--promote-tag", "FLEETGATE_PROMOTE_TAG", default="latest", kind=Kind.STR,
                           group=RG, doc="Moving tag that promote re-points to the verified image.")
    registry_username: str = opt("--registry-username", "REGISTRY_USERNAME", default="", kind=Kind.STR,
                                 group=RG, doc="Registry user (basic or token auth).")
    registry_password: Secret | None = opt("--registry-password", "REGISTRY_PASSWORD", default=REQUIRED,
                                           kind=Kind.SECRET, group=RG, doc="Registry password or token.")

    # -- derived
    @property
    def short_sha(self) -> str:
        return self.sha[:7]

    def tag_for(self, sha: str) -> str:
        return self.tag_template.format(sha=sha, short_sha=sha[:7])

    def tenant_url(self, slug: str) -> str:
        return self.tenant_url_template.format(slug=slug).rstrip("/")

    @property
    def enabled(self) -> bool:
        return switch_engaged(self.disabled) is None

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def _rows() -> tuple[Option, ...]:
    return tuple(Option(name=f.name, **f.metadata["fleetgate"]) for f in fields(Settings))


OPTIONS: tuple[Option, ...] = _rows()
BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}

ALL_DEPLOY = (C, G, GT, K, CP, R, TG, T, L, LD, AP, W, N)
VERB_GROUPS: dict[str, tuple[Group, ...]] = {
    "plan": ALL_DEPLOY,
    "wait-gates": (C, G, GT),
    "assert-enabled": (G, K),
    "rollout": ALL_DEPLOY,
    "verify": (C, CP, T),
    "deploy-production": ALL_DEPLOY,
    "redeploy": (C, G, CP, R, TG, T, L, LD, AP, W, N),
    "promote": (C, CP, TG, T, LD, RG),
    "approve": (C, G, AP),
}


def options_for(verb: str) -> tuple[Option, ...]:
    groups = VERB_GROUPS.get(verb, ())
    return tuple(o for o in OPTIONS if o.group in groups)


# ---------------------------------------------------------------- parsing and validation


def switch_engaged(value: str) -> str | None:
    """Why the kill switch is engaged by `value`, or None when it is off.

    An unrecognised value engages it: when in doubt, stop.
    """
    v = value.strip().lower()
    if v in FALSY:
        return None
    if v in TRUTHY:
        return f"value {v!r}"
    return f"unrecognised value {value.strip()[:40]!r} (treated as engaged)"


def _bool(text: str, where: str) -> bool:
    v = text.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("", "0", "false", "no", "off"):
        return False
    raise UsageError(f"{where}: expected a boolean (true/false), got {text!r}")


def check_template(template: str, names: tuple[str, ...], where: str) -> None:
    """`template` may name only `names`, plainly: an attribute, index or conversion (`{sha.x}`,
    `{slug[0]}`, `{sha!r}`) is a usage error, not a traceback or a silently odd tag or URL."""
    allowed = " and ".join(f"{{{n}}}" for n in names)
    try:
        plain = all(name in names and conversion is None
                    for _, name, _, conversion in string.Formatter().parse(template) if name is not None)
        if plain:
            template.format(**dict.fromkeys(names, "0" * 40))  # a bad format spec raises here
    except (KeyError, IndexError, ValueError):
        plain = False
    if not plain:
        raise UsageError(f"{where}: only {allowed} may appear, got {template!r}")


def normalise_url(text: str, where: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{where}: expected an http(s) URL, got {text!r}")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UsageError(f"{where}: credentials in the URL are not allowed")
    if parts.query or parts.fragment:
        raise UsageError(f"{where}: a base URL takes no query or fragment, got {text!r}")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise UsageError(f"{where}: malformed port in {text!r}") from None
    return text.strip().rstrip("/")


def _convert(o: Option, raw: Any, where: str) -> Any:
    """Turn a raw value (str from env/flag, or a TOML value) into the setting's type, validated."""
    k = o.kind
    if k is Kind.SECRET and o.multiple:  # --notify: a list of secrets; the message never echoes one
        parts = raw if isinstance(raw, list | tuple) else [raw]
        texts = [p.strip() for part in parts
                 for p in re.split(r"[,\n]", part.reveal() if isinstance(part, Secret) else str(part))]
        for n, text in enumerate((t for t in texts if t), start=1):
            if not NOTIFY_URL_RE.match(text):
                raise UsageError(f"{where}: item {n} is not a URL like scheme://… (not shown: it is a secret)")
        return tuple(Secret(t) for t in dict.fromkeys(t for t in texts if t))
    if k is Kind.SECRET:
        if isinstance(raw, Secret):  # the sandbox overlay hands over Secrets, never their text
            return raw if raw.reveal().strip() else None
        text = str(raw).strip()
        return Secret(text) if text else None
    if k is Kind.LIST:
        items: list[str] = []
        for part in raw if isinstance(raw, list | tuple) else [raw]:
            items.extend(p.strip() for p in re.split(r"[,\n]", str(part)))
        return tuple(dict.fromkeys(i for i in items if i))
    if k is Kind.BOOL:
        return raw if isinstance(raw, bool) else _bool(str(raw), where)
    if k in (Kind.INT, Kind.SECONDS, Kind.NUMBER):
        try:
            num: float = int(str(raw).strip()) if k is Kind.INT else float(str(raw).strip())
        except ValueError:
            raise UsageError(f"{where}: expected {'an integer' if k is Kind.INT else 'a number of seconds'}, "
                             f"got {raw!r}") from None
        if num != num or num in (float("inf"), float("-inf")):
            raise UsageError(f"{where}: expected a finite number, got {raw!r}")
        if o.minimum is not None and num < o.minimum:
            raise UsageError(f"{where}: must be ≥ {o.minimum:g}, got {raw!r}")
        return num
    text = str(raw).strip()
    if k is Kind.SHA:
        if not SHA_RE.match(text.lower()):
            raise UsageError(f"{where}: expected a full 40-hex commit SHA, got {text[:60]!r}")
        return text.lower()
    if k is Kind.REPO:
        if not REPO_RE.match(text):
            raise UsageError(f"{where}: expected owner/name, got {text[:80]!r}")
        return text
    if k is Kind.URL:
        return normalise_url(text, where)
    if k is Kind.CHOICE:
        if text.lower() not in o.choices:
            raise UsageError(f"{where}: expected one of {', '.join(o.choices)}, got {text!r}")
        return text.lower()
    if k is Kind.CANARY:
        if text.lower() == "none" or text == "":
            return text.lower()
        if not SLUG_RE.match(text):
            raise UsageError(f"{where}: expected a tenant slug or none, got {text[:80]!r}")
        return text
    return text  # STR and TEMPLATE (templates are checked with the verbs that use them)


def load_config(path: Path | None) -> tuple[dict[str, Any], str]:
    """The `fleetgate.toml` settings (top-level keys are setting names) and where they came from."""
    explicit = path is not None
    p = path if path is not None else Path(CONFIG_FILE)
    if not p.is_file():
        if explicit:
            raise UsageError(f"--config: no such file {str(p)!r}")
        return {}, ""
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{p}: not valid TOML: {exc}") from None
    settings = {k: v for k, v in data.items() if not isinstance(v, dict)}  # tables ([lint]) are not settings
    for key in settings:
        if key not in BY_NAME:
            raise UsageError(f"{p}: unknown setting {key!r}")
        if BY_NAME[key].kind is Kind.SECRET:
            raise UsageError(f"{p}: {key} is a secret; pass it through the environment, never a file")
    return settings, str(p)


def resolve(
    verb: str,
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    config: Mapping[str, Any] | None = None,
    config_source: str = CONFIG_FILE,
    overlay: Mapping[str, Any] | None = None,
) -> Settings:
    """Resolve every setting `verb` uses; validate all of them before anything is contacted.

    `flags` hold only what was given on the command line (None = not given). `overlay` (the
    sandbox) sits between flags and env. Settings the verb does not use keep their default.
    """
    config = config or {}
    overlay = overlay or {}
    used = {o.name for o in options_for(verb)}
    values: dict[str, Any] = {}
    for o in OPTIONS:
        raw: Any = None
        where = o.flag
        if o.name in used:
            flag_value = flags.get(o.name)
            if flag_value is not None and flag_value != ():
                raw, where = flag_value, o.flag
            elif o.name in overlay:
                raw, where = overlay[o.name], f"{o.flag} (sandbox)"
            else:
                for name in o.env:
                    if env.get(name, "").strip() != "" or (o.kind is Kind.SWITCH and name in env):
                        raw, where = env[name], name
                        break
                else:
                    if o.name in config:
                        raw, where = config[o.name], f"{config_source}: {o.name}"
        if raw is None:  # an unset secret stays None (REQUIRED); any other unset required setting is ""
            values[o.name] = "" if o.default is REQUIRED and o.kind is not Kind.SECRET else o.default
        else:
            values[o.name] = _convert(o, raw, where)
    s = Settings(**values)
    return _check_required(verb, s)


def _check_required(verb: str, s: Settings) -> Settings:
    groups = VERB_GROUPS.get(verb, ())
    if Group.COMMIT in groups and not s.sha:
        raise UsageError("--sha (or GITHUB_SHA) is required: the full 40-hex commit SHA")
    if Group.GITEA in groups:
        if not s.repo:
            raise UsageError("--repo (or GITHUB_REPOSITORY) is required: owner/name on Gitea")
        if not s.gitea_url:
            raise UsageError("--gitea-url (or GITEA_URL / GITHUB_SERVER_URL) is required")
    if Group.GATES in groups and not s.required_contexts:
        raise UsageError("no required status contexts: set --required-context or PROD_AUTO_DEPLOY_REQUIRED_CONTEXTS "
                         "(an empty list would let any commit through)")
    if Group.TAG in groups:
        check_template(s.tag_template, TAG_TEMPLATE_FIELDS, "--tag-template")
        # redeploy keeps "unset" visible: the Gitea variable PROD_MANUAL_REDEPLOY_TARGET_TAG may
        # supply the tag before the template does (pipelines/deploy.py: manual_target_tag).
        if not s.target_tag and s.sha and verb != "redeploy":
            s = s.with_(target_tag=s.tag_for(s.sha))
    if Group.TENANTS in groups:
        check_template(s.tenant_url_template, ("slug",), "--tenant-url-template")
        if "{slug}" not in s.tenant_url_template:
            raise UsageError("--tenant-url-template must contain {slug}")
        normalise_url(s.tenant_url("probe"), "--tenant-url-template")
    if Group.TENANTS in groups and s.health_path:
        if not HEALTH_PATH_RE.match(s.health_path) or any(seg in (".", "..") for seg in s.health_path.split("/")):
            raise UsageError(f"--health-path: expected a plain path like /healthz, got {s.health_path[:80]!r}")
    if Group.APPROVAL in groups and not s.approval_context.strip():
        raise UsageError("--approval-context must not be empty")
    if Group.WATCH in groups and s.analysis_query and not s.prometheus_url:
        raise UsageError("--analysis-query needs --prometheus-url (or FLEETGATE_PROMETHEUS_URL)")
    if Group.CP in groups:
        check_cp_url(s.cp_url, s.prod_cp_url, s.allow_non_prod_cp_url)
    if Group.REGISTRY in groups and not s.image:
        raise UsageError("--image (or FLEETGATE_IMAGE) is required: the image repository to promote in")
    if Group.LEDGER in groups and verb != "plan":
        _check_ledger_path(s.ledger)
    return s


def _check_ledger_path(ledger: str) -> None:
    """A ledger that cannot be written would fail the run after its first write: refuse it up front."""
    path = Path(ledger)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"--ledger: {ledger!r} is a folder; give a file path")
    if not folder.is_dir():
        raise UsageError(f"--ledger: the folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"--ledger: {ledger!r} is not writable")
