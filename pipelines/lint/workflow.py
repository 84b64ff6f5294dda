"""A workflow file as a YAML node tree, with the positions every rule reports.

The file is *composed* (never constructed): keys stay strings, so the YAML 1.1 reading of the
key `on` as boolean `true` never happens, duplicate keys stay visible, and every node keeps
its start mark. libyaml's composer (`yaml.CSafeLoader`) is used when PyYAML was built with it;
the pure-Python `SafeLoader` gives the same marks, only slower.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pipelines.lint.model import Hit

DEFAULT_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_UNRESOLVED_TAG = "?"

# libyaml's line breaks (YAML 1.1): not str.splitlines(), which also splits on \v, \f and \x1c-\x1e.
_BREAK_RE = re.compile(r"\r\n|[\r\n\x85\u2028\u2029]")
_BOOL_TRUE = frozenset({"true", "True", "TRUE"})
_EXPRESSION_RE = re.compile(r"\$\{\{.*?\}\}", re.DOTALL)


class ParseError(Exception):
    """The file cannot be read as a workflow; carries a 1-based position."""

    def __init__(self, message: str, line: int = 1, column: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


def key_text(node: Node) -> str | None:
    """The text of a mapping key, or None for a complex (non-scalar) key."""
    return node.value if isinstance(node, ScalarNode) else None


def items(node: Node | None) -> list[tuple[Node, Node]]:
    """(key, value) pairs of a mapping node, in file order (duplicates included)."""
    if isinstance(node, MappingNode):
        return list(node.value)
    return []


def get_item(node: Node | None, key: str) -> tuple[Node, Node] | None:
    """The pair for `key`; the last one when duplicated, as YAML loaders keep the last."""
    found: tuple[Node, Node] | None = None
    for k, v in items(node):
        if key_text(k) == key:
            found = (k, v)
    return found


def get(node: Node | None, key: str) -> Node | None:
    pair = get_item(node, key)
    return pair[1] if pair else None


def scalar(node: Node | None) -> str | None:
    return node.value if isinstance(node, ScalarNode) else None


def is_true(node: Node | None) -> bool:
    """A literal YAML boolean true (plain style, so `"true"` in quotes is a string).

    The pure-Python composer marks plain style as None, libyaml's as ''.
    """
    return isinstance(node, ScalarNode) and not node.style and node.value in _BOOL_TRUE


def is_expression(node: Node | None) -> bool:
    return isinstance(node, ScalarNode) and "${{" in node.value


def expressions(text: str) -> Iterator[re.Match[str]]:
    """Every `${{ … }}` in a text."""
    return _EXPRESSION_RE.finditer(text)


def at(node: Node, message: str) -> Hit:
    """A hit at a node's first character."""
    return Hit(node.start_mark.line + 1, node.start_mark.column + 1, message)


@dataclass(frozen=True)
class Step:
    job_id: str
    job: Node
    index: int
    node: Node

    def get(self, key: str) -> Node | None:
        return get(self.node, key)


@dataclass(frozen=True)
class Job:
    id: str
    key: Node
    node: Node

    def get(self, key: str) -> Node | None:
        return get(self.node, key)


@dataclass(frozen=True)
class Trigger:
    name: str
    node: Node  # the event's name: a key of `on:`, an item of its list, or its scalar value
    config: Node | None  # the event's settings when `on:` is a mapping


