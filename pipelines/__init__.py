"""fleetgate: from green main to a verified production fleet, fail-closed.

The engine-agnostic steps live here; `ci/` (Dagger) and `pipelines.cli` are thin front doors.
"""

__version__ = "0.1.0"
