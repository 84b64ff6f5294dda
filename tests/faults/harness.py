"""Drive fleetgate through its public entry (`pipelines.cli.run_verb`) against the fakes, capture
everything it says (stdout, stderr, ledger, step summary), and judge the run by I1–I5.

The invariants read only what is outside the product: the fakes' record of what arrived and
their ground truth (which SHA each tenant runs), and the product's outputs. Nothing here imports a
fleetgate internal beyond the CLI entry, so a rewrite of the engine is judged by the same rules.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import os
import re
import signal
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from faults.fakes import BIDI, CONTEXT, NAME, OWNER, ZERO_WIDTH, Fakes, World, token_forms

RUN_VERBS = frozenset({"rollout", "deploy-production", "redeploy"})  # the verbs that write a ledger run
CRASHED = 99  # what the harness records when run_verb raised instead of returning an exit code
OUTCOME_CODES = {"deployed": 0, "nothing-to-do": 0, "dry-run": 0, "disabled": 3, "stood-down": 5,
                 "halted": 4, "failed": 1, "rolled-back": 1, "interrupted": 1}
_INVISIBLE = re.compile("[\u200b-\u200f\u2060\ufeff\u202a-\u202e\u2066-\u2069]")
_TENANT_PATH = re.compile(r"/t/t[0-9]+/[A-Za-z0-9_./-]*")  # listed slugs are t0..t9; anything else is hostile
_KEEP_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT", "VIRTUAL_ENV", "PYTHONPATH")


@dataclass
class Case:
    """One run to make: the world the fakes show, the verb, and its environment."""

    world: World
    verb: str = "rollout"
    env: dict[str, str] = field(default_factory=dict)
    config: str = ""  # fleetgate.toml text
    expect_usage: bool = False  # bad input: exit 2, nothing contacted
    max_stragglers: int = 0
    dry_run: bool = False
    expect_codes: frozenset[int] | None = None  # what this input must end with, when it is known
    newer_running: list[str] = field(default_factory=list)  # tenants on a descendant of the SHA at start
    head_supersedes: bool = False  # the branch head is a green descendant of the SHA
    proxies: bool = True  # every *_PROXY points at the recorder


@dataclass
class Run:
    case: Case
    code: int
    stdout: str
    stderr: str
    ledger: list[dict[str, Any]]
    ledger_text: str
    summary: str

    @property
    def world(self) -> World:
        return self.case.world

    def outputs(self) -> dict[str, str]:
        """Every place a token could surface, JSON ones also decoded (a `\\u200b` escape is the character)."""
        decoded_stdout = []
        for line in self.stdout.splitlines():
            with contextlib.suppress(ValueError):
                decoded_stdout.append(json.dumps(json.loads(line), ensure_ascii=False))
        return {"stdout": self.stdout, "stderr": self.stderr, "ledger": self.ledger_text, "summary": self.summary,
                "--json (decoded)": "\n".join(decoded_stdout),
                "ledger (decoded)": "\n".join(json.dumps(e, ensure_ascii=False) for e in self.ledger)}

    def done(self) -> list[dict[str, Any]]:
        return [e for e in self.ledger if e.get("event") == "done"]

    def json_result(self) -> dict[str, Any] | None:
        lines = [ln for ln in self.stdout.splitlines() if ln.strip()]
        if len(lines) != 1:
            return None
        try:
            obj = json.loads(lines[0])
        except ValueError:
            return None
        return obj if isinstance(obj, dict) else None


def base_env(fakes: Fakes, world: World, tmp: Path, proxies: bool = True) -> dict[str, str]:
    proxy = fakes.url("proxy")
    names = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy")
    return {**({name: proxy for name in names} if proxies else {}),
        "GITHUB_SHA": world.target,
        "GITHUB_REPOSITORY": f"{OWNER}/{NAME}",
        "GITEA_URL": fakes.url("gitea"),
        "GITEA_TOKEN": world.tokens["gitea"],
        "GITHUB_REF_NAME": "main",
        "PROD_AUTO_DEPLOY_REQUIRED_CONTEXTS": CONTEXT,
        "CP_URL": fakes.url("cp"),
        "PROD_CP_URL": fakes.url("cp"),
        "CP_ADMIN_API_TOKEN": world.tokens["cp"],
        "PROD_AUTO_DEPLOY_BATCH_SIZE": "2",
        "PROD_AUTO_DEPLOY_SOAK_SECONDS": "0",
        "PROD_AUTO_DEPLOY_MAX_STRAGGLERS": "0",
        "PROD_AUTO_DEPLOY_ON_FAILURE": "halt",
        "PROD_TENANT_URL_TEMPLATE": fakes.url("tenants") + "/t/{slug}",
        "CI_STATUS_POLL_INTERVAL_SECONDS": "0.01",
        "CI_STATUS_TIMEOUT_SECONDS": "0.05",
        "PROD_AUTO_DEPLOY_VERIFY_TIMEOUT_SECONDS": "0.15",
        "PROD_AUTO_DEPLOY_VERIFY_INTERVAL_SECONDS": "0.01",
        "PROD_AUTO_DEPLOY_CP_RETRY_BACKOFF_SECONDS": "0",
        "FLEETGATE_GITEA_RETRY_SECONDS": "0.05",
        "FLEETGATE_LEASE_WAIT_SECONDS": "0",
        "FLEETGATE_LEDGER": str(tmp / "ledger.jsonl"),
        "GITHUB_STEP_SUMMARY": str(tmp / "summary.md"),
        "GITHUB_RUN_ID": "4242", "GITHUB_RUN_ATTEMPT": "1", "GITHUB_JOB": "deploy",
        "NO_COLOR": "1",
    }


def _environment(env: dict[str, str]) -> dict[str, str]:
    kept = {k: os.environ[k] for k in _KEEP_ENV if k in os.environ}
    return {**kept, **env}


def _read_outputs(tmp: Path) -> tuple[list[dict[str, Any]], str, str]:
    ledger_path, summary_path = tmp / "ledger.jsonl", tmp / "summary.md"
    text = ledger_path.read_text("utf-8", "replace") if ledger_path.exists() else ""
    events = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    summary = summary_path.read_text("utf-8", "replace") if summary_path.exists() else ""
    return events, text, summary


def _fresh(tmp: Path) -> None:
    tmp.mkdir(parents=True, exist_ok=True)
    for name in ("ledger.jsonl", "summary.md", "fleetgate.toml"):
        (tmp / name).unlink(missing_ok=True)


def _run_verb(verb: str, params: dict[str, Any], env: dict[str, str]) -> int:
    """`pipelines.cli.run_verb`, whether it still takes the verb's `module:function` target or not."""
    from pipelines import cli

    if "target" in inspect.signature(cli.run_verb).parameters:
        return int(cli.run_verb(verb, cli.VERBS[verb][0], params, env))  # type: ignore[attr-defined]
    return int(cli.run_verb(verb, params, env))


