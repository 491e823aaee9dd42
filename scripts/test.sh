#!/usr/bin/env bash
# Runs the whole test suite in the project's own virtualenv (created on first use),
# Flink tests included: it installs the flink extra and starts the project's Flink
# cluster (scripts/flink-cluster.sh, on $FLINK_REST_PORT or $FLINK_PORT_BASE if set) if
# this work folder's does not run, and stops what it started.
# Extra arguments go to pytest, e.g. scripts/test.sh -k loader -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --flink
.venv/bin/ruff check .
.venv/bin/mypy  # files and settings in pyproject.toml
# The cluster's ports come from FLINK_REST_PORT / FLINK_PORT_BASE (see the script); the
# tests and the daemons they start read its URL from AIFLOWD_FLINK_REST_URL.
AIFLOWD_FLINK_REST_URL="$(scripts/flink-cluster.sh url)"
export AIFLOWD_FLINK_REST_URL
started_cluster=0
stop_cluster() { if [[ $started_cluster == 1 ]]; then scripts/flink-cluster.sh stop; fi; }
trap stop_cluster EXIT
# status fails for a cluster this work folder did not start on the port: start then says so.
if ! scripts/flink-cluster.sh status >/dev/null 2>&1; then
  started_cluster=1
  scripts/flink-cluster.sh start
fi
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
  echo "test: pytest collected no tests; that is a failure, not a pass" >&2
  exit 1
fi
exit $status
