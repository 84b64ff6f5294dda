"""A real Prometheus on loopback for the analysis tests: Debian's `prometheus` package.

`start_prometheus` writes a config scraping the given targets every `SCRAPE` (a temp TSDB), starts
the binary on 127.0.0.1:<free port>, and waits — by polling its readiness endpoint, a bounded
number of times — until it answers. A missing binary is installed (`apt-get install -y prometheus`,
as `.ci/run` does through tests/system-packages.txt) when we may, or FAILS the tests: a skip would
hide a broken CI.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import httpx
import pytest

from tests.loopback import stop_process

BINARY = "prometheus"
INSTALL = ["apt-get", "install", "-y", "-qq", "prometheus"]
SCRAPE = "200ms"
READY_POLLS = 300  # × POLL_PAUSE: Prometheus starts in about a second; a loaded machine gets a minute
POLL_PAUSE = 0.2


@dataclass(frozen=True)
class Prometheus:
    url: str
    log_path: Path

    async def query(self, promql: str) -> list[dict[str, object]]:
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            resp = await client.get(f"{self.url}/api/v1/query", params={"query": promql})
        result: list[dict[str, object]] = resp.json()["data"]["result"]
        return result

    async def wait_for_series(self, promql: str) -> None:
        """Poll until `promql` has data (a scrape landed), a bounded number of times; the event loop
        (which serves the scraped sandbox) keeps running between polls."""
        for _ in range(READY_POLLS):
            if await self.query(promql):
                return
            await anyio.sleep(POLL_PAUSE)
        pytest.fail(f"Prometheus never had data for {promql!r}; log: {self.log_path.read_text()[-2000:]}")


def _binary() -> str:
    found = shutil.which(BINARY) or (f"/usr/bin/{BINARY}" if Path(f"/usr/bin/{BINARY}").is_file() else None)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(INSTALL, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, timeout=600)
        found = shutil.which(BINARY)
    if found is None:
        pytest.fail(f"{BINARY} is not installed; the analysis tests need a real Prometheus: "
                    f"{' '.join(INSTALL)} (CI: .ci/run installs tests/system-packages.txt)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def start_prometheus(root: Path, targets: dict[str, str]) -> Iterator[Prometheus]:
    """Prometheus scraping each `job → metrics URL` (all on 127.0.0.1) every SCRAPE."""
    binary = _binary()
    root.mkdir(parents=True, exist_ok=True)
    jobs = []
    for job, url in targets.items():
        parts = urlsplit(url)
        assert parts.hostname == "127.0.0.1", "tests scrape loopback only"
        jobs.append({"job_name": job, "metrics_path": parts.path or "/metrics", "scrape_interval": SCRAPE,
                     "scrape_timeout": SCRAPE, "static_configs": [{"targets": [parts.netloc]}]})
    config = root / "prometheus.yml"
    config.write_text(json.dumps({"global": {"scrape_interval": SCRAPE, "evaluation_interval": SCRAPE},
                                  "scrape_configs": jobs}), encoding="utf-8")  # JSON is YAML
    port = free_port()
    log_path = root / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={root / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={"PATH": os.environ.get("PATH", ""), "HOME": str(root)})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(READY_POLLS):
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/-/ready", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(POLL_PAUSE)
        else:
            pytest.fail(f"prometheus did not become ready: {log_path.read_text()[-2000:]}")
        yield Prometheus(url=url, log_path=log_path)
    finally:
        stop_process(proc)
