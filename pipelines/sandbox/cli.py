"""`fleetgate sandbox`: serve a scenario on 127.0.0.1 until interrupted, for rehearsal and game days.

The environment to point fleetgate at it goes to stdout as `export` lines (so `eval` works); the
human lines go to stderr. The tokens printed are the sandbox's own, valid nowhere else.
"""

from __future__ import annotations

import shlex
import signal
import sys

import anyio

from pipelines.errors import ExitCode
from pipelines.sandbox import Sandbox, serve
from pipelines.sandbox.scenarios import SCENARIOS, build_world, describe

MAX_BASE_PORT = 65535 - 3  # Gitea on N, the CP on N+1, the tenants on N+2, the registry on N+3


def main(scenario: str = "happy", port: int = 0, tenants: int | None = None) -> int:
    if scenario == "list":
        print(describe())
        return int(ExitCode.OK)
    if scenario not in SCENARIOS:
        _say(f"fleetgate sandbox: unknown scenario {scenario!r}; `--scenario list` shows them")
        return int(ExitCode.USAGE)
    if port != 0 and not 1 <= port <= MAX_BASE_PORT:
        _say(f"fleetgate sandbox: --port must be 0 or 1..{MAX_BASE_PORT} (it uses N to N+3), got {port}")
        return int(ExitCode.USAGE)
    if tenants is not None and tenants < 0:
        _say(f"fleetgate sandbox: --tenants must be ≥ 0, got {tenants}")
        return int(ExitCode.USAGE)
    try:
        build_world(scenario, tenants=tenants)  # a scenario may shape a tenant the count leaves out
    except ValueError as exc:
        _say(f"fleetgate sandbox: scenario {scenario!r} with --tenants {tenants}: {exc}")
        return int(ExitCode.USAGE)
    ports = (port, port + 1, port + 2, port + 3) if port else (0, 0, 0, 0)
    try:
        anyio.run(_serve_until_signalled, scenario, ports, tenants)
    except OSError as exc:
        _say(f"fleetgate sandbox: cannot listen on 127.0.0.1 ports {ports}: {exc.strerror or exc}")
        return int(ExitCode.FAILED)
    except KeyboardInterrupt:
        pass
    _say("fleetgate sandbox: stopped")
    return int(ExitCode.OK)


async def _serve_until_signalled(scenario: str, ports: tuple[int, int, int, int], tenants: int | None) -> None:
    async with serve(scenario, tenants=tenants, ports=ports[:3], registry_port=ports[3]) as sb:
        announce(sb, scenario)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break


def announce(sb: Sandbox, scenario: str) -> None:
    count = len(sb.state.tenants)
    _say(f"fleetgate sandbox: scenario {scenario!r}, {count} tenant{'' if count == 1 else 's'}: "
         f"{SCENARIOS[scenario].doc}")
    _say(f"  Gitea          {sb.gitea_url}   (repo {sb.state.repo}, token below)")
    _say(f"  control plane  {sb.cp_url}")
    _say(f"  tenants        {sb.tenant_url_template}/buildinfo   ({count} tenants)")
    _say(f"  registry       {sb.registry_url}   (image {sb.image}: `fleetgate promote` re-points its tags)")
    _say("Point fleetgate at it (sandbox-only tokens), e.g. eval the lines below, then run "
         "`fleetgate deploy-production`. Ctrl-C stops the sandbox.")
    for name, value in sb.env().items():
        print(f"export {name}={shlex.quote(value)}", flush=True)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
