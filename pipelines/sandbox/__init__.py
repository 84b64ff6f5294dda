"""The sandbox: a simulated Gitea, control plane and tenant fleet on 127.0.0.1, in the caller's loop.

    async with serve("happy") as sb:
        settings = resolve("deploy-production", {}, {}, overlay=sb.overlay)
        sb.state.tenants["alpha"].stuck = True   # shape the world while it runs

Four origins on four ports (Gitea, CP, tenants, an OCI registry for `promote`), so a token leaking to
the wrong origin shows up in `sb.state.requests`. Sockets are bound before the apps start, so the URLs
work at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import uvicorn

from pipelines.errors import UsageError
from pipelines.redact import Secret
from pipelines.sandbox import cp_app, gitea_app, registry_app, tenants_app
from pipelines.sandbox.world import RequestRecord, World

if TYPE_CHECKING:
    from pipelines.sandbox.scenarios import Scenario

GRACE_SECONDS = 1.0  # in-flight requests get this long to finish at shutdown, then are cancelled


@dataclass
class Sandbox:
    gitea_url: str
    cp_url: str
    tenant_url_template: str
    state: World
    registry_url: str = ""
    registry: registry_app.Registry = field(default_factory=registry_app.Registry)

    @property
    def image(self) -> str:
        """The sandbox's image repository, as `--image` takes it (a loopback host: spoken to over http)."""
        return f"{self.registry_url.removeprefix('http://')}/{registry_app.REPOSITORY}"

    @property
    def base_url(self) -> str:
        return self.gitea_url

    @property
    def overlay(self) -> dict[str, Any]:
        """Settings overlay pointing fleetgate at this sandbox (flags still win over it)."""
        from pipelines.sandbox.scenarios import overlay

        return {**overlay(self.state, self.gitea_url, self.cp_url, self.tenant_url_template), "image": self.image}

    def confine(self, settings: Any) -> None:
        """Refuse (exit 2) an image outside this sandbox: promote never writes to a real registry on
        sandbox evidence. Flags win over the sandbox's settings, so `--image` is where one would come from."""
        image = getattr(settings, "image", None)
        if not image or image == self.image:
            return
        netloc = self.registry_url.removeprefix("http://")
        if image.removeprefix("http://").split("/", 1)[0] == netloc:
            return  # another repository in the sandbox's own registry
        raise UsageError(f"--image {image}: outside the sandbox; with --sandbox, promote writes only to the "
                         f"sandbox's registry ({self.image}): drop --image")

    def env(self) -> dict[str, str]:
        """The overlay as environment variables (sandbox-only tokens: fine to print), named by the
        settings table so the two cannot drift apart."""
        from pipelines.settings import BY_NAME

        def text(value: Any) -> str:
            if isinstance(value, Secret):
                return value.reveal()
            if isinstance(value, tuple):
                return ",".join(value)
            return str(value)

        return {BY_NAME[name].env[0]: text(value) for name, value in self.overlay.items()}


def _bind(port: int) -> socket.socket:
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose proto says TCP; without
    # it every keep-alive answer written in two parts waited ~40 ms for the peer's delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class _Server(uvicorn.Server):
    """A uvicorn server driven by `serve`: started on a pre-bound socket, stopped without the 0.1 s ticks."""

    async def start(self, sock: socket.socket) -> None:
        self.config.load()
        self.lifespan = self.config.lifespan_class(self.config)
        await self.startup(sockets=[sock])

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        tasks = list(self.server_state.tasks)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=GRACE_SECONDS)
            for task in pending:  # a scripted-slow answer nobody waits for any more
                task.cancel()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), timeout=GRACE_SECONDS)


@asynccontextmanager
async def serve(scenario: str | Scenario = "happy", *, tenants: int | None = None,
                ports: tuple[int, int, int] = (0, 0, 0), registry_port: int = 0) -> AsyncIterator[Sandbox]:
    """Serve a fresh world shaped by `scenario` (a name or a Scenario) on four loopback ports.

    `ports` (Gitea, CP, tenants) and `registry_port`: 0 picks a free port. An unknown scenario name
    raises KeyError.
    """
    from pipelines.sandbox.scenarios import build_world

    world = build_world(scenario, tenants=tenants)
    sockets: list[socket.socket] = []
    try:
        for port in (*ports, registry_port):
            sockets.append(_bind(port))
    except OSError:
        for s in sockets:
            s.close()
        raise
    urls = [f"http://127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    world.gitea_url, world.cp_url, world.tenants_url, registry_url = urls
    running = Counter(world.tenant_shas().values()).most_common(1)  # `latest` is what the fleet runs
    registry = registry_app.seeded(list(world.commits), latest=running[0][0] if running else None)
    apps = [gitea_app.build_app(world), cp_app.build_app(world), tenants_app.build_app(world),
            registry_app.build_app(registry)]
    servers: list[_Server] = []
    try:
        for app, sock, service in zip(apps, sockets, ("gitea", "cp", "tenants", "registry"), strict=True):
            # httptools, named (not "auto"): a missing parser is an error, not a sandbox silently slower
            # at fleet size; proxy headers off: nothing stands in front of the sandbox.
            config = uvicorn.Config(_recorded(app, world, service), http="httptools", proxy_headers=False,
                                    log_config=None, log_level="warning", access_log=False, lifespan="off",
                                    timeout_graceful_shutdown=1)
            server = _Server(config)
            await server.start(sock)
            servers.append(server)
        yield Sandbox(gitea_url=world.gitea_url, cp_url=world.cp_url,
                      tenant_url_template=world.tenants_url + "/tenants/{slug}", state=world,
                      registry_url=registry_url, registry=registry)
    finally:
        world.close()  # scripted-slow answers return now
        with anyio.CancelScope(shield=True):
            await asyncio.gather(*(s.stop() for s in servers))
        for s in sockets:
            s.close()


def _recorded(app: Any, world: World, service: str) -> Any:
    """Log every request (time, service, method, path, headers) before the app sees it."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            scope[tenants_app.HEADERS_KEY] = headers
            world.requests.append(RequestRecord(
                time=time.monotonic(), service=service, method=scope["method"], path=scope["path"],
                query=scope["query_string"].decode("latin-1"), headers=headers))
        await app(scope, receive, send)

    return asgi


__all__ = ["Sandbox", "World", "serve"]
