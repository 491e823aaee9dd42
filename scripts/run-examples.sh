#!/usr/bin/env bash
# Serves examples/workflows with aiflowd in the foreground (Ctrl-C stops it and its jobs).
# Each example runs once when the daemon finds it; try, from another terminal:
#   .venv/bin/aiflowctl --config examples/aiflowd.yaml workflow list
#   .venv/bin/aiflowctl --config examples/aiflowd.yaml job logs python_demo job_1
# With --once, runs each example once with 'aiflowd run-once' instead, and exits.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [[ "${1:-}" == "--once" ]]; then
  failed=0
  for workflow in examples/workflows/*; do
    case "$(basename "$workflow")" in flink*) continue ;; esac  # Flink examples need a cluster
    echo "=== $workflow"
    .venv/bin/aiflowd run-once "$workflow" || failed=1
  done
  exit $failed
fi
exec .venv/bin/aiflowd --config examples/aiflowd.yaml
