"""Write a corpus of realistic workflow files for the lint-workflows benchmark (no network).

The files are built from the shapes real repositories use: CI with a matrix, lint and test jobs,
release and container publishing, scheduled jobs, PR checks, docs, and a few production deploys
through fleetgate. Each file is varied (names, versions, scripts, step counts) by a seeded RNG so
the corpus is the same on every run.

    python bench/lint/make_corpus.py OUT_DIR [--count 80] [--seed 4]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

LANGS = {
    "python": ("actions/setup-python@v5", "python-version", ["3.10", "3.11", "3.12", "3.13"],
               ["pip install -e '.[test]'", "ruff check .", "mypy src", "pytest -q --maxfail=1 --durations=10"]),
    "node": ("actions/setup-node@v4", "node-version", ["18", "20", "22"],
             ["npm ci", "npm run lint", "npm run build --if-present", "npm test -- --ci --reporters=default"]),
    "go": ("actions/setup-go@v5", "go-version", ["1.22", "1.23"],
           ["go mod download", "go vet ./...", "go build ./...", "go test -race -count=1 ./..."]),
    "rust": ("dtolnay/rust-toolchain@stable", "toolchain", ["stable", "beta"],
             ["cargo fetch", "cargo clippy --all-targets -- -D warnings", "cargo build --locked",
              "cargo test --locked"]),
}


def _script(rng: random.Random, commands: list[str]) -> str:
    lines = ["set -euo pipefail"]
    for cmd in commands:
        if rng.random() < 0.3:
            lines.append(f'echo "::group::{cmd.split()[0]}"')
        lines.append(cmd)
    if rng.random() < 0.4:
        lines += ['if [ -n "${EXTRA_FLAGS:-}" ]; then', '  echo "extra flags: $EXTRA_FLAGS"', "fi"]
    return "\n".join("          " + line for line in lines)


def ci_workflow(rng: random.Random, i: int) -> str:
    lang = rng.choice(sorted(LANGS))
    setup, key, versions, commands = LANGS[lang]
    chosen = sorted(rng.sample(versions, k=min(len(versions), rng.randint(1, 3))))
    paths = "\n".join(f"      - '{p}'" for p in rng.sample(["src/**", "tests/**", "pyproject.toml", "package.json",
                                                           "go.mod", "Cargo.toml", "Makefile"], 3))
    jobs = [f"""  lint:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: {setup}
        with:
          {key}: "{chosen[-1]}"
      - name: Lint
        run: |
{_script(rng, commands[:2])}
""", f"""  test:
    needs: lint
    runs-on: ubuntu-latest
    strategy:
      fail-fast: false
      matrix:
        {key}: [{", ".join(f'"{v}"' for v in chosen)}]
        os: [ubuntu-latest]
    env:
      CI: "true"
      LOG_LEVEL: {rng.choice(["info", "debug", "warning"])}
    steps:
      - uses: actions/checkout@v4
        with:
          fetch-depth: {rng.choice([1, 0, 50])}
      - uses: {setup}
        with:
          {key}: ${{{{ matrix.{key} }}}}
      - uses: actions/cache@v4
        with:
          path: |
            ~/.cache
            .venv
          key: {lang}-${{{{ runner.os }}}}-${{{{ hashFiles('**/*.lock') }}}}
          restore-keys: |
            {lang}-${{{{ runner.os }}}}-
      - name: Test
        run: |
{_script(rng, commands[2:])}
      - name: Upload results
        if: always()
        uses: actions/upload-artifact@v4
        with:
          name: results-${{{{ matrix.{key} }}}}
          path: reports/
          retention-days: {rng.choice([3, 7, 14])}
"""]
    if rng.random() < 0.5:
        jobs.append(f"""  coverage:
    needs: test
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/download-artifact@v4
        with:
          pattern: results-*
          merge-multiple: true
      - name: Report
        run: |
          python3 - <<'PY'
          import json, pathlib
          total = sum(1 for _ in pathlib.Path("reports").glob("*.xml"))
          print(json.dumps({{"reports": total, "build": {i}}}))
          PY
""")
    return f"""name: ci-{lang}-{i}
on:
  push:
    branches: [main, "release/**"]
    paths:
{paths}
  pull_request:
    branches: [main]
env:
  FORCE_COLOR: "1"
jobs:
{"".join(jobs)}"""


def release_workflow(rng: random.Random, i: int) -> str:
    image = rng.choice(["api", "worker", "web", "scheduler", "gateway"])
    return f"""name: release-{image}-{i}
on:
  push:
    tags: ["v*"]
  workflow_dispatch:
env:
  REGISTRY: registry.example.org
  IMAGE: platform/{image}
