"""Where words go: human progress on stderr, the final result on stdout.

Plain lines when stderr is not a terminal (CI logs keep every line, with no escape codes); on a
terminal, rich renders colour and a live countdown while fleetgate waits (soak, gates, lease).
`NO_COLOR` and `TERM=dumb` turn colour off. Every line passes through `redact`, so a stray token
never reaches a log.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO

import anyio

from pipelines.errors import ExitCode, FleetgateError
from pipelines.redact import redact, redact_tree

if TYPE_CHECKING:
    from rich.console import Console

LINE_LIMIT = 2000
JSON_STRING_LIMIT = 100_000  # one string of a --json answer (a CP error row is capped long before)
SLUGS_SHOWN = 10  # human lines name at most this many tenants; the ledger and `report` keep them all
_STYLES = {"ok": ("✔ ", "green"), "warn": ("! ", "yellow"), "error": ("✘ ", "red"), "info": ("", "")}


def cut_list(items: Sequence[str], limit: int = SLUGS_SHOWN) -> str:
    """`a, b, c` — or the first `limit` and "… and N more" (human output only)."""
    shown = ", ".join(items[:limit])
    return shown + (f" … and {len(items) - limit} more" if len(items) > limit else "") if items else "none"


class Progress:
    """One thing being waited for: `done` of `total` (tenants verified), within `seconds` (a timeout).

    On a terminal it is drawn as one live line (rich redraws it a few times a second, so elapsed and
    time left move while nothing else does); in CI each change of `done` is one plain line.
    """

    def __init__(self, label: str, *, total: int | None, seconds: float | None,
                 clock: Callable[[], float]) -> None:
        self.label = label
        self.total = total
        self.seconds = seconds
        self.clock = clock
        self.started = clock()
        self.done: int | None = None
        self.note = ""

    def update(self, done: int | None = None, note: str | None = None) -> bool:
        """Record progress; True when it changed what a plain line would say."""
        changed = (done is not None and done != self.done) or (note is not None and note != self.note)
        if done is not None:
            self.done = done
        if note is not None:
            self.note = note
        return changed

    def text(self) -> str:
        elapsed = max(0.0, self.clock() - self.started)
        parts = [self.label]
        if self.total is not None:
            parts.append(f"{self.done or 0} of {self.total} verified")
        if self.seconds is not None:
            left = max(0.0, self.seconds - elapsed)
            parts.append(f"{elapsed:.0f}s of {self.seconds:g}s, {left:.0f}s left")
        else:
            parts.append(f"{elapsed:.0f}s")
        if self.note:
            parts.append(self.note)
        return redact(" — ".join(parts), fold=False)

    def __rich__(self) -> str:
        return self.text()


def _lines(message: str) -> list[str]:
    """Each line of `message` redacted on its own: line structure (tables) survives, control characters do not."""
    return [redact(line, limit=LINE_LIMIT, fold=False) for line in message.splitlines() or [""]]


class Output:
    def __init__(self, *, json_mode: bool = False, stream: TextIO | None = None,
                 stdout: TextIO | None = None) -> None:
        self.json_mode = json_mode
        self.stream = stream if stream is not None else sys.stderr
        self.stdout = stdout if stdout is not None else sys.stdout
        self.tty = _isatty(self.stream)
        self.color = self.tty and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
        self._console: Console | None = None

    @property
    def console(self) -> Console | None:
        """A rich console on a terminal (imported only then: CI logs never pay for it)."""
        if self.tty and self._console is None:
            from rich.console import Console

            self._console = Console(file=self.stream, no_color=not self.color, highlight=False,
                                    emoji=False, markup=False, soft_wrap=True)
        return self._console

    def _say(self, kind: str, message: str) -> None:
        mark, style = _STYLES[kind]
        console = self.console
        for index, line in enumerate(_lines(message)):
            prefix = mark if index == 0 else ""  # continuation lines (tables) keep their own indent
            if console is not None:
                if prefix:
                    console.print(prefix, style=style or None, end="")
                console.print(line)
            else:
                print(prefix + line, file=self.stream, flush=True)

    def info(self, message: str) -> None:
        self._say("info", message)

    def ok(self, message: str) -> None:
        self._say("ok", message)

    def warn(self, message: str) -> None:
        self._say("warn", message)

    def error(self, message: str) -> None:
        self._say("error", message)

    def verb_ended(self, verb: str, exc: FleetgateError) -> None:
        """A verb's last line when it ends with an exit code other than 0 (CLI and Dagger alike).
        The kill switch and a stand-down are the tool working as meant: a notice, not a failure."""
        say = self.warn if exc.exit_code in (ExitCode.DISABLED, ExitCode.STOOD_DOWN) else self.error
        say(f"fleetgate {verb}: {exc.message}")

    @contextmanager
    def progress(self, label: str, *, total: int | None = None, seconds: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> Iterator[Progress]:
        """A live line while the engine waits (`verify canary`, `wave 4 of 20: CP call`):

            with out.progress("wave 2 of 5: verifying", total=3, seconds=60) as p:
                p.update(done=2)

        On a terminal the line redraws itself (elapsed, time left); in CI: the label once, then a
        plain line per change (`2 of 3 verified`), never a line per tick.
        """
        bar = Progress(label, total=total, seconds=seconds, clock=clock)
        console = self.console
        if console is None:
            self.info(bar.text())
            plain_update = bar.update

            def update(done: int | None = None, note: str | None = None) -> bool:
                changed = plain_update(done, note)
                if changed:
                    self.info(bar.text())
                return changed

            bar.update = update  # type: ignore[method-assign]
            yield bar
            return
        from rich.live import Live

        with Live(bar, console=console, refresh_per_second=4, transient=True):
            yield bar

    async def pause(self, seconds: float, label: str) -> None:
        """Sleep `seconds`; on a terminal, show `label` with a live countdown meanwhile."""
        console = self.console
        if console is None or seconds <= 0:
            await anyio.sleep(seconds)
            return
        deadline = anyio.current_time() + seconds
        with console.status(label) as status:
            while (left := deadline - anyio.current_time()) > 0:
                status.update(f"{redact(label, fold=False)} — {left:.1f}s")
                await anyio.sleep(min(1.0, left))

    def result(self, payload: dict[str, Any], human: str | None = None) -> None:
        """The verb's final word: JSON on stdout with --json, else a human line on stderr."""
        if self.json_mode:
            print(redact_json(payload), file=self.stdout, flush=True)
        elif human:
            self.info(human)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or file-like without isatty
        return False


def redact_json(payload: dict[str, Any]) -> str:
    """`payload` as one line of JSON, every string redacted (values are ours, but error rows from the
    CP pass through here). String by string, not the dumped text: a 1,000-tenant result repeats its
    slugs and SHAs, which `redact` then answers from memory, and a JSON escape cannot split a token."""
    return json.dumps(redact_tree(payload, limit=JSON_STRING_LIMIT, fold=False), sort_keys=True)