def run_in_process(fakes: Fakes, case: Case, tmp: Path) -> Run:
    """`run_verb` in this process, with os.environ replaced by the case's environment for the call."""
    _fresh(tmp)
    config = tmp / "fleetgate.toml"
    config.write_text(case.config, "utf-8")
    env = _environment({**base_env(fakes, case.world, tmp, case.proxies), **case.env})
    case.world.signal_pid = os.getpid()
    out, err = io.StringIO(), io.StringIO()
    with fakes.lock:
        fakes.world = case.world
    try:
        with mock.patch.dict(os.environ, env, clear=True), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            try:
                code = _run_verb(case.verb, {"json_mode": True, "config_path": config}, env)
            except BaseException:  # a crash is a finding: the console script would print this
                traceback.print_exc()
                code = CRASHED
    finally:
        with fakes.lock:
            fakes.world = None
    ledger, text, summary = _read_outputs(tmp)
    return Run(case, code, out.getvalue(), err.getvalue(), ledger, text, summary)


def run_subprocess(fakes: Fakes, case: Case, tmp: Path, *, sig: int = signal.SIGTERM) -> Run:
    """The console script as a child process; the fakes signal the child at `world.signal_at`."""
    _fresh(tmp)
    config = tmp / "fleetgate.toml"
    config.write_text(case.config, "utf-8")
    env = _environment({**base_env(fakes, case.world, tmp, case.proxies), **case.env})
    script = Path(sys.executable).with_name("fleetgate")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "pipelines"]
    case.world.signal_num = sig
    with fakes.lock:
        fakes.world = case.world
        child = subprocess.Popen([*command, case.verb, "--json", "--config", str(config)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        case.world.signal_pid = child.pid
    try:
        stdout, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
        with fakes.lock:
            fakes.world = None
    ledger, text, summary = _read_outputs(tmp)
    return Run(case, child.returncode, stdout, stderr, ledger, text, summary)


# ---------------------------------------------------------------- invariants


class Broken(AssertionError):
    """An invariant failed: the message starts with its name (I1..I5)."""


# One type per invariant, so hypothesis reports each broken invariant as its own bug.
BROKEN = {name: type(f"Broken{name}", (Broken,), {}) for name in ("I1", "I2", "I3", "I4", "I5")}


def _fail(name: str, why: str, run: Run) -> None:
    raise BROKEN[name](f"{name}: {why}\n exit={run.code}\n log={run.world.log}\n done={run.done()}\n"
                 f" stderr tail={run.stderr[-1500:]!r}\n stdout={run.stdout[-800:]!r}")


def writes(run: Run) -> list[tuple[list[str], str]]:
    return [(e[1], e[2]) for e in run.world.log if e[0] == "write"]


def kill_reads(run: Run) -> list[str]:
    """Each kill-switch read as off, engaged or failed; a 404 is off only if the repository answered 200."""
    repo_ok = any(e[0] == "repo_ok" for e in run.world.log)
    return [("off" if repo_ok else "failed") if e[1] == "off-404" else e[1]
            for e in run.world.log if e[0] == "kill_read"]


def i1_verified_fleet(run: Run) -> None:
    """exit 0 ⇒ every tenant listed or written runs the SHA, or is a named straggler within budget."""
    if run.code != 0 or run.case.dry_run:
        return
    w = run.world
    listed = {s for e in w.log if e[0] == "listed" for s in e[1]}
    written = {s for e in w.log if e[0] == "write" for s in e[1]}
    named: set[str] = set()
    result = run.json_result() or {}
    for source in (result, *(run.done()[-1:])):
        value = source.get("stragglers")
        if isinstance(value, list):
            named.update(str(v) for v in value)
    off = sorted(s for s in listed | written if w.tenants.get(s) != w.target)
    unnamed = [s for s in off if s not in named]
    if unnamed:
        _fail("I1", f"exit 0 but {unnamed} do not run {w.target[:12]} and are not named stragglers", run)
    if len(off) > run.case.max_stragglers:
        _fail("I1", f"exit 0 with {len(off)} tenants off the SHA, budget {run.case.max_stragglers}", run)
    if seen := newer_seen_before_writing(run):
        _fail("I1", f"exit 0 although {seen} answered a descendant of the SHA before the first write", run)
    if run.case.head_supersedes and writes(run):  # with nothing to write, "nothing to do" is as true
        _fail("I1", "exit 0 after writes although the branch head is a green descendant of the SHA", run)
    if run.case.verb == "deploy-production" and not gates_truly_green(w):
        _fail("I1", "exit 0 although the required context is not success on the SHA", run)


def newer_seen_before_writing(run: Run) -> list[str]:
    """Tenants that told the run (a clean `/buildinfo` answer) they run a descendant, before its first write.
    One whose every read failed could not be known: deploying over it is not a stand-down failure."""
    seen: list[str] = []
    for event in run.world.log:
        if event[0] == "write":
            break
        if event[0] == "tenant_read" and event[1] in run.case.newer_running and event[1] not in seen:
            seen.append(event[1])
    return seen


def gates_truly_green(w: World) -> bool:
    latest: dict[str, tuple[int, str]] = {}
    for e in w.statuses:
        prev = latest.get(e["context"])
        ident = int(e.get("id", 0))
        if prev is None or ident > prev[0]:
            latest[e["context"]] = (ident, e["status"])
        elif ident == prev[0] and e["status"] != prev[1]:
            latest[e["context"]] = (ident, "ambiguous")
    return latest.get(CONTEXT, (0, ""))[1] == "success"


def i2_no_write_past_the_switch(run: Run) -> None:
    """No CP write after an engaged or failed kill-switch read; every write has a fresh `off` read and
    a renewed lease since the previous write."""
    if run.case.dry_run:
        if writes(run):
            _fail("I2", "a dry run made a real CP write", run)
        return
    if run.world.foreign_lease and writes(run) and run.case.env.get("FLEETGATE_USE_LEASE") != "false":
        _fail("I2", "a CP write while another run held the lease", run)
    if run.world.foreign_lease and run.world.lease != run.world.initial_lease:
        _fail("I2", "another run's live lease was replaced or deleted", run)
    last_read: str | None = None
    engaged_seen = False
    lease_since_write = False
    uses_lease = run.case.env.get("FLEETGATE_USE_LEASE", "true") != "false"
    repo_ok = False
    for event in run.world.log:
        kind = event[0]
        if kind == "repo_ok":
            repo_ok = True
        elif kind == "kill_read":
            last_read = event[1]
            engaged_seen = engaged_seen or event[1] == "engaged"
        elif kind == "lease_ok" and event[1] in ("POST", "PUT"):
            lease_since_write = True
        elif kind == "write":
            if engaged_seen:
                _fail("I2", f"CP write {event[1]} after an engaged kill-switch read", run)
            if last_read == "off-404" and repo_ok:
                last_read = "off"
            if last_read != "off":
                said = "a 404 before the repository answered 200" if last_read == "off-404" else repr(last_read)
                _fail("I2", f"CP write {event[1]} whose last kill-switch read was {said}", run)
            if uses_lease and not lease_since_write:
                _fail("I2", f"CP write {event[1]} without a lease taken or renewed since the last write", run)
            last_read = None
            lease_since_write = False


def _leaks(text: str, tokens: list[str]) -> list[str]:
    plain = _INVISIBLE.sub("", text)
    folded = plain.casefold()
    found = []
    for token in tokens:
        for form in token_forms(token):
            needle = _INVISIBLE.sub("", form)
            if needle.casefold() in folded if not _is_b64(form, token) else needle in plain:
                found.append(form)
    return found


def _is_b64(form: str, token: str) -> bool:
    return form not in (token, token.upper(), token.lower()) and not form.startswith("%") and \
        ZERO_WIDTH not in form


def i3_no_token_anywhere(run: Run) -> None:
    tokens = run.world.token_list()
    for where, text in run.outputs().items():
        if leaked := _leaks(text, tokens):
            _fail("I3", f"a token form reached {where}: {leaked[:2]}", run)
    if "![" in run.summary or "<img" in run.summary or "](http" in run.summary:
        _fail("I3", "server text reached the step summary unescaped (link, image or HTML)", run)
    for where, text in run.outputs().items():
        if BIDI in text:
            _fail("I3", f"a bidi override from a server reached {where}", run)


def i4_tokens_to_their_origin(run: Run) -> None:
    w = run.world
    gitea_forms, cp_forms = token_forms(w.tokens["gitea"]), token_forms(w.tokens["cp"])
    for req in w.requests:
        text = req.text()
        if req.role in ("sink", "proxy"):
            _fail("I4", f"a request reached the {req.role}: {req.method} {req.target}", run)
        if req.role == "tenants" and "authorization" in req.headers:
            _fail("I4", "an Authorization header was sent to a tenant", run)
        if req.role == "tenants" and not _TENANT_PATH.fullmatch(req.path):
            _fail("I4", f"a tenant URL outside the listed slugs was requested: {req.target!r}", run)
        foreign = {"gitea": cp_forms, "cp": gitea_forms, "tenants": gitea_forms + cp_forms}[req.role]
        if any(f in text for f in foreign):
            _fail("I4", f"a foreign token reached {req.role}: {req.method} {req.path}", run)


def i5_contract_ending(run: Run) -> None:
    w = run.world
    code = run.code
    if code not in (0, 1, 2, 3, 4, 5):
        _fail("I5", f"exit code {code} is not one of CONTRACT §3 (99: run_verb raised)", run)
    if "Traceback (most recent call last)" in run.stderr:
        _fail("I5", "a traceback reached stderr", run)
    result = run.json_result()
    if result is None:
        _fail("I5", "--json did not print exactly one JSON object", run)
    assert result is not None
    if result.get("exit_code", 0) != code:
        _fail("I5", f"--json says exit_code {result.get('exit_code')} but the process ended {code}", run)
    if run.case.expect_usage:
        if code != 2:
            _fail("I5", "bad input was not a usage error (exit 2)", run)
        if w.requests:
            _fail("I5", f"bad input but {len(w.requests)} request(s) were made", run)
        return
    if run.case.expect_codes is not None and code not in run.case.expect_codes:
        _fail("I5", f"exit {code}, wanted one of {sorted(run.case.expect_codes)}", run)
    if code == 2:
        if 2 in (run.case.expect_codes or ()) and not w.requests:
            return
        _fail("I5", "exit 2 for valid input, or after contacting a server", run)
    if run.case.verb not in RUN_VERBS:
        return
    dones = run.done()
    if len(dones) != 1:
        _fail("I5", f"{len(dones)} `done` events (exactly one wanted)", run)
    word = dones[0].get("outcome")
    if word not in OUTCOME_CODES:
        _fail("I5", f"`done` outcome {word!r} is not a CONTRACT §5 word", run)
    if OUTCOME_CODES[str(word)] != code or dones[0].get("exit_code") != code:
        _fail("I5", f"`done` says {word}/{dones[0].get('exit_code')} but the exit code is {code}", run)
    wrote = bool(writes(run))
    reads = kill_reads(run)
    if any(e[0] == "signal" for e in w.log):
        # a signal during a failure's own clean-up may end it as that failure; never as success
        if code != 1 or word not in ("interrupted", "failed", "rolled-back"):
            _fail("I5", f"a signal arrived mid-run but the run ended {word}/{code}", run)
        return
    if "engaged" in reads and code not in (3, 4):
        _fail("I5", f"the kill switch was read engaged but the run ended {word}/{code}", run)
    if code == 3 and wrote:
        _fail("I5", "exit 3 (disabled before any write) after a CP write", run)
    if code == 4 and not wrote:
        _fail("I5", "exit 4 (halted after writes) with no CP write", run)
    if code in (3, 4) and "engaged" not in reads and not run.case.env.get("PROD_AUTO_DEPLOY_DISABLED"):
        _fail("I5", f"exit {code} although no kill-switch read was engaged", run)
    # (a dry run writes nothing: its reads guard no write, so an unreadable one need not fail it)
    if reads and reads[-1] == "failed" and "engaged" not in reads and code != 1 and not run.case.dry_run:
        _fail("I5", f"the last kill-switch read failed but the run ended {word}/{code}", run)
    if code == 5 and wrote:
        _fail("I5", "stood down after a write", run)
    if word == "nothing-to-do" and wrote:
        _fail("I5", "`nothing-to-do` after a CP write", run)
    if word == "deployed" and not wrote:
        _fail("I5", "`deployed` without a CP write", run)
    if word == "dry-run" and wrote:
        _fail("I5", "`dry-run` with a real CP write", run)
    if w.hostile_slug is not None and any(e[0] == "listed" for e in w.log) and code == 0:
        _fail("I5", f"the CP listed a hostile slug {w.hostile_slug!r} yet exit 0", run)
    if any(e[0] == "refused" for e in w.log) and code == 0:
        _fail("I5", "the CP refused (ok: false) yet exit 0", run)


INVARIANTS = (i5_contract_ending, i3_no_token_anywhere, i4_tokens_to_their_origin, i2_no_write_past_the_switch,
              i1_verified_fleet)


def check(run: Run) -> None:
    for invariant in INVARIANTS:
        invariant(run)
