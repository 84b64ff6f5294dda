"""`fleetgate lint-workflows` forced onto PyYAML's pure-Python loader, for the benchmark only.

Same process shape as the console script; the only difference is that libyaml's composer is
hidden before the linter picks its loader.
"""

from __future__ import annotations

import yaml

yaml.CSafeLoader = yaml.SafeLoader  # type: ignore[misc]  # the linter now composes in pure Python

from pipelines.cli import main  # noqa: E402  (must come after the loader swap)

if __name__ == "__main__":
    main()
