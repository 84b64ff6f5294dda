"""In-process timing of `lint_files` (read, compose, every rule, suppressions) on one corpus,
with libyaml's composer and with PyYAML's pure-Python one: the part of the run the loader decides.

    python bench/lint/inprocess.py CORPUS_DIR [--repeat 7]     prints the min of each
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

import yaml

from pipelines.lint.engine import collect_files, lint_files


def best_of(files: list[Path], loader: object, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.disable()  # as the CLI does while linting
        start = time.perf_counter()
        lint_files(files, loader=loader)
        best = min(best, time.perf_counter() - start)
        gc.enable()
        gc.collect()
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    files = collect_files([args.corpus], allow_empty=False)
    fast = best_of(files, yaml.CSafeLoader, args.repeat)
    pure = best_of(files, yaml.SafeLoader, max(3, args.repeat // 2))
    print(f"in-process lint_files, {len(files)} files: libyaml {fast * 1e3:.1f} ms | "
          f"pure-python {pure * 1e3:.1f} ms | pure/libyaml {pure / fast:.1f}x")


if __name__ == "__main__":
    main()
