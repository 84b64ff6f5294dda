"""Virtual time for tests: a module's `anyio.current_time()` and `anyio.sleep()` run on a fake clock.

`FakeClock.install(monkeypatch, module, ...)` gives each module an `anyio` whose clock starts at `now` and
whose sleep adds to it and only yields, so a 30-minute gate wait takes no real time and its polls can be
counted exactly. Everything else (`move_on_after`, task groups, sockets) is the real anyio.
"""

from __future__ import annotations

import types
from typing import Any

import anyio
import anyio.lowlevel
import pytest


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.start = self.now = now
        self.slept: list[float] = []

    def current_time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(0.0, seconds)
        await anyio.lowlevel.checkpoint()  # a checkpoint, as a real sleep is

    @property
    def elapsed(self) -> float:
        return self.now - self.start

    def install(self, monkeypatch: pytest.MonkeyPatch, *modules: types.ModuleType) -> FakeClock:
        fake: Any = types.SimpleNamespace(**{n: getattr(anyio, n) for n in dir(anyio) if not n.startswith("_")})
        fake.current_time, fake.sleep = self.current_time, self.sleep
        for module in modules:
            assert module.anyio is anyio, f"{module.__name__} reads time through `anyio`"
            monkeypatch.setattr(module, "anyio", fake)
        return self
