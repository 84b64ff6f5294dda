"""Every setting, defined once (CONTRACT §2).

The `Settings` dataclass *is* the table: each field carries its flag, env names, default, group,
kind, doc and the verbs that require it in its metadata. The CLI options, the Dagger arguments,
`plan`, the README table, "missing X" messages and validation are all derived from it. Which verb
takes which group is the verb table's (`pipelines/verbs.py`). A `Kind` parses and checks a value
the way the HTTP layer will use it, so nothing the table accepts is refused later by httpx.
Precedence: flag > (sandbox) > env > fleetgate.toml > default.
"""

from __future__ import annotations

import os
import re
import string
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from pipelines.errors import UsageError
from pipelines.redact import Secret
from pipelines.urlguard import PRODUCTION_CP_URL, check_cp_url, check_host, normalised_url

if TYPE_CHECKING:
    from pipelines.verbs import Verb

SHA_RE = re.compile(r"^[0-9a-f]{40}$")
REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
TRUTHY = frozenset({"1", "true", "yes", "on", "disabled", "disable"})
FALSY = frozenset({"", "0", "false", "no", "off", "enabled", "enable"})
CONFIG_FILE = "fleetgate.toml"
TAG_TEMPLATE_FIELDS = ("sha", "short_sha")
NOTIFY_URL_RE = re.compile(r"^[a-z][a-z0-9+.-]*://[\x21-\x7e]+$")  # printable ASCII, no white space
HEALTH_PATH_RE = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")
# Tables in fleetgate.toml that belong to another reader (lint-workflows reads [lint]); any other is an error.
FOREIGN_TABLES = frozenset({"lint"})
# Two slugs the tenant template is rendered for: different tenants must get different URLs.
PROBE_SLUGS = ("probe-a", "probe-b")


# ---------------------------------------------------------------- kinds: parsing, Python type, metavar


def _text(o: Option, raw: Any, where: str) -> str:
    return str(raw).strip()


def _secret(o: Option, raw: Any, where: str) -> Secret | tuple[Secret, ...] | None:
    if o.multiple:
        return _secrets(raw, where)
    if isinstance(raw, Secret):  # the sandbox overlay hands over Secrets, never their text
        text = raw.reveal().strip()
    else:
        text = str(raw).strip()
    if not text:
        return None
    # httpx refuses (with the token in its traceback) what is not a header-safe ASCII value: refuse it
    # here, without ever showing it.
    if not all(" " <= c <= "~" for c in text):
        raise UsageError(f"{where}: a token must be printable ASCII (no control characters, line breaks or "
                         "non-ASCII letters); its value is not shown")
    return raw if isinstance(raw, Secret) and raw.reveal() == text else Secret(text)


def _secrets(raw: Any, where: str) -> tuple[Secret, ...]:
    """--notify: a list of secret URLs; the message never echoes one."""
    parts = raw if isinstance(raw, list | tuple) else [raw]
    texts = [p.strip() for part in parts
             for p in re.split(r"[,\n]", part.reveal() if isinstance(part, Secret) else str(part))]
    for n, text in enumerate((t for t in texts if t), start=1):
        if not NOTIFY_URL_RE.match(text):
            raise UsageError(f"{where}: item {n} is not a URL like scheme://… (not shown: it is a secret)")
    return tuple(Secret(t) for t in dict.fromkeys(t for t in texts if t))


def _path(o: Option, raw: Any, where: str) -> str:
    text = str(raw).strip()
    if text and (not HEALTH_PATH_RE.match(text) or any(seg in (".", "..") for seg in text.split("/"))):
        raise UsageError(f"{where}: expected a plain path like /healthz, got {text[:80]!r}")
    return text


def _list(o: Option, raw: Any, where: str) -> tuple[str, ...]:
    items: list[str] = []
    for part in raw if isinstance(raw, list | tuple) else [raw]:
        items.extend(p.strip() for p in re.split(r"[,\n]", str(part)))
    return tuple(dict.fromkeys(i for i in items if i))


