"""Hostile fakes, written apart from `pipelines.sandbox`: Gitea, the control plane, a tenant fleet, a
redirect sink and a proxy, each on its own 127.0.0.1 port, served by a bare asyncio HTTP/1.1 server
in a background thread (so the product can run in-process under its own event loop, or as a
subprocess) and able to lie, drip, nest, garble, redirect and echo tokens on a schedule.

Shapes follow /work/shared/contracts/gitea-api-subset.json (status entries carry `status`; the
combined status pages over contexts with `X-Total-Count`; a variable's value is `data`; a branch's
head is `commit.id`) and CONTRACT §4 (the CP's redeploy-fleet body and answer, `/buildinfo`).

Everything the product sends is recorded in arrival order (`World.log`), with what each answer
meant (a kill-switch read: `off`, `engaged` or `failed`; a CP write: its slugs and tag), so the
invariants in `invariants.py` judge a run from the outside only.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import re
import signal
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

ZERO_WIDTH = "\u200b"
BIDI = "\u202e"
KILL_VAR = "PROD_AUTO_DEPLOY_DISABLED"
LEASE_VAR = "FLEETGATE_LEASE"
OWNER, NAME = "acme", "fleet"
CONTEXT = "ci/test"


def token_forms(token: str) -> list[str]:
    """Every disguise of a token a hostile server echoes back (and the output must not carry)."""
    raw = token.encode()
    return [
        token,
        token.upper(),
        token.lower(),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "".join(f"%{b:02X}" for b in raw),
        ZERO_WIDTH.join(token),
    ]


def echo_text(tokens: list[str]) -> str:
    """An error text that carries every form of every token, Markdown, HTML and bidi overrides."""
    forms = " ".join(form for t in tokens for form in token_forms(t))
    return (f"denied for credential {forms} [click](http://127.0.0.1:9/phish) ![i](http://127.0.0.1:9/x.png) "
            f"<img src=x onerror=alert(1)> {BIDI}txt.exe\x1b[31m red")


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drip: float = 0.0  # seconds between body bytes
    close: bool = False  # hang up without answering
    delay: float = 0.0  # seconds before the answer (after a signal: the run is cancelled with it in flight)

    @staticmethod
    def of(obj: Any, status: int = 200, **headers: str) -> Answer:
        return Answer(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **headers})


@dataclass
class Request:
    role: str
    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)

    def text(self) -> str:
        return f"{self.method} {self.target}\n" + "\n".join(f"{k}: {v}" for k, v in self.headers.items()) + \
            "\n" + self.body.decode("utf-8", "replace")


def deep_json(levels: int = 5000) -> bytes:
    return ("[" * levels + "]" * levels).encode()


def fault_answer(fault: str, tokens: list[str], sink: str) -> Answer | None:
    """The generic faults any endpoint may suffer; None for a fault that is not generic."""
    if fault in ("500", "502", "503", "504", "404", "401", "403"):
        return Answer.of({"message": "injected", "url": "http://127.0.0.1/"}, int(fault))
    if fault == "503-retry-after":
        return Answer.of({"message": "busy"}, 503, **{"Retry-After": "0"})
    if fault == "garbage":
        return Answer(200, b"<html>\x00\xff not json", {"Content-Type": "application/json"})
    if fault == "gzip":
        return Answer(200, b"\x1f\x8b\x08\x00garbage-not-gzip" + os.urandom(16),
                      {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    if fault == "gzip-bomb-ish":
        return Answer(200, gzip.compress(deep_json(20000)), {"Content-Type": "application/json",
                                                               "Content-Encoding": "gzip"})
    if fault == "deep":
        return Answer(200, deep_json(), {"Content-Type": "application/json"})
    if fault == "drip":
        return Answer(200, b'{"x": "' + b"." * 6 + b'"}', {"Content-Type": "application/json"}, drip=0.02)
    if fault == "slow-drip":
        return Answer(200, b'{"git_sha": "' + b"0" * 40 + b'", "pad": "' + b"." * 100 + b'"}',
                      {"Content-Type": "application/json"}, drip=0.05)
    if fault == "close":
        return Answer(close=True)
    if fault == "redirect":
        return Answer(302, b"", {"Location": sink + "/caught"})
    if fault == "redirect-307":
        return Answer(307, b"", {"Location": sink + "/caught"})
    if fault == "echo":
        return Answer.of({"message": echo_text(tokens), "error": echo_text(tokens), "ok": False}, 500)
    if fault == "echo-400":
        return Answer.of({"message": echo_text(tokens), "error": echo_text(tokens), "ok": False}, 400)
    return None


GENERIC_FAULTS = ("500", "502", "503", "503-retry-after", "404", "401", "garbage", "gzip", "deep", "drip",
                  "close", "redirect", "redirect-307", "echo", "echo-400")


@dataclass
class World:
    """What the fakes know: history, the fleet, Gitea's state, and the fault schedule."""

    tokens: dict[str, str]  # role -> token ("gitea", "cp")
    commits: list[str]  # linear history, oldest first
    target: str
    tenants: dict[str, str]  # slug -> SHA it runs
    head: str
    head_green: bool = True
    repo: tuple[str, str] = (OWNER, NAME)
    kill: str | None = None  # the variable's data; None = absent (404)
    lease: str | None = None
    foreign_lease: bool = False  # another run holds a live lease when the run starts
    initial_lease: str | None = None
    statuses: list[dict[str, Any]] = field(default_factory=list)  # for the target SHA
    lying_total: bool = False  # X-Total-Count says one page when there are two
    upper_report: set[str] = field(default_factory=set)  # tenants that report their SHA in upper case
    stuck: set[str] = field(default_factory=set)  # a CP write does not change them
    lag: dict[str, int] = field(default_factory=dict)  # reads that still show the old SHA after a write
    drop_from_second_listing: str | None = None
    hostile_slug: str | None = None
    faults: dict[tuple[str, int], str] = field(default_factory=dict)
    tenant_faults: dict[tuple[str, int], str] = field(default_factory=dict)
    flip_after_write: int | None = None  # the kill switch is engaged once this write (0-based) is answered
    flip_at_kill_read: int | None = None  # ... or just before this kill-switch read is answered
    signal_at: tuple[str, int] | None = None  # (kind, n): SIGINT/SIGTERM to `signal_pid` at that request
    signal_pid: int | None = None
    signal_num: int = signal.SIGINT
    tag_of: Callable[[str], str] = lambda sha: f"staging-{sha[:7]}"
    # --- recorded
    log: list[tuple[str, Any]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    tenant_reads: Counter[str] = field(default_factory=Counter)
    listings: int = 0
    repo_ok: bool = False
    lag_left: dict[str, int] = field(default_factory=dict)
    signalled: bool = False
    old: dict[str, str] = field(default_factory=dict)
    drip_abandoned: int = 0
    sink: str = ""

    # ------------------------------------------------------------ helpers
    def token_list(self) -> list[str]:
        return list(self.tokens.values())

    def _fault(self, kind: str) -> str | None:
        n = self.counts[kind]
        self.counts[kind] += 1
        if self.signal_at == (kind, n) and self.signal_pid is not None and not self.signalled:
            self.signalled = True
            self.log.append(("signal", kind))
            os.kill(self.signal_pid, self.signal_num)
        return self.faults.get((kind, n))

    def sha_of_tag(self, tag: str) -> str | None:
        for sha in self.commits:
            if self.tag_of(sha) == tag:
                return sha
        return None

    def index(self, sha: str) -> int | None:
        s = sha.lower()
        return self.commits.index(s) if s in self.commits else None

    # ------------------------------------------------------------ dispatch
    def handle(self, req: Request) -> Answer:
        self.requests.append(req)
        signalled = self.signalled
        answer = self._route(req)
        if self.signalled and not signalled:
            answer.delay = 0.2  # the server finishes the work; its answer comes after the signal
        return answer

    def _route(self, req: Request) -> Answer:
        if req.role == "gitea":
            return self.gitea(req)
        if req.role == "cp":
            return self.cp(req)
        if req.role == "tenants":
            return self.tenant(req)
        self.log.append(("caught", req.role))
        return Answer.of({"message": "you should not be here"}, 502)

    # ------------------------------------------------------------ Gitea
    def gitea(self, req: Request) -> Answer:
        tokens = self.token_list()
        m = re.fullmatch(r"/api/v1/repos/([^/]+)/([^/]+)(/.*)?", req.path)
        if req.path == "/api/v1/user":
            return self._generic("user") or Answer.of({"id": 1, "login": "deployer"})
        if m is None:
            return Answer.of({"message": "not found"}, 404)
        owner, name, rest = m.group(1), m.group(2), m.group(3) or ""
        known = (owner, name) == self.repo
        if req.headers.get("authorization") != f"token {self.tokens['gitea']}":
            return Answer.of({"message": "token is required"}, 401)
        if rest == "":
            fault = self._fault("repo")
            if fault and (ans := fault_answer(fault, tokens, self.sink)):
                return ans
            if not known:
                return Answer.of({"message": "repo not found"}, 404)
            self.repo_ok = True
            self.log.append(("repo_ok",))
            return Answer.of({"id": 7, "name": name, "full_name": f"{owner}/{name}",
                              "owner": {"login": owner}, "permissions": {"admin": False, "push": True}})
        var = re.fullmatch(r"/actions/variables/([^/]+)", rest)
        if var is not None:
            return self._variable(req, var.group(1).upper(), known)
        if not known:
            return Answer.of({"message": "not found"}, 404)
        if (b := re.fullmatch(r"/branches/(.+)", rest)) is not None:
            return self._generic("branch") or Answer.of({"name": b.group(1), "commit": {"id": self.head}})
        if (c := re.fullmatch(r"/compare/([0-9a-fA-F]+)\.\.\.([0-9a-fA-F]+)", rest)) is not None:
            if ans := self._generic("compare"):
                return ans
            base, head = self.index(c.group(1)), self.index(c.group(2))
            if base is None or head is None:
                return Answer.of({"message": "commit not found"}, 404)
            ahead = self.commits[base + 1:head + 1] if head > base else []
            return Answer.of({"total_commits": len(ahead), "commits": [{"sha": s} for s in ahead]})
        if (st := re.fullmatch(r"/commits/([0-9a-f]{40})/status", rest)) is not None:
            return self._generic("status") or self._combined(req, st.group(1))
        if (st := re.fullmatch(r"/statuses/([0-9a-f]{40})", rest)) is not None and req.method == "POST":
            return self._generic("status_post") or Answer.of({"id": 99, "creator": {"login": "deployer"}}, 201)
        return Answer.of({"message": "not found"}, 404)

    def _generic(self, kind: str) -> Answer | None:
        fault = self._fault(kind)
        return fault_answer(fault, self.token_list(), self.sink) if fault else None

    def _variable(self, req: Request, var: str, known: bool) -> Answer:
        if var == KILL_VAR and req.method == "GET":
            n = self.counts["kill"]
            fault = self._fault("kill")
            if self.flip_at_kill_read == n:
                self.kill = "true"
            if fault and (ans := fault_answer(fault, self.token_list(), self.sink)):
                self.log.append(("kill_read", "failed"))
                return ans
            if not known:
                self.log.append(("kill_read", "failed"))  # every path of a misspelt repo is 404
                return Answer.of({"message": "not found"}, 404)
            if self.kill is None:
                # off only once the repository itself answered 200 in this run (before the next write)
                self.log.append(("kill_read", "off-404"))
                return Answer.of({"message": "variable not found"}, 404)
            engaged = self.kill.strip().lower() not in ("", "0", "false", "no", "off", "enabled", "enable")
            self.log.append(("kill_read", "engaged" if engaged else "off"))
            return Answer.of({"name": KILL_VAR, "data": self.kill, "owner_id": 0, "repo_id": 7})
        if var == LEASE_VAR:
            fault = self._fault("lease")
            if fault and (ans := fault_answer(fault, self.token_list(), self.sink)):
                self.log.append(("lease_failed", req.method))
                return ans
            if not known:
                return Answer.of({"message": "not found"}, 404)
            return self._lease(req)
        if req.method == "PUT":  # plan's write-access probe of an absent variable
            return Answer.of({"message": "not found"}, 404)
        return Answer.of({"message": "variable not found"}, 404)

    def _lease(self, req: Request) -> Answer:
        if req.method == "GET":
            if self.lease is None:
                return Answer.of({"message": "variable not found"}, 404)
            return Answer.of({"name": LEASE_VAR, "data": self.lease, "owner_id": 0, "repo_id": 7})
        if req.method == "DELETE":
            if self.lease is None:
                return Answer.of({"message": "variable not found"}, 404)
            self.lease = None
            self.log.append(("lease_ok", "DELETE"))
            return Answer(204)
        try:
            value = json.loads(req.body)["value"]
        except (ValueError, KeyError, TypeError):
            return Answer.of({"message": "bad body"}, 400)
        if req.method == "POST":
            if self.lease is not None:
                return Answer.of({"message": "already exists"}, 409)
            self.lease = value
            self.log.append(("lease_ok", "POST", value))
            return Answer(201)
        if req.method == "PUT":
            if self.lease is None:
                return Answer.of({"message": "variable not found"}, 404)
            self.lease = value
            self.log.append(("lease_ok", "PUT", value))
            return Answer(204)
        return Answer.of({"message": "method"}, 405)

    def _combined(self, req: Request, sha: str) -> Answer:
        entries = self.statuses if sha == self.target else (
            [{"id": 1, "context": CONTEXT, "status": "success" if self.head_green else "pending"}]
            if sha == self.head else [])
        page = int((req.query.get("page") or ["1"])[0] or 1)
        limit = min(max(int((req.query.get("limit") or ["30"])[0] or 30), 1), 50)
        chunk = entries[(page - 1) * limit:page * limit]
        total = limit if self.lying_total and len(entries) > limit else len(entries)
        states = {e["status"] for e in entries}
        combined = "success" if states == {"success"} else ("failure" if "failure" in states else "pending")
        body = {"state": combined if entries else "", "sha": sha, "total_count": total,
                "statuses": [{**e, "target_url": "", "description": "", "creator": {"login": "ci"}}
                             for e in chunk]}
        return Answer.of(body, **{"X-Total-Count": str(total)})

    # ------------------------------------------------------------ control plane
    def cp(self, req: Request) -> Answer:
        tokens = self.token_list()
        if req.path != "/cp/admin/tenants/redeploy-fleet" or req.method != "POST":
            return Answer.of({"error": "not found"}, 404)
        if req.headers.get("authorization") != f"Bearer {self.tokens['cp']}":
            return Answer.of({"ok": False, "error": "unauthorised"}, 401)
        try:
            body = json.loads(req.body)
        except ValueError:
            return Answer.of({"ok": False, "error": "bad json"}, 400)
        if body.get("confirm") is not True:
            return Answer.of({"ok": False, "error": "confirm required"}, 400)
        if body.get("dry_run") and not body.get("only_slugs"):
            fault = self._fault("cp_list")
            if fault and (ans := fault_answer(fault, tokens, self.sink)):
                return ans
            slugs = sorted(self.tenants)
            if self.listings >= 1 and self.drop_from_second_listing in slugs:
                slugs.remove(self.drop_from_second_listing)
            if self.hostile_slug is not None:
                slugs.append(self.hostile_slug)
            self.listings += 1
            self.log.append(("listed", slugs))
            return Answer.of({"ok": True, "results": [self._row(s, "dry-run") for s in slugs]})
        only = [s for s in body.get("only_slugs") or [] if isinstance(s, str)]
        tag = str(body.get("target_tag"))
        if body.get("dry_run"):
            self.log.append(("dry_write", only))
            return Answer.of({"ok": True, "results": [self._row(s, "dry-run") for s in only]})
        n = self.counts["cp_write"]
        fault = self._fault("cp_write")
        self.log.append(("write", only, tag))
        if fault in (None, "rows-echo", "applied-502"):
            self._apply(only, tag)
        if self.flip_after_write == n:
            self.kill = "true"
        if fault == "applied-502":  # the CP did the work, then the gateway timed out
            return Answer.of({"message": "bad gateway"}, 502)
        if fault in ("refuse", "refuse-echo"):
            self.log.append(("refused", only))
        if fault == "refuse":
            return Answer.of({"ok": False, "error": "refused: fleet frozen", "results": []})
        if fault == "refuse-echo":
            return Answer.of({"ok": False, "error": echo_text(tokens), "results": []})
        if fault == "rows-echo":
            return Answer.of({"ok": True, "results": [
                {**self._row(s, "failed"), "error": echo_text(tokens)} for s in only]})
        if fault == "lie-ok":  # says done, changed nothing
            return Answer.of({"ok": True, "results": [self._row(s, "done") for s in only]})
        if fault and (ans := fault_answer(fault, tokens, self.sink)):
            return ans
        return Answer.of({"ok": True, "results": [self._row(s, "done") for s in only]})

    def _apply(self, slugs: list[str], tag: str) -> None:
        sha = self.sha_of_tag(tag)
        for slug in slugs:
            if slug in self.tenants and slug not in self.stuck and sha is not None:
                if self.tenants[slug] != sha:
                    self.lag_left[slug] = self.lag.get(slug, 0)
                    self.old[slug] = self.tenants[slug]
                self.tenants[slug] = sha

    @staticmethod
    def _row(slug: str, phase: str) -> dict[str, Any]:
        return {"slug": slug, "phase": phase, "ssm_status": "Success", "ssm_exit_code": 0, "healthz_ok": True,
                "error": "", "verified_on_target": phase == "done"}

    # ------------------------------------------------------------ tenants
    def tenant(self, req: Request) -> Answer:
        tokens = self.token_list()
        m = re.fullmatch(r"/t/([^/]+)/buildinfo", req.path)
        if m is None:
            self.log.append(("tenant_path", req.path))
            return Answer.of({"error": "no such path"}, 404)
        slug = m.group(1)
        n = self.tenant_reads[slug]
        self.tenant_reads[slug] += 1
        self.counts["tenant"] += 1
        if self.signal_at == ("tenant", self.counts["tenant"] - 1) and self.signal_pid and not self.signalled:
            self.signalled = True
            self.log.append(("signal", "tenant"))
            os.kill(self.signal_pid, self.signal_num)
        fault = self.tenant_faults.get((slug, n))
        if fault and (ans := fault_answer(fault, tokens, self.sink)):
            return ans
        if slug not in self.tenants:
            return Answer.of({"error": "unknown tenant"}, 404)
        sha = self.tenants[slug]
        if self.lag_left.get(slug, 0) > 0:
            self.lag_left[slug] -= 1
            sha = self.old.get(slug, sha)
        if slug in self.upper_report:
            sha = sha.upper()
        self.log.append(("tenant_read", slug, sha))
        return Answer.of({"git_sha": sha, "built_at": "2026-12-01T00:00:00Z"})


# ---------------------------------------------------------------- the server


class Fakes:
    """The five listeners in one background event loop; `world` is swapped per example."""

    ROLES = ("gitea", "cp", "tenants", "sink", "proxy")

    def __init__(self) -> None:
        self.world: World | None = None
        self.ports: dict[str, int] = {}
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True, name="fault-fakes")
        self.lock = threading.Lock()
        self._drips = 0
        self._drips_done = threading.Condition()

    def url(self, role: str) -> str:
        return f"http://127.0.0.1:{self.ports[role]}"

    def start(self) -> Fakes:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def up() -> None:
            for role in self.ROLES:
                server = await asyncio.start_server(
                    lambda r, w, role=role: self._serve(role, r, w), "127.0.0.1", 0)
                self.ports[role] = server.sockets[0].getsockname()[1]

        self.loop.run_until_complete(up())
        self._ready.set()
        self.loop.run_forever()

    async def _serve(self, role: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                req = await self._read(role, reader)
                if req is None:
                    return
                with self.lock:
                    world = self.world
                    if world is None:
                        answer = Answer.of({"message": "no world"}, 503)
                    else:
                        world.sink = self.url("sink")
                        answer = world.handle(req)
                if answer.close:
                    return
                await self._write(reader, writer, answer, world)
                if req.headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            return
        finally:
            writer.close()

    @staticmethod
    async def _read(role: str, reader: asyncio.StreamReader) -> Request | None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        body = b""
        if (length := int(headers.get("content-length", "0") or 0)) > 0:
            body = await reader.readexactly(length)
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip() or b"0", 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        return Request(role, method, target, headers, body)

    def quiesce(self, timeout: float = 30.0) -> None:
        """Wait until no drip is in flight, so what a drip saw (abandoned or not) is settled."""
        with self._drips_done:
            self._drips_done.wait_for(lambda: self._drips == 0, timeout)

    async def _write(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: Answer,
                     world: World | None) -> None:
        reason = {200: "OK", 201: "Created", 204: "No Content", 302: "Found", 307: "Temporary Redirect"}.get(
            answer.status, "Status")
        if answer.delay > 0:
            await asyncio.sleep(answer.delay)
        body = b"" if answer.status == 204 else answer.body
        head = f"HTTP/1.1 {answer.status} {reason}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in answer.headers.items()) + "\r\n"
        writer.write(head.encode("latin-1"))
        if answer.drip <= 0:
            writer.write(body)
            await writer.drain()
            return
        await writer.drain()
        with self._drips_done:
            self._drips += 1
        try:
            for i in range(len(body)):
                if reader.at_eof() or writer.is_closing():  # the client hung up mid-drip
                    if world is not None:
                        world.drip_abandoned += 1
                    return
                writer.write(body[i:i + 1])
                await writer.drain()
                await asyncio.sleep(answer.drip)
        except ConnectionError:
            if world is not None:
                world.drip_abandoned += 1
            raise
        finally:
            with self._drips_done:
                self._drips -= 1
                self._drips_done.notify_all()
