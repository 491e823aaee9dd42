#!/usr/bin/env bash
# Runs the whole test suite in the project's own virtualenv (created on first use),
# Flink tests included: it installs the flink extra and starts the project's Flink
# cluster (scripts/flink-cluster.sh) if none runs, and stops what it started.
# Extra arguments go to pytest, e.g. scripts/test.sh -k loader -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --flink
.venv/bin/ruff check .
started_cluster=0
if ! scripts/flink-cluster.sh status >/dev/null 2>&1; then
  scripts/flink-cluster.sh start
  started_cluster=1
fi
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [[ $started_cluster == 1 ]]; then
  scripts/flink-cluster.sh stop
fi
if [[ $status -eq 5 ]]; then
  echo "test: pytest collected no tests; that is a failure, not a pass" >&2
  exit 1
fi
exit $status