def _bool(o: Option, raw: Any, where: str) -> bool:
    if isinstance(raw, bool):
        return raw
    v = str(raw).strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("", "0", "false", "no", "off"):
        return False
    raise UsageError(f"{where}: expected a boolean (true/false), got {str(raw)[:40]!r}")


def _number(o: Option, raw: Any, where: str) -> float:
    integer = o.kind is Kind.INT
    try:
        num: float = int(str(raw).strip()) if integer else float(str(raw).strip())
    except ValueError:
        raise UsageError(f"{where}: expected {'an integer' if integer else 'a number of seconds'}, "
                         f"got {str(raw)[:40]!r}") from None
    if num != num or num in (float("inf"), float("-inf")):
        raise UsageError(f"{where}: expected a finite number, got {str(raw)[:40]!r}")
    if o.minimum is not None and num < o.minimum:
        raise UsageError(f"{where}: must be ≥ {o.minimum:g}, got {str(raw)[:40]!r}")
    return num


def _sha(o: Option, raw: Any, where: str) -> str:
    text = str(raw).strip()
    if not SHA_RE.match(text.lower()):
        raise UsageError(f"{where}: expected a full 40-hex commit SHA, got {text[:60]!r}")
    return text.lower()


def _repo(o: Option, raw: Any, where: str) -> str:
    text = str(raw).strip()
    # A dot segment is folded by the HTTP layer (`acme/..` would read another path and answer 404, "off").
    if not REPO_RE.match(text) or any(part in (".", "..") for part in text.split("/")):
        raise UsageError(f"{where}: expected owner/name, got {text[:80]!r}")
    return text


def _url(o: Option, raw: Any, where: str) -> str:
    return normalise_url(str(raw), where)


def _choice(o: Option, raw: Any, where: str) -> str:
    text = str(raw).strip()
    if text.lower() not in o.choices:
        raise UsageError(f"{where}: expected one of {', '.join(o.choices)}, got {text[:40]!r}")
    return text.lower()


def _canary(o: Option, raw: Any, where: str) -> str:
    text = str(raw).strip()
    if text.lower() == "none" or text == "":
        return text.lower()
    if not SLUG_RE.match(text):
        raise UsageError(f"{where}: expected a tenant slug or none, got {text[:80]!r}")
    return text


def _tag_template(o: Option, raw: Any, where: str) -> str:
    text = str(raw).strip()
    check_template(text, TAG_TEMPLATE_FIELDS, where)
    return text


def _tenant_template(o: Option, raw: Any, where: str) -> str:
    text = str(raw).strip()
    check_tenant_template(text, where)
    return text


def _image(o: Option, raw: Any, where: str) -> str:
    from pipelines.registry import parse_image  # the one image grammar; httpx only when an image is given

    text = str(raw).strip()
    parse_image(text, where)
    return text


Parse = Callable[["Option", Any, str], Any]


