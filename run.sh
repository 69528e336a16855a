#!/usr/bin/env bash
# ./run.sh demo [ARGS]   runs the embedded default demo
# ./run.sh test [ARGS]   runs ruff, then the test suite (ARGS go to pytest: test files, -k, -x, ...)
# Each creates .venv (Python 3.11, CPU torch pinned by constraints.txt) and installs the package on first use.
set -euo pipefail
cd "$(dirname "$0")"
venv="${RIFORMER_VENV:-.venv}"
stamp="$venv/.installed-$(cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "setting up $venv (first run only; log in $venv/install.log)" >&2
  python3 -m venv "$venv"
  if ! "$venv/bin/python" -m pip install -c constraints.txt -e ".[dev]" > "$venv/install.log" 2>&1; then
    tail -n 40 "$venv/install.log" >&2
    exit 1
  fi
  touch "$stamp"
fi
cmd="${1:-}"; shift || true
case "$cmd" in
  demo) DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}" exec "$venv/bin/riformer-demo" "$@" ;;  # the demo runs on CPU: no DeepSpeed probe warning
  test) "$venv/bin/ruff" check src tests && exec "$venv/bin/python" -m pytest -q "$@" ;;  # no paths: testpaths (tests/)
  *) echo "usage: ./run.sh demo|test [args]" >&2; exit 2 ;;
esac