@dataclass
class Workflow:
    path: str
    text: str
    root: MappingNode
    lines: list[str] = field(init=False)
    production_at: tuple[int, int] | None = None  # where production markers were found (1-based)

    def __post_init__(self) -> None:
        # str.split is far cheaper than the regex; the regex only when a rarer break occurs.
        rare = any(c in self.text for c in "\r\x85\u2028\u2029")
        self.lines = _BREAK_RE.split(self.text) if rare else self.text.split("\n")

    # --- positions -----------------------------------------------------------------------
    @cached_property
    def _line_starts(self) -> list[int]:
        starts = [0]
        starts.extend(m.end() for m in _BREAK_RE.finditer(self.text))
        return starts

    def position_of_offset(self, offset: int) -> tuple[int, int]:
        """1-based (line, column) of a character offset in the text."""
        line = bisect_right(self._line_starts, offset) - 1
        return line + 1, offset - self._line_starts[line] + 1

    def segments(self, node: ScalarNode) -> list[tuple[int, int, str]]:
        """The source text of a scalar, line by line: (0-based line, 0-based column, text).

        Block scalars (`|`, `>`) start on the line after their indicator and keep their
        indentation in the source, so a match's column there is simply its index in the line.
        Plain and quoted scalars start at the node's own column.
        """
        start, end = node.start_mark, node.end_mark
        last = min(end.line, len(self.lines) - 1)
        out: list[tuple[int, int, str]] = []
        if node.style in ("|", ">"):
            for n in range(start.line + 1, last + 1):
                text = self.lines[n] if n < end.line else self.lines[n][: end.column]
                if text.strip():
                    out.append((n, 0, text))
            return out
        for n in range(start.line, last + 1):
            begin = start.column if n == start.line else 0
            stop = end.column if n == end.line else len(self.lines[n])
            out.append((n, begin, self.lines[n][begin:stop]))
        return out

    def find(self, node: ScalarNode, pattern: re.Pattern[str]) -> Iterator[tuple[int, int, re.Match[str]]]:
        """Every match of `pattern` in a scalar, at its exact 1-based position in the file.

        A match that the source does not show verbatim (an escape in a quoted scalar, a folded
        line) is still reported, at the scalar's first character.
        """
        found = False
        for n, col, text in self.segments(node):
            for m in pattern.finditer(text):
                found = True
                yield n + 1, col + m.start() + 1, m
        if not found:
            fallback = pattern.search(node.value)
            if fallback:
                yield node.start_mark.line + 1, node.start_mark.column + 1, fallback

    # --- structure -----------------------------------------------------------------------
    def get(self, key: str) -> Node | None:
        return get(self.root, key)

    @cached_property
    def on_item(self) -> tuple[Node, Node] | None:
        # A composed key is the string "on"; a constructed one would be True (YAML 1.1).
        return get_item(self.root, "on")

    @cached_property
    def triggers(self) -> list[Trigger]:
        pair = self.on_item
        if pair is None:
            return []
        value = pair[1]
        if isinstance(value, ScalarNode):
            return [Trigger(value.value, value, None)] if value.value else []
        if isinstance(value, SequenceNode):
            return [Trigger(v.value, v, None) for v in value.value if isinstance(v, ScalarNode)]
        return [Trigger(name, k, v) for k, v in items(value) if (name := key_text(k)) is not None]

    @cached_property
    def jobs(self) -> list[Job]:
        return [Job(name, k, v) for k, v in items(self.get("jobs")) if (name := key_text(k)) is not None]

    @cached_property
    def steps(self) -> list[Step]:
        out: list[Step] = []
        for job in self.jobs:
            steps = job.get("steps")
            if isinstance(steps, SequenceNode):
                out.extend(Step(job.id, job.node, i, s) for i, s in enumerate(steps.value))
        return out

    @cached_property
    def run_scripts(self) -> list[tuple[Step, ScalarNode]]:
        """Every step's `run:` text node."""
        out: list[tuple[Step, ScalarNode]] = []
        for step in self.steps:
            run = step.get("run")
            if isinstance(run, ScalarNode):
                out.append((step, run))
        return out

    def _walk(self) -> tuple[list[ScalarNode], list[MappingNode]]:
        """Every scalar and every mapping, in no particular order (findings are sorted later).

        Collections are visited once: an alias points at a node already seen, and a recursive
        anchor must not loop. This runs on every file, so it avoids per-node calls.
        """
        scalars: list[ScalarNode] = []
        mappings: list[MappingNode] = []
        seen: set[int] = set()
        stack: list[Node] = [self.root]
        while stack:
            node = stack.pop()
            if node.__class__ is ScalarNode:
                scalars.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            if node.__class__ is MappingNode:
                mappings.append(node)
                for pair in node.value:
                    stack.extend(pair)
            else:
                stack.extend(node.value)
        return scalars, mappings

    @cached_property
    def _walked(self) -> tuple[list[ScalarNode], list[MappingNode]]:
        return self._walk()

    @property
    def scalars(self) -> list[ScalarNode]:
        return self._walked[0]

    @property
    def mappings(self) -> list[MappingNode]:
        return self._walked[1]