jobs:
  build:
    runs-on: ubuntu-latest
    outputs:
      digest: ${{{{ steps.push.outputs.digest }}}}
    steps:
      - uses: actions/checkout@v4
      - uses: docker/setup-buildx-action@v3
      - uses: docker/login-action@v3
        with:
          registry: ${{{{ env.REGISTRY }}}}
          username: ${{{{ vars.REGISTRY_USER }}}}
          password: ${{{{ secrets.REGISTRY_PASSWORD }}}}
      - id: meta
        uses: docker/metadata-action@v5
        with:
          images: ${{{{ env.REGISTRY }}}}/${{{{ env.IMAGE }}}}
          tags: |
            type=semver,pattern={{{{version}}}}
            type=sha,prefix=staging-,format=short
      - id: push
        uses: docker/build-push-action@v6
        with:
          context: .
          push: true
          tags: ${{{{ steps.meta.outputs.tags }}}}
          labels: ${{{{ steps.meta.outputs.labels }}}}
          cache-from: type=gha
          cache-to: type=gha,mode=max
  notes:
    needs: build
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
        with:
          fetch-depth: 0
      - name: Changelog
        run: |
          set -euo pipefail
          prev=$(git describe --tags --abbrev=0 HEAD^ 2>/dev/null || true)
          git log --pretty='- %s (%h)' "${{prev:+$prev..}}HEAD" > notes.md
          wc -l notes.md
          echo "digest ${{{{ needs.build.outputs.digest }}}}"
"""


def scheduled_workflow(rng: random.Random, i: int) -> str:
    task = rng.choice(["nightly-e2e", "dependency-audit", "stale-branches", "backup-check", "link-check"])
    minute, hour = rng.randint(0, 59), rng.randint(0, 23)
    return f"""name: {task}-{i}
on:
  schedule:
    - cron: "{minute} {hour} * * *"
  workflow_dispatch:
jobs:
  run:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.12"
      - name: {task}
        env:
          API_TOKEN: ${{{{ secrets.TOOLING_TOKEN }}}}
          TARGET: {rng.choice(["staging", "tools", "docs"])}
        run: |
          set -euo pipefail
          python -m pip install --quiet requests
          python scripts/{task.replace("-", "_")}.py --target "$TARGET" --report report.json
          test -s report.json
      - if: failure()
        name: Notify
        run: echo "{task} failed on ${{{{ github.sha }}}}"
"""


def pr_workflow(rng: random.Random, i: int) -> str:
    return f"""name: pr-hygiene-{i}
on:
  pull_request:
    types: [opened, synchronize, reopened, edited]
jobs:
  title:
    runs-on: ubuntu-latest
    steps:
      - name: Conventional title
        env:
          TITLE: ${{{{ github.event.pull_request.title }}}}
        run: |
          set -euo pipefail
          if ! printf '%s' "$TITLE" | grep -Eq '^(feat|fix|docs|chore|refactor|test)(\\(.+\\))?: '; then
            echo "PR title must follow Conventional Commits" >&2
            exit 1
          fi
  size:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
        with:
          fetch-depth: 0
      - name: Diff size
        run: |
          set -euo pipefail
          base=${{{{ github.event.pull_request.base.sha }}}}
          changed=$(git diff --numstat "$base"...HEAD | awk '{{s+=$1+$2}} END {{print s+0}}')
          echo "changed lines: $changed"
          [ "$changed" -lt {rng.choice([800, 1000, 1500])} ]
"""


def deploy_workflow(rng: random.Random, i: int) -> str:
    return f"""name: deploy-production-{i}
on:
  push:
    branches: [main]
  workflow_dispatch:
env:
  PROD_AUTO_DEPLOY_DISABLED: ${{{{ vars.PROD_AUTO_DEPLOY_DISABLED }}}}
  PROD_AUTO_DEPLOY_REQUIRED_CONTEXTS: ${{{{ vars.PROD_AUTO_DEPLOY_REQUIRED_CONTEXTS }}}}
jobs:
  deploy:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
      - run: pip install .
      - name: Deploy to production (gated, canaried, verified)
        env:
          GITEA_TOKEN: ${{{{ secrets.FLEETGATE_GITEA_TOKEN }}}}
          CP_ADMIN_API_TOKEN: ${{{{ secrets.CP_ADMIN_API_TOKEN }}}}
          PROD_AUTO_DEPLOY_BATCH_SIZE: "{rng.choice([2, 3, 5])}"
        run: fleetgate deploy-production --json > result.json
      - if: always()
        name: Summary
        run: jq -r '.exit_code' result.json
"""


KINDS = [(ci_workflow, 40), (release_workflow, 14), (scheduled_workflow, 12), (pr_workflow, 10),
         (deploy_workflow, 4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=80)
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.yml"):
        old.unlink()
    plan = [kind for kind, weight in KINDS for _ in range(weight)]
    total_lines = 0
    for i in range(args.count):
        kind = plan[i % len(plan)]
        text = kind(rng, i)
        total_lines += text.count("\n")
        (args.out / f"{i:03d}-{kind.__name__.removesuffix('_workflow')}.yml").write_text(text)
    print(f"wrote {args.count} workflows, {total_lines} lines, to {args.out}")


if __name__ == "__main__":
    main()
