"""Every `dagger call …` line in README (and in the workflows) names a registered function and its flags.

The registration is the SDK's own (tests/test_dagger_module.py), so a typo in a function or flag name
in the docs fails here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from test_dagger_module import EXPECTED_FUNCTIONS, Func, registration

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
SECTION = README.split("## Run it with Dagger", 1)[1].split("\n## ", 1)[0]

# `dagger` options that may come before `call`/the function and take a value.
GLOBAL_WITH_VALUE = {"-m", "--mod", "--progress", "-o", "--output", "--workdir"}
GLOBAL_FLAGS = {
    "-s",
    "--silent",
    "-q",
    "--quiet",
    "-v",
    "-vv",
    "-vvv",
    "--debug",
    "--json",
    "-i",
    "--interactive",
    "-E",
    "--no-exit",
    "-c",
    "--cloud",
}
HELP = {"--help", "-h"}


def code_blocks(markdown: str) -> str:
    """The contents of the fenced code blocks: prose mentions like `dagger call …` are not commands."""
    return "\n".join(re.findall(r"^```[a-z]*\n(.*?)^```", markdown, re.M | re.S))


def dagger_calls(text: str) -> list[str]:
    """Command lines starting with `dagger … call`, continuation lines joined, `$VAR`s kept."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [
        m.group(0).strip()
        for m in re.finditer(r"(?m)(?<![\w-])dagger(?:\s+-\S+(?:\s+[^-\s]\S*)?)*\s+call\b[^\n`|;&]*", joined)
    ]


def check_call(line: str) -> tuple[str, list[str]]:
    """The function a `dagger call` line invokes and the flags it passes; fails on anything unregistered."""
    words = shlex.split(line)
    words = words[words.index("call") + 1 :]
    while words and words[0].startswith("-"):
        flag = words.pop(0)
        if flag in HELP:
            return "", []
        assert flag.split("=")[0] in GLOBAL_WITH_VALUE | GLOBAL_FLAGS, f"unknown dagger option {flag!r} in {line!r}"
        if flag in GLOBAL_WITH_VALUE:
            words.pop(0)
    assert words, f"no function in {line!r}"
    name = words.pop(0)
    functions = registration().functions
    assert name in functions, f"{line!r}: no function {name!r}; registered: {sorted(functions)}"
    fn: Func = functions[name]
    used = []
    while words and words[0].startswith("-"):
        word = words.pop(0)
        if word in HELP:
            break
        flag, has_value = word.removeprefix("--"), "=" in word
        flag = flag.split("=")[0]
        assert word.startswith("--") and flag in fn.args, (
            f"{line!r}: {name} has no flag --{flag}; it has {sorted('--' + a for a in fn.args)}"
        )
        used.append(flag)
        if fn.args[flag].kind != "BOOLEAN_KIND" and not has_value:
            assert words, f"{line!r}: --{flag} needs a value"
            words.pop(0)
    # What follows (e.g. `export --path …` on a Container) is the core API's, not ours.
    return name, used


def test_readme_section_has_dagger_call_lines_for_the_documented_workflow() -> None:
    calls = dagger_calls(code_blocks(SECTION))
    names = {check_call(c)[0] for c in calls}
    assert {"deploy-production", "self-test", "build", "publish"} <= names
    assert "dagger functions" in SECTION
    assert "_EXPERIMENTAL_DAGGER_RUNNER_HOST" in SECTION
    assert re.search(r"dagger call deploy-production --help", SECTION)


@pytest.mark.parametrize("line", dagger_calls(code_blocks(README)))
def test_every_readme_dagger_call_names_a_registered_function_and_its_flags(line: str) -> None:
    check_call(line)


def test_readme_lists_exactly_the_registered_functions() -> None:
    listed = set(re.findall(r"^\| `([a-z-]+)` \|", SECTION, re.M))
    assert listed == EXPECTED_FUNCTIONS == set(registration().functions)


@pytest.mark.parametrize(
    "line",
    [
        "dagger call deploy-production --sha abc --dry-rum",
        "dagger call deploy-prodution --sha abc",
        "dagger call publish --sha abc --imag r.example/app --registry-password env://P",
        "dagger -m . call self-test --sourc .",
    ],
)
def test_a_typo_in_a_function_or_flag_fails(line: str) -> None:
    with pytest.raises(AssertionError):
        check_call(line)


def test_flags_and_values_are_told_apart_by_type() -> None:
    name, used = check_call("dagger call deploy-production --dry-run --sandbox --sha $SHA --batch-size=5")
    assert name == "deploy-production" and used == ["dry-run", "sandbox", "sha", "batch-size"]
    assert check_call("dagger call build --sha 0123 export --path ./image.tar") == ("build", ["sha"])
