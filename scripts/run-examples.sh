#!/usr/bin/env bash
# Serves examples/workflows with aiflowd in the foreground (Ctrl-C stops it and its jobs),
# with the project's Flink cluster for the Flink examples (stopped again on exit).
# Each example runs once when the daemon finds it; try, from another terminal:
#   .venv/bin/aiflowctl --config examples/aiflowd.yaml workflow list
#   .venv/bin/aiflowctl --config examples/aiflowd.yaml job logs python_demo job_1
#   .venv/bin/aiflowctl --config examples/aiflowd.yaml event send model_updated v1
# With --once, runs each example once with 'aiflowd run-once' instead, and exits.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --flink
started_cluster=0
if ! scripts/flink-cluster.sh status >/dev/null 2>&1; then
  scripts/flink-cluster.sh start >/dev/null
  started_cluster=1
fi
stop_cluster() { if [[ $started_cluster == 1 ]]; then scripts/flink-cluster.sh stop; fi; }
trap stop_cluster EXIT
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
