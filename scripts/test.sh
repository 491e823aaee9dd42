#!/usr/bin/env bash
# Runs the whole test suite in the project's own virtualenv (created on first use).
# Extra arguments go to pytest, e.g. scripts/test.sh -k loader -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check aiflowd tests benchmarks
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
  echo "test: pytest collected no tests; that is a failure, not a pass" >&2
  exit 1
fi
exit $status
