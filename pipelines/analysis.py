"""Metric analysis on every soak-watch tick (`--analysis-query`, CONTRACT §2): a Prometheus instant query.

`GET {prometheus}/api/v1/query?query=…` is judged as Argo Rollouts' AnalysisTemplate judges a metric:
`success` (every sample ≤ `--analysis-max`), `failure` (any sample above it), or `inconclusive` — no
data, an error answer, an unreadable body, NaN, no answer in time. One inconclusive tick is not a
verdict, but `--analysis-inconclusive-limit` of them in a row fail closed: a query that never
answers must not wave a release through. No token and no credential is ever sent to Prometheus
(the URL setting refuses credentials); redirects are not followed and no proxy is taken from the
environment (the client comes from `pipelines.http.client.make_client`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from pipelines.http.body import BadJSON, parse_json
from pipelines.http.client import Limits, make_client
from pipelines.redact import redact

Kind = Literal["success", "failure", "inconclusive"]
SUCCESS: Kind = "success"
FAILURE: Kind = "failure"
INCONCLUSIVE: Kind = "inconclusive"
QUERY_TIMEOUT_SECONDS = 5.0  # one tick's query; a slower Prometheus is an inconclusive tick
MAX_BODY_BYTES = 1 << 20


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    value: float | None  # the largest sample, when there was one
    detail: str  # one redacted line

    def facts(self) -> dict[str, Any]:
        return {"verdict": self.kind, "value": self.value, "detail": self.detail}


def judge(body: Any, maximum: float) -> Verdict:
    """A Prometheus query answer (parsed JSON) judged against `maximum`."""
    if not isinstance(body, dict):
        return Verdict(INCONCLUSIVE, None, "the answer is not an object")
    if body.get("status") != "success":
        error = body.get("error")
        return Verdict(INCONCLUSIVE, None, redact(f"Prometheus error: {error}" if isinstance(error, str)
                                                  else "Prometheus answered without status success", limit=200))
    data = body.get("data")
    if not isinstance(data, dict):
        return Verdict(INCONCLUSIVE, None, "the answer has no data")
    kind, result = data.get("resultType"), data.get("result")
    raw: list[Any]
    if kind == "vector" and isinstance(result, list):
        raw = [s.get("value") for s in result if isinstance(s, dict)]
    elif kind == "scalar":
        raw = [result]
    else:
        return Verdict(INCONCLUSIVE, None, redact(f"unsupported result type {kind!r} (use an instant vector "
                                                  "or a scalar)", limit=200))
    samples: list[float] = []
    for pair in raw:
        if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[1], str):
            return Verdict(INCONCLUSIVE, None, "a sample is not [time, \"value\"]")
        try:
            samples.append(float(pair[1]))
        except ValueError:
            return Verdict(INCONCLUSIVE, None, "a sample value is not a number")
    if not samples:
        return Verdict(INCONCLUSIVE, None, "no data")
    if any(math.isnan(v) for v in samples):
        return Verdict(INCONCLUSIVE, None, "NaN")
    top = max(samples)
    if top > maximum:
        return Verdict(FAILURE, top, f"{top:g} > {maximum:g}")
    return Verdict(SUCCESS, top, f"{top:g} ≤ {maximum:g}")


async def query(client: httpx.AsyncClient, base_url: str, promql: str, maximum: float) -> Verdict:
    """One instant query; never raises — every way it can go wrong is an inconclusive verdict."""
    try:
        resp = await client.get(f"{base_url}/api/v1/query", params={"query": promql})
    except httpx.HTTPError as exc:
        return Verdict(INCONCLUSIVE, None, f"Prometheus unreachable ({type(exc).__name__})")
    if len(resp.content) > MAX_BODY_BYTES:
        return Verdict(INCONCLUSIVE, None, "the answer is too large")
    try:
        body = parse_json(resp.content)
    except BadJSON:
        return Verdict(INCONCLUSIVE, None, f"HTTP {resp.status_code}, not JSON")
    verdict = judge(body, maximum)
    if resp.status_code != 200 and verdict.kind != INCONCLUSIVE:  # an error status never counts as data
        return Verdict(INCONCLUSIVE, None, f"HTTP {resp.status_code}")
    return verdict


class Analysis:
    """The analysis of one run: each `tick` queries once; `failed` says why the run must stop, if it must."""

    def __init__(self, base_url: str, promql: str, maximum: float, inconclusive_limit: int, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.promql = promql
        self.maximum = maximum
        self.inconclusive_limit = inconclusive_limit
        self.inconclusive_in_a_row = 0
        self.ticks = 0
        t = QUERY_TIMEOUT_SECONDS
        self._client = make_client(headers={"Accept": "application/json", "User-Agent": "fleetgate"},
                                   limits=Limits(connect=t, read=t, write=t, pool=t, deadline=t),
                                   transport=transport)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def tick(self) -> tuple[Verdict, str | None]:
        """(this tick's verdict, why the run fails now — or None)."""
        self.ticks += 1
        verdict = await query(self._client, self.base_url, self.promql, self.maximum)
        if verdict.kind == INCONCLUSIVE:
            self.inconclusive_in_a_row += 1
            if self.inconclusive_in_a_row >= self.inconclusive_limit:
                return verdict, (f"analysis inconclusive {self.inconclusive_in_a_row} time(s) in a row "
                                 f"(limit {self.inconclusive_limit}): {verdict.detail}")
            return verdict, None
        self.inconclusive_in_a_row = 0
        if verdict.kind == FAILURE:
            return verdict, redact(f"analysis failed: {self.promql!r} = {verdict.detail}", limit=300)
        return verdict, None


__all__ = ["FAILURE", "INCONCLUSIVE", "SUCCESS", "Analysis", "Verdict", "judge", "query"]