class Kind(Enum):
    """What a setting is: how its text is parsed and checked, the Python type a Dagger argument
    declares for it, the CLI metavar, and which TOML value types a settings file may give it."""

    STR = ("string", "TEXT", "str", _text, (str,))
    SHA = ("40-hex SHA", "SHA", "str", _sha, (str,))
    REPO = ("owner/name", "OWNER/NAME", "str", _repo, (str,))
    URL = ("http(s) URL", "URL", "str", _url, (str,))
    IMAGE = ("image repository", "IMAGE", "str", _image, (str,))
    INT = ("integer", "INTEGER", "int", _number, (int,))
    SECONDS = ("seconds", "SECONDS", "float", _number, (int, float))
    NUMBER = ("number", "NUMBER", "float", _number, (int, float))
    BOOL = ("boolean", "", "bool", _bool, (bool,))
    LIST = ("list", "TEXT", "list[str]", _list, (list, str))
    CHOICE = ("choice", "CHOICE", "str", _choice, (str,))
    SECRET = ("secret", "TOKEN", "dagger.Secret", _secret, ())  # never in a file
    SWITCH = ("kill switch", "VALUE", "str", _text, (str, bool, int))
    CANARY = ("slug or none", "SLUG", "str", _canary, (str,))
    TAG_TEMPLATE = ("tag template", "TEMPLATE", "str", _tag_template, (str,))
    URL_TEMPLATE = ("URL template", "TEMPLATE", "str", _tenant_template, (str,))
    PATH = ("URL path", "PATH", "str", _path, (str,))

    def __init__(self, label: str, metavar: str, annotation: str, parse: Parse,
                 toml_types: tuple[type, ...]) -> None:
        self.label = label
        self.metavar = metavar
        self.annotation = annotation  # the argument's type as source text (ci/_verbs.py is generated)
        self.parse = parse
        self.toml_types = toml_types

    def accepts_toml(self, value: Any) -> bool:
        if isinstance(value, bool) and bool not in self.toml_types:
            return False  # TOML's true is not an integer here
        if isinstance(value, list):
            return list in self.toml_types and all(isinstance(v, str) for v in value)
        return isinstance(value, self.toml_types)


class Group(Enum):
    """Which verbs see a setting: a verb row lists the groups it takes (`pipelines/verbs.py`)."""

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


REQUIRED: Any = None  # a required setting has no default; `required_by` says which verbs need it
EVERY_VERB: tuple[str, ...] = ("*",)  # required_by: every verb that takes the setting


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
    required_by: tuple[str, ...] = ()  # verbs that stop (exit 2) without it; EVERY_VERB: all that take it
    why_required: str = ""  # said after "… is required"

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

    @property
    def annotation(self) -> str:
        """The type of its Dagger argument, as source text."""
        many = self.multiple and self.kind is not Kind.LIST
        return f"list[{self.kind.annotation}]" if many else self.kind.annotation

    def parse(self, raw: Any, where: str | None = None) -> Any:
        """`raw` (text from a flag or env, a TOML value, a Dagger argument) as this setting's value, checked."""
        return self.kind.parse(self, raw, where or self.flag)

    def required_for(self, verb: str) -> bool:
        return verb in self.required_by or (self.required_by == EVERY_VERB)

    def missing(self, verb: str) -> str:
        """The one line said when `verb` runs without this setting."""
        envs = f" (or {' / '.join(self.env)})" if self.env else ""
        why = f": {self.why_required}" if self.why_required else f" for {verb}"
        return f"{self.flag}{envs} is required{why}"


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
    required_by: tuple[str, ...] = (),
    why_required: str = "",
) -> Any:
    """A dataclass field whose metadata is its table row (the name is filled in later)."""
    row = dict(
        flag=flag, env=env, default=default, kind=kind, group=group, doc=doc, minimum=minimum,
        choices=choices, negatable=negatable, multiple=multiple, shown_default=shown_default,
        required_by=required_by, why_required=why_required,
    )
    return field(metadata={"fleetgate": row})


C, G, GT, K, CP, R, T, L, LD, RG = (
    Group.COMMIT, Group.GITEA, Group.GATES, Group.KILL_SWITCH, Group.CP, Group.ROLLOUT,
    Group.TENANTS, Group.LEASE, Group.LEDGER, Group.REGISTRY,
)
TG = Group.TAG
AP, W, N = Group.APPROVAL, Group.WATCH, Group.NOTIFY
EVERY = EVERY_VERB


