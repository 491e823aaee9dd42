#!/usr/bin/env bash
# Runs every example workflow once with 'aiflowd run-once', in the project's virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
failed=0
for workflow in examples/workflows/*; do
  case "$(basename "$workflow")" in
    flink*|README*) continue ;;  # the Flink examples need a cluster: see the README
  esac
  echo "=== $workflow"
  .venv/bin/aiflowd run-once "$workflow" || failed=1
done
exit $failed
