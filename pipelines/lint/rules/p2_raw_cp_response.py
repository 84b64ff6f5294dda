"""P2: raw control-plane responses, or their `.error`, sent to the job log.

The CP's answer and its `error` text can carry tenant internals and echoed credentials; fleetgate
redacts them. A hand-written step that prints them bypasses that. Flagged in production deploys:
- `cat` of a file curl wrote, `jq .` (pretty-prints everything), `| .error` / `jq .error`;
- `echo`/`printf` of a variable that captured curl's output;
- a curl to the CP's redeploy endpoint whose output is not captured (it prints the body);
- `set -x` (xtrace) in a step that holds the CP token.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from yaml.nodes import Node

from pipelines.lint.model import Hit, LintContext, Rule, Severity
from pipelines.lint.workflow import Step, Workflow, get, items, scalar

_CAPTURE_VAR_RE = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)=\$\(\s*curl\b")
_CURL_OUTPUT_RE = re.compile(r"\bcurl\b[^\n]*?(?:\s-o\s*|\s--output[=\s]\s*)[\"']?([^\s\"';|&)]+)")
_CURL_REDIRECT_RE = re.compile(r"\bcurl\b[^\n]*?>\s*[\"']?([^\s\"';|&)]+)")
_ERROR_FIELD_RE = re.compile(r"\|\s*\.error\b|\bjq\b[^\n|]*?['\"]?\.error\b")
_JQ_DOT_RE = re.compile(r"\bjq\s+(?:-[a-zA-Z]+\s+)*['\"]?\.['\"]?(?=\s|$|[|;)])")
_XTRACE_RE = re.compile(r"\bset\s+(?:-[a-zA-Z]*x[a-zA-Z]*\b|-o\s+xtrace\b)|\bbash\s+-[a-zA-Z]*x")
_CP_TOKEN_RE = re.compile(r"CP_ADMIN_API_TOKEN|\bCP_[A-Z0-9_]*TOKEN\b|secrets\.[A-Za-z0-9_]*CP[A-Za-z0-9_]*")
_CP_CALL_RE = re.compile(r"\bcurl\b[^\n]*redeploy-fleet")
_CAPTURED_RE = re.compile(r"\$\(\s*curl\b|\s-o\s*\S|\s--output[=\s]|>|\|")


def _holds_cp_token(wf: Workflow, step: Step, run_text: str) -> bool:
    def env_mentions(env: Node | None) -> bool:
        return any(_CP_TOKEN_RE.search(f"{scalar(k) or ''}={scalar(v) or ''}") for k, v in items(env))

    return (bool(_CP_TOKEN_RE.search(run_text)) or env_mentions(step.get("env"))
            or env_mentions(get(step.job, "env")) or env_mentions(wf.get("env")))


def _command_text(wf: Workflow, line: int) -> str:
    """The whole command around a match: its full source line (`VAR=$(curl …` captures before
    the match starts) plus the lines it continues onto with a trailing backslash."""
    parts: list[str] = []
    n = line - 1
    while n < len(wf.lines):
        parts.append(wf.lines[n])
        if not wf.lines[n].rstrip().endswith("\\"):
            break
        n += 1
    return "\n".join(parts)


def _sinks(run_text: str) -> tuple[set[str], set[str]]:
    variables = set(_CAPTURE_VAR_RE.findall(run_text))
    files = set(_CURL_OUTPUT_RE.findall(run_text)) | set(_CURL_REDIRECT_RE.findall(run_text))
    files.discard("/dev/null")
    return variables, files


def check(wf: Workflow, ctx: LintContext) -> Iterator[Hit]:
    for step, node in wf.run_scripts:
        text = node.value
        variables, files = _sinks(text)
        patterns: list[tuple[re.Pattern[str], str]] = [
            (_ERROR_FIELD_RE, "prints the CP response's `.error` unredacted"),
            (_JQ_DOT_RE, "prints a whole (CP) response unredacted with `jq .`"),
        ]
        # Piped or redirected output is not printed: `echo "$RESP" | jq -r .ok` shows a chosen field.
        for var in sorted(variables):
            patterns.append((re.compile(rf"\b(?:echo|printf)\b[^\n|>]*\$\{{?{re.escape(var)}\b(?![^\n]*[|>])"),
                             f"echoes ${var}, a raw CP response"))
        for path in sorted(files):
            patterns.append((re.compile(rf"\b(?:cat|less|more|tee|head|tail)\b[^\n|>]*?{re.escape(path)}"
                                        r"(?![\w.])(?![^\n]*[|>])"),
                             f"prints {path}, a raw CP response"))
        if _holds_cp_token(wf, step, text):
            patterns.append((_XTRACE_RE, "turns on xtrace while it holds the CP token"))
        where = f"jobs.{step.job_id}.steps[{step.index}]"
        for pattern, what in patterns:
            for line, col, _ in wf.find(node, pattern):
                yield Hit(line, col, f"{where} {what}; let fleetgate talk to the CP (it redacts), "
                                     "or print only fields you chose")
        for line, col, _ in wf.find(node, _CP_CALL_RE):
            if not _CAPTURED_RE.search(_command_text(wf, line)):
                yield Hit(line, col, f"{where}: curl to the CP prints the raw response to the log; "
                                     "capture it with -o and print only chosen fields, or use fleetgate")


RULE = Rule(
    id="P2",
    severity=Severity.ERROR,
    title="raw-cp-response-in-log",
    why=("Raw CP bodies and their error text can carry secrets and tenant internals; only redacted "
         "output may reach logs."),
    check=check,
    production_only=True,
)
