"""Measured runs, one per process (so each has its own CPU time and peak RSS); each prints one JSON line.

    python -m bench.drivers engine  --engine aiohttp|httpx-aiohttp|httpx --port P --n N --concurrency C
    python -m bench.drivers tls     --port P --ca CA --hosts H1,H2,... --concurrency C
    python -m bench.drivers rollout --tenants N --batch B --soak S --wave-latency W
    python -m bench.drivers gates   --interval I --trials K
"""

from __future__ import annotations

import argparse
import io
import json
import ssl
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

SHA = "c" * 40


def emit(data: dict[str, Any]) -> None:
    print(json.dumps(data), flush=True)


# ------------------------------------------------------------------ HTTP engines side by side


async def _fan_out(get: Callable[[str], Awaitable[bytes]], urls: list[str], concurrency: int) -> int:
    """The reader's own pattern (a fixed pool of workers) around a bare GET; returns how many verified."""
    queue = iter(urls)
    ok = 0

    async def worker() -> None:
        nonlocal ok
        for url in queue:
            if json.loads(await get(url)).get("git_sha") == SHA:
                ok += 1

    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return ok


async def engine(args: argparse.Namespace) -> dict[str, Any]:
    urls = [f"http://127.0.0.1:{args.port}/t/t{i:05d}/buildinfo" for i in range(args.n)]
    start_cpu = time.process_time()
    if args.engine == "fleetgate":  # the product: BuildinfoReader with every hardening
        from pipelines.verify import BuildinfoReader

        async with BuildinfoReader(lambda s: f"http://127.0.0.1:{args.port}/t/{s}",
                                   concurrency=args.concurrency) as reader:
            start = time.perf_counter()
            readings = await reader.read([f"t{i:05d}" for i in range(args.n)], SHA)
            wall = time.perf_counter() - start
        ok = sum(r.verified for r in readings.values())
    elif args.engine == "aiohttp":
        import aiohttp

        connector = aiohttp.TCPConnector(limit=args.concurrency, limit_per_host=0)
        async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:

            async def get(url: str) -> bytes:
                async with session.get(url, allow_redirects=False) as r:
                    return await r.read()

            start = time.perf_counter()
            ok = await _fan_out(get, urls, args.concurrency)
            wall = time.perf_counter() - start
    else:
        import httpx

        limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
        transport: Any = None
        if args.engine == "httpx-aiohttp":
            import aiohttp
            from httpx_aiohttp import AiohttpTransport  # type: ignore[import-not-found]

            transport = AiohttpTransport(client=lambda: aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=args.concurrency, limit_per_host=0), trust_env=False))
        async with httpx.AsyncClient(limits=limits, trust_env=False, transport=transport) as client:

            async def get(url: str) -> bytes:
                return (await client.get(url)).content

            start = time.perf_counter()
            ok = await _fan_out(get, urls, args.concurrency)
            wall = time.perf_counter() - start
    return {"wall": wall, "cpu": time.process_time() - start_cpu, "verified": ok}


# ------------------------------------------------------------------ TLS, one origin (and one handshake) per tenant


async def tls(args: argparse.Namespace) -> dict[str, Any]:
    from pipelines.verify import BuildinfoReader

    hosts = args.hosts.split(",")
    address = {f"t{i:05d}": host for i, host in enumerate(hosts)}
    context = ssl.create_default_context(cafile=args.ca)
    async with BuildinfoReader(lambda s: f"https://{address[s]}:{args.port}/t/{s}", concurrency=args.concurrency,
                               ssl_context=context) as reader:
        start, start_cpu = time.perf_counter(), time.process_time()
        readings = await reader.read(list(address), SHA)
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    bad = [r.detail for r in readings.values() if not r.verified][:3]
    return {"wall": wall, "cpu": cpu, "verified": sum(r.verified for r in readings.values()), "examples": bad}


# ------------------------------------------------------------------ a whole rollout against the sandbox


