"""Test helpers: serve an ASGI app on a real 127.0.0.1 socket; a listener that records connections."""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import uvicorn
from starlette.types import ASGIApp


@asynccontextmanager
async def serve_app(app: ASGIApp) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 (a free port) in this event loop; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections queue from now on, so no wait for the server to start
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="critical", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            server.force_exit = True  # no grace for open keep-alive connections: tests are done with them
    sock.close()


class ConnectionRecorder:
    """A TCP listener on 127.0.0.1 that accepts and counts connections, answering nothing."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def settle(self) -> int:
        """Stop accepting in the background, drain the backlog, and return how many connected."""
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.setblocking(False)
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return self.connections
            self.connections += 1
            conn.close()


@contextmanager
def connection_recorder() -> Iterator[ConnectionRecorder]:
    rec = ConnectionRecorder()
    rec._thread.start()
    try:
        yield rec
    finally:
        rec.settle()
        rec.sock.close()


OUR_ENV_PREFIXES = ("GITHUB_", "GITEA_", "PROD_", "CP_", "CI_", "FLEETGATE_", "REGISTRY_")


def run_main(monkeypatch: Any, capsys: Any, *args: str,
             env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`fleetgate ARGS` in this process through `pipelines.cli.main`: (exit code, stdout, stderr).

    The environment is cleared of every variable fleetgate reads, then `env` is applied.
    """
    import os
    import sys

    import pytest

    from pipelines.cli import main

    for name in list(os.environ):
        if name.startswith(OUR_ENV_PREFIXES):
            monkeypatch.delenv(name)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["fleetgate", *args])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), captured.out, captured.err


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """Stop a server the tests started: politely, then for sure (a hung server must not hang the suite)."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def point_proxies_at(monkeypatch: Any, url: str) -> None:
    """Every proxy variable an HTTP library might honour set to `url`, and no exemption from it."""
    for name in PROXY_VARIABLES:
        monkeypatch.setenv(name, url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
