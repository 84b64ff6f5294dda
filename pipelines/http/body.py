"""Reading an answer's body: bounded in size, JSON bounded in nesting depth.

`json.loads` recurses per nesting level, so a hostile `[[[[…]]]]` of a few kilobytes raises
`RecursionError` deep inside the parser; a depth scan first turns that into an ordinary
"not valid JSON" verdict that every caller already handles fail-closed.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_JSON_DEPTH = 64


class BadJSON(ValueError):
    """The body is not JSON we accept: undecodable, invalid, or nested deeper than allowed."""


_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]')


def nesting_depth(text: str) -> int:
    """The deepest `[`/`{` nesting in `text`, outside strings (a scan, no parsing)."""
    depth = deepest = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        ch = match.group()
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_json(raw: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`raw` as JSON, or `BadJSON` — never `RecursionError` or `UnicodeDecodeError`."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise BadJSON("not UTF-8") from None
    if nesting_depth(text) > max_depth:
        raise BadJSON(f"nested deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise BadJSON("not valid JSON") from None