async def rollout(args: argparse.Namespace) -> dict[str, Any]:
    from pipelines.output import Output
    from pipelines.rollout import run
    from pipelines.sandbox import serve
    from pipelines.settings import resolve

    async with serve("happy", tenants=args.tenants) as sb:
        for tenant in sb.state.tenants.values():
            tenant.latency = args.wave_latency  # every tenant of a wave takes this long: the CP's wave time
        with tempfile.TemporaryDirectory() as tmp:
            # --verify-interval at its production default (the sandbox rehearses with 0.1 s): it is also
            # the soak watch's tick; each soak ends with a re-read of its wave and of the tenants due
            flags = {"batch_size": str(args.batch), "soak_seconds": str(args.soak),
                     "ledger": str(Path(tmp) / "ledger.jsonl"), "verify_interval": "5"}
            settings = resolve("rollout", flags, {}, overlay=sb.overlay)
            out = Output(json_mode=True, stream=io.StringIO(), stdout=io.StringIO())
            start = time.perf_counter()
            result = await run(settings, out)
            wall = time.perf_counter() - start
            ledger = [json.loads(line) for line in (Path(tmp) / "ledger.jsonl").read_text().splitlines()]
        calls = [c for c in sb.state.cp_calls if c.body and not c.body.get("dry_run")]
        cp_time = sum((c.end or c.start) - c.start for c in calls)
        soaks = [e for e in ledger if e["event"] == "soak" and "seconds" in e]  # one per soak, at its start
        soak_reads = sum(e.get("reads", 0) for e in ledger if e["event"] == "soak" and e.get("action") == "watched")
    return {"wall": wall, "exit_code": result.get("exit_code"), "waves": len(calls), "cp_time": cp_time,
            "soaks": len(soaks), "soak_time": sum(e["seconds"] for e in soaks), "soak_reads": soak_reads,
            "tenants": args.tenants}


# ------------------------------------------------------------------ gate detection latency


async def gates(args: argparse.Namespace) -> dict[str, Any]:
    from pipelines.gates import run
    from pipelines.output import Output
    from pipelines.sandbox import serve
    from pipelines.settings import resolve

    latencies: list[float] = []
    polls_per_trial: list[int] = []
    pages_per_poll: list[float] = []
    for k in range(args.trials):
        async with serve("happy") as sb:
            w = sb.state
            last = w.required_contexts[-1]
            w.set_status(w.deploy_sha, last, "pending")
            settings = resolve("wait-gates", {"poll_interval": str(args.interval), "gate_timeout": "60"}, {},
                               overlay=sb.overlay)
            out = Output(json_mode=True, stream=io.StringIO(), stdout=io.StringIO())
            # The flip lands at a known phase after a poll, spread evenly over the interval across the
            # trials (stratified, not random): the median is then the interval's half plus what
            # fleetgate itself adds, which is what the goal bounds.
            phase = (k + 0.5) / args.trials * args.interval
            flipped_at: list[float] = []

            async def flip(w: Any = w, last: str = last, phase: float = phase,
                           flipped_at: list[float] = flipped_at) -> None:
                while w.status_reads.get(w.deploy_sha, 0) < 2:  # noqa: ASYNC110 -- the world has no event for a read
                    await anyio.sleep(0.002)
                await anyio.sleep(phase)
                w.set_status(w.deploy_sha, last, "success")
                flipped_at.append(time.perf_counter())

            before = len(w.requests_to("gitea", contains="/status"))
            async with anyio.create_task_group() as tg:
                tg.start_soon(flip)
                await run(settings, out)
            latencies.append(time.perf_counter() - flipped_at[0])
            status_requests = len(w.requests_to("gitea", contains="/status")) - before
            polls = max(1, w.status_reads.get(w.deploy_sha, 0))
            polls_per_trial.append(polls)
            pages_per_poll.append(status_requests / polls)
    latencies.sort()
    return {"median": latencies[len(latencies) // 2], "latencies": latencies, "interval": args.interval,
            "requests_per_poll": max(pages_per_poll), "polls": polls_per_trial}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=("engine", "tls", "rollout", "gates"))
    parser.add_argument("--engine", default="aiohttp")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--ca")
    parser.add_argument("--hosts", default="")
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--soak", type=float, default=1.0)
    parser.add_argument("--wave-latency", type=float, default=0.2)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--trials", type=int, default=9)
    args = parser.parse_args()
    fn = {"engine": engine, "tls": tls, "rollout": rollout, "gates": gates}[args.what]
    emit(anyio.run(fn, args))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
