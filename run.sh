#!/usr/bin/env bash
# ./run.sh demo [ARGS]   runs the embedded default demo
# ./run.sh test [ARGS]   runs the test suite
# Each creates .venv (Python 3.11, CPU torch pinned by constraints.txt) and installs the package on first use.
set -euo pipefail
cd "$(dirname "$0")"
venv="${RIFORMER_VENV:-.venv}"
stamp="$venv/.installed-$(cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -c constraints.txt -e ".[dev]"
  touch "$stamp"
fi
cmd="${1:-}"; shift || true
case "$cmd" in
  demo) exec "$venv/bin/python" scripts/demo.py "$@" ;;
  test) exec "$venv/bin/python" -m pytest -q tests "$@" ;;
  *) echo "usage: ./run.sh demo|test [args]" >&2; exit 2 ;;
esac
