#!/usr/bin/env bash
# Serves examples/workflows with aiflowd in the foreground (Ctrl-C stops it and its jobs),
# with the project's Flink cluster for the Flink examples (stopped again on exit).
# Each example runs once when the daemon finds it; try, from another terminal:
#   .venv/bin/aiflowctl --config examples/aiflowd.yaml workflow list
#   .venv/bin/aiflowctl --config examples/aiflowd.yaml job logs python_demo job_1
#   .venv/bin/aiflowctl --config examples/aiflowd.yaml event send model_updated v1
# With --once, runs each example once with 'aiflowd run-once' instead, and exits.
# The Flink examples write below the state folder (.aiflowd/), in their execution's folder.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --flink
# The daemon and run-once take the cluster's URL from AIFLOWD_FLINK_REST_URL (examples/aiflowd.yaml
# leaves flink.rest_url to it): the cluster of FLINK_REST_PORT / FLINK_PORT_BASE, if set.
AIFLOWD_FLINK_REST_URL="$(scripts/flink-cluster.sh url)"
export AIFLOWD_FLINK_REST_URL
started_cluster=0
stop_cluster() { if [[ $started_cluster == 1 ]]; then scripts/flink-cluster.sh stop; fi; }
trap stop_cluster EXIT
if ! scripts/flink-cluster.sh status >/dev/null 2>&1; then
  started_cluster=1
  scripts/flink-cluster.sh start >/dev/null
fi
if [[ "${1:-}" == "--once" ]]; then
  failed=0
  for workflow in examples/workflows/*; do
    [[ "$(basename "$workflow")" == flink_streaming ]] && continue  # waits for events: see the daemon
    echo "=== $workflow"
    .venv/bin/aiflowd run-once "$workflow" || failed=1
  done
  exit $failed
fi
.venv/bin/aiflowd --config examples/aiflowd.yaml
