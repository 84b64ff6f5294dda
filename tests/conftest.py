from __future__ import annotations

from typing import Any

import httpx
import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"



@pytest.fixture
def clients_made(monkeypatch: pytest.MonkeyPatch) -> list[httpx.AsyncClient]:
    """Every client the health check builds, each through the one factory."""
    import pipelines.watch

    made: list[httpx.AsyncClient] = []
    real = pipelines.watch.make_client

    def counting(*args: Any, **kwargs: Any) -> httpx.AsyncClient:
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(pipelines.watch, "make_client", counting)
    return made