@dataclass(frozen=True, kw_only=True)
class Settings:
    # -- what to deploy, and where it comes from
    sha: str = opt("--sha", "GITHUB_SHA", default=REQUIRED, kind=Kind.SHA, group=C,
                   required_by=EVERY, doc="Full 40-hex commit SHA to deploy.")
    repo: str = opt("--repo", "GITHUB_REPOSITORY", default=REQUIRED, kind=Kind.REPO, group=G,
                    required_by=EVERY, doc="owner/name of the repository on Gitea.")
    gitea_url: str = opt("--gitea-url", "GITEA_URL", "GITHUB_SERVER_URL", default=REQUIRED, kind=Kind.URL,
                         group=G, required_by=EVERY, doc="Gitea base URL (no /api/v1).")
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
        # every verb that judges gates needs them; `status` only shows the head's contexts
        multiple=True, required_by=("plan", "wait-gates", "rollout", "deploy-production"),
        why_required="no required status contexts (an empty list would let "
        "any commit through)",
        doc="Status context that must be success on the exact SHA (repeatable; env: comma "
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
                            kind=Kind.TAG_TEMPLATE, group=TG,
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
                                   default="https://{slug}.moleculesai.app", kind=Kind.URL_TEMPLATE, group=T,
                                   doc="Base URL of a tenant ({slug}); /buildinfo is appended.")
    verify_timeout: float = opt("--verify-timeout", "PROD_AUTO_DEPLOY_VERIFY_TIMEOUT_SECONDS", default=60.0,
                                kind=Kind.SECONDS, group=T, minimum=0,
                                doc="How long a wave's tenants may take to report the SHA on /buildinfo.")
    verify_interval: float = opt("--verify-interval", "PROD_AUTO_DEPLOY_VERIFY_INTERVAL_SECONDS", default=5.0,
                                 kind=Kind.SECONDS, group=T, minimum=0.01,
                                 doc="How often unverified tenants' /buildinfo is re-read.")
    verify_concurrency: int = opt("--verify-concurrency", "FLEETGATE_VERIFY_CONCURRENCY", default=64, kind=Kind.INT,
                                  group=T, minimum=1, doc="/buildinfo reads in flight at once.")
    health_path: str = opt("--health-path", "PROD_TENANT_HEALTH_PATH", default="", kind=Kind.PATH, group=T,
                           shown_default="unset",
                           doc="A path on each tenant (e.g. /healthz) that must answer 2xx wherever /buildinfo is "
                           "read.")
    # -- approval after the canary, and the soak watch
    approve_after_canary: bool = opt("--approve-after-canary", "FLEETGATE_APPROVE_AFTER_CANARY", default=False,
                                     kind=Kind.BOOL, group=W,
                                     doc="Pause after the verified canary until the approval context on the SHA "
                                     "is success (go on) or failure (stop).")
    approval_context: str = opt("--approval-context", "FLEETGATE_APPROVAL_CONTEXT", default="fleetgate/approve",
                                kind=Kind.STR, group=AP, required_by=EVERY,
                                why_required="it names the status context that approves a paused run",
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
    image: str = opt("--image", "FLEETGATE_IMAGE", default=REQUIRED, kind=Kind.IMAGE, group=RG, required_by=EVERY,
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


def options_for(verb: str) -> tuple[Option, ...]:
    """The settings `verb` takes: those of the groups its row in the verb table lists."""
    from pipelines.verbs import VERBS

    groups = VERBS[verb].groups if verb in VERBS else ()
    return tuple(o for o in OPTIONS if o.group in groups)


def check_value(name: str, raw: Any) -> Any:
    """One setting's value, checked as the table checks it (for callers outside `resolve`: build, publish)."""
    return BY_NAME[name].parse(raw)


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
        raise UsageError(f"{where}: only {allowed} may appear, got {template[:100]!r}")


def check_tenant_template(template: str, where: str) -> None:
    """Two tenants must get two URLs, each naming its tenant where the HTTP layer cannot fold it away:
    `{{slug}}` (no field at all) or `…/{slug}/..` (a dot segment) would let one answer verify the fleet."""
    check_template(template, ("slug",), where)
    if "{slug}" not in template:
        raise UsageError(f"{where} must contain {{slug}}")
    urls = [normalised_url(normalise_url(template.format(slug=slug), where), where) for slug in PROBE_SLUGS]
    if urls[0] == urls[1]:
        raise UsageError(f"{where}: every tenant would get the same URL {urls[0][:100]!r}; {{slug}} must "
                         "survive as a host label or a whole path segment")
    for slug, url in zip(PROBE_SLUGS, urls, strict=True):
        parts = urlsplit(url)
        labels = (parts.hostname or "").split(".")
        if not any(slug in label for label in labels) and slug not in parts.path.split("/"):
            raise UsageError(f"{where}: {{slug}} must be in a host label or be a whole path segment, "
                             f"got {template[:100]!r}")


def normalise_url(text: str, where: str) -> str:
    raw = text.strip()
    if any(c < " " or c == "\x7f" or c.isspace() for c in raw):
        raise UsageError(f"{where}: control characters or spaces in a URL are not allowed")
    try:
        parts = urlsplit(raw)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise UsageError(f"{where}: not a valid URL: {raw[:100]!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{where}: expected an http(s) URL, got {raw[:100]!r}")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UsageError(f"{where}: credentials in the URL are not allowed")
    if parts.query or parts.fragment:
        raise UsageError(f"{where}: a base URL takes no query or fragment, got {raw[:100]!r}")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise UsageError(f"{where}: malformed port in {raw[:100]!r}") from None
    if any(unquote(segment) in (".", "..") for segment in parts.path.split("/")):
        raise UsageError(f"{where}: a dot segment (. or .., also percent-encoded) in {raw[:100]!r} is folded "
                         "away by HTTP clients and servers; write the path out")
    check_host(parts.hostname, where)
    return raw.rstrip("/")


def load_config(path: Path | None) -> tuple[dict[str, Any], str]:
    """The `fleetgate.toml` settings (top-level keys only, CONTRACT §2) and where they came from.

    A table other than [lint] (lint-workflows' own), an unknown key, a value of the wrong type or a
    secret is an error: a `[rollout]` table with `dry_run = true` must not be read as nothing."""
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
    settings: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            if key in FOREIGN_TABLES:
                continue
            raise UsageError(f"{p}: [{key}] is a table; settings are top-level keys only (CONTRACT §2)")
        if key not in BY_NAME:
            raise UsageError(f"{p}: unknown setting {key!r}")
        o = BY_NAME[key]
        if o.kind is Kind.SECRET:
            raise UsageError(f"{p}: {key} is a secret; pass it through the environment, never a file")
        if not o.kind.accepts_toml(value):
            raise UsageError(f"{p}: {key}: expected {o.kind.label}, got a TOML {type(value).__name__}")
        settings[key] = value
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
            values[o.name] = o.parse(raw, where)
    return _check_required(verb, Settings(**values))


def _check_required(verb_name: str, s: Settings) -> Settings:
    """What the table says `verb_name` cannot run without, then the checks that join two settings."""
    from pipelines.verbs import VERBS

    verb: Verb | None = VERBS.get(verb_name)
    for o in options_for(verb_name):
        if o.required_for(verb_name) and getattr(s, o.name) in (None, "", ()):
            raise UsageError(o.missing(verb_name))
    if verb is None:
        return s
    if Group.TAG in verb.groups and not s.target_tag and s.sha and verb.tag_from_template:
        s = s.with_(target_tag=s.tag_for(s.sha))
    if Group.WATCH in verb.groups and s.analysis_query and not s.prometheus_url:
        raise UsageError("--analysis-query needs --prometheus-url (or FLEETGATE_PROMETHEUS_URL)")
    if Group.CP in verb.groups:
        check_cp_url(s.cp_url, s.prod_cp_url, s.allow_non_prod_cp_url)
    if Group.LEDGER in verb.groups and verb.writes_ledger:
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
