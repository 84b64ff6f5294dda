"""Where words go: human progress on stderr, the final result on stdout.

Plain lines when stderr is not a terminal (CI logs), colour only on a TTY without NO_COLOR.
Every line passes through `redact`, so a stray token never reaches a log.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO

from pipelines.redact import redact


class Output:
    def __init__(self, *, json_mode: bool = False, stream: TextIO | None = None,
                 stdout: TextIO | None = None) -> None:
        self.json_mode = json_mode
        self.stream = stream if stream is not None else sys.stderr
        self.stdout = stdout if stdout is not None else sys.stdout
        self.color = self.stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"

    def _style(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def info(self, message: str) -> None:
        print(redact(message, limit=2000), file=self.stream, flush=True)

    def ok(self, message: str) -> None:
        print(self._style("✔ ", "32") + redact(message, limit=2000), file=self.stream, flush=True)

    def warn(self, message: str) -> None:
        print(self._style("! ", "33") + redact(message, limit=2000), file=self.stream, flush=True)

    def error(self, message: str) -> None:
        print(self._style("✘ ", "31") + redact(message, limit=2000), file=self.stream, flush=True)

    def result(self, payload: dict[str, Any], human: str | None = None) -> None:
        """The verb's final word: JSON on stdout with --json, else a human line on stderr."""
        if self.json_mode:
            print(redact_json(payload), file=self.stdout, flush=True)
        elif human:
            self.info(human)


def redact_json(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    # Values are ours, but error rows from the CP pass through here: scrub known secrets.
    return redact(text, limit=10_000_000)
