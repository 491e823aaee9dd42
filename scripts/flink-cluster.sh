#!/usr/bin/env bash
# A standalone Flink session cluster from the distribution inside the apache-flink package,
# for the tests, the examples and local use; one per work folder, safe beside other clusters.
#
#   scripts/flink-cluster.sh start    # prints the REST URL once a task slot is free
#   scripts/flink-cluster.sh stop     # stops only the JVMs this work folder's start started
#   scripts/flink-cluster.sh status   # exit 0 running, 1 broken or port taken by another process, 3 not running
#   scripts/flink-cluster.sh url      # prints the REST URL these settings give
#
# Bound to 127.0.0.1; every port is set, from a block of seven starting at $FLINK_PORT_BASE
# (default $FLINK_REST_PORT, else 8081): REST, JobManager RPC, blob server, TaskManager
# RPC and data, metrics queries (each also settable alone; see scripts/flink_cluster.py).
# 8 task slots, memory small enough for a 2-core machine running tests beside it
# (JobManager 768m, TaskManager 1280m). Its config, logs, pid file, temporary files and
# savepoints live under $AIFLOWD_FLINK_WORKDIR (default: .flink in the repository).
# Needs the `flink` extra installed (scripts/setup.sh --flink) and Java 17.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${AIFLOWD_PYTHON:-$repo/.venv/bin/python}"
exec "$python" "$repo/scripts/flink_cluster.py" "$@"