_UNTAGGED: dict[Any, Any] = {}


def _untagged(loader: Any) -> Any:
    """`loader` without implicit tag resolution.

    Nodes are never constructed here, so their tags (bool, int, null …, found by matching
    regexes against every plain scalar, in Python even under libyaml) are never read.
    Skipping it roughly halves the time spent composing.
    """
    if loader not in _UNTAGGED:
        def resolve(self: Any, kind: Any, value: Any, implicit: Any) -> str:
            return _UNRESOLVED_TAG

        def descend_resolver(self: Any, current_node: Any, current_index: Any) -> None:
            return None

        def ascend_resolver(self: Any) -> None:
            return None

        _UNTAGGED[loader] = type(f"Untagged{loader.__name__}", (loader,), {
            "resolve": resolve, "descend_resolver": descend_resolver, "ascend_resolver": ascend_resolver})
    return _UNTAGGED[loader]


MAX_DEPTH = 1000  # real workflows nest about ten levels deep
_NESTING_CHARS = "[{-:?"
_SUSPICIOUS_NESTING = 4000


def _too_deep(text: str, loader: Any) -> Any:
    """The mark where nesting passes MAX_DEPTH, or None.

    libyaml's composer recurses in C: a hostile file nested some 20,000 levels deep crashes the
    process instead of raising. Every level needs one of `[{-:?`, so a file with few of them
    cannot be that deep; only a file with many is walked event by event (no recursion there).
    """
    if sum(text.count(c) for c in _NESTING_CHARS) < _SUSPICIOUS_NESTING:
        return None
    depth = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                return event.start_mark
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return None


def parse(path: str, text: str, loader: Any = None) -> Workflow:
    """Compose one workflow file; `ParseError` (with its position) when it is not one."""
    loader = _untagged(loader or DEFAULT_LOADER)
    try:
        deep = _too_deep(text, loader)
        if deep is not None:
            raise ParseError(f"nested more than {MAX_DEPTH} levels deep", deep.line + 1, deep.column + 1)
        root = yaml.compose(text, Loader=loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(f"{exc.problem or exc.context or 'invalid YAML'}".split())
        if exc.context and exc.context_mark is not None and exc.problem_mark is not None:
            where = exc.context_mark
            problem = f"{problem} ({exc.context} at {where.line + 1}:{where.column + 1})"
        if mark is None:
            raise ParseError(f"not valid YAML: {problem}") from None
        raise ParseError(f"not valid YAML: {problem}", mark.line + 1, mark.column + 1) from None
    except yaml.YAMLError as exc:
        # ReaderError (a control character, invalid encoding) carries no mark.
        raise ParseError(f"not valid YAML: {' '.join(str(exc).split())[:200]}") from None
    except RecursionError:  # the pure-Python composer recurses too
        raise ParseError(f"nested too deep to read (more than {MAX_DEPTH} levels)") from None
    if root is None:
        raise ParseError("empty file: a workflow is a mapping with `on` and `jobs`")
    if not isinstance(root, MappingNode):
        raise ParseError("not a workflow: the top level must be a mapping",
                         root.start_mark.line + 1, root.start_mark.column + 1)
    return Workflow(path, text, root)
