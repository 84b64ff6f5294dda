"""Bodies from peers: JSON bounded in depth, never a RecursionError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.http.body import MAX_JSON_DEPTH, BadJSON, nesting_depth, parse_json

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=20,
)


@given(json_values)
def test_depth_scan_matches_the_structure(value: object) -> None:
    def depth(v: object) -> int:
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        return 0

    assert nesting_depth(json.dumps(value)) == depth(value)
    assert parse_json(json.dumps(value).encode()) == value


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"a":' * 5_000, b"\xff\xfe", b"{", b"nan?"])
def test_hostile_bodies_are_bad_json(raw: bytes) -> None:
    with pytest.raises(BadJSON):
        parse_json(raw)


def test_the_limit_is_inclusive() -> None:
    assert parse_json("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) is not None
    with pytest.raises(BadJSON):
        parse_json("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
