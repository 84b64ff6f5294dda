"""The fault suite's fixtures: one set of hostile fakes per session, retries without waiting, and the
hypothesis profiles (`ci` by default; `HYPOTHESIS_PROFILE=deep` for thousands of schedules)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import stamina
from hypothesis import HealthCheck, settings

from faults.fakes import Fakes

_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                                        HealthCheck.function_scoped_fixture]}
settings.register_profile("faults-ci", max_examples=300, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("faults-deep", max_examples=3000, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("deep", max_examples=3000, **_COMMON)  # type: ignore[arg-type]  # --hypothesis-profile deep


def fault_profile() -> settings:
    """`HYPOTHESIS_PROFILE=deep` selects thousands of examples; anything else, the CI 300."""
    return settings.get_profile("faults-deep" if os.environ.get("HYPOTHESIS_PROFILE") == "deep" else "faults-ci")


@pytest.fixture(scope="session")
def fakes() -> Iterator[Fakes]:
    running = Fakes().start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(autouse=True)
def _no_retry_waits() -> Iterator[None]:
    # retries still happen (attempts=3), only the waits between them are gone
    with stamina.set_testing(True, attempts=3):
        yield
