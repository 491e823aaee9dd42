#!/usr/bin/env bash
# Serves examples/workflows with aiflowd in the foreground (Ctrl-C stops it and its jobs),
# with the project's Flink cluster for the Flink examples (stopped again on exit).
# Without Java 17 the Flink examples are skipped (one line says so) and the others served.
# Each example runs once when the daemon finds it (periodic_demo then every minute); try,
# from another terminal:
#   .venv/bin/aiflowctl --config examples/aiflowd.yaml workflow list
#   .venv/bin/aiflowctl --config examples/aiflowd.yaml job logs python_demo job_1
#   .venv/bin/aiflowctl --config examples/aiflowd.yaml job logs event_demo deploy
#   .venv/bin/aiflowctl --config examples/aiflowd.yaml event send model_updated v1
# With --once, runs each example once with 'aiflowd run-once' instead, and exits.
# With --no-flink, skips the Flink examples even with Java 17 (and installs no Flink).
# The Flink examples write below the state folder (.aiflowd/), in their execution's folder.
set -euo pipefail
cd "$(dirname "$0")/.."
once=0
no_flink=0
for arg in "$@"; do
  case "$arg" in
    --once) once=1 ;;
    --no-flink) no_flink=1 ;;
    *) echo "usage: scripts/run-examples.sh [--once] [--no-flink]" >&2; exit 2 ;;
  esac
done

# Where Flink looks for Java (as scripts/flink-cluster.sh does): $JAVA_HOME, `java` on the
# PATH, /usr/lib/jvm/*17*; it needs 17.
has_java17() {
  local candidate
  for candidate in "${JAVA_HOME:-}" "$(dirname "$(dirname "$(readlink -f "$(command -v java 2>/dev/null || echo /nonexistent)")")")" /usr/lib/jvm/*17*; do
    [[ -n "$candidate" && -x "$candidate/bin/java" ]] || continue
    "$candidate/bin/java" -version 2>&1 | head -1 | grep -q '"17\.' && return 0
  done
  return 1
}

config=examples/aiflowd.yaml
skipped="$(cd examples/workflows && echo flink*)"
if [[ $no_flink == 1 ]]; then
  echo "run-examples: --no-flink: the Flink examples ($skipped) are skipped; the others run" >&2
elif ! has_java17; then
  no_flink=1
  echo "run-examples: no Java 17 (\$JAVA_HOME, java on the PATH, /usr/lib/jvm/*17*), so the Flink examples ($skipped) are skipped; the others run" >&2
fi
if [[ $no_flink == 0 ]]; then
  scripts/setup.sh --flink
else
  scripts/setup.sh
  # The same state (and control socket) as examples/aiflowd.yaml, serving copies of the others,
  # made afresh at each start: the daemon reads no link that leaves its watched folder.
  served=.aiflowd/examples-without-flink
  rm -rf "$served" && mkdir -p "$served/workflows"
  for workflow in examples/workflows/*; do
    [[ "$(basename "$workflow")" == flink* ]] || cp -R "$workflow" "$served/workflows/"
  done
  printf 'workflows_dir: workflows\nstate_dir: ..\nstop_grace_period: 5s\n' > "$served/aiflowd.yaml"
  config="$served/aiflowd.yaml"
fi

started_cluster=0
stop_cluster() { if [[ $started_cluster == 1 ]]; then scripts/flink-cluster.sh stop; fi; }
trap stop_cluster EXIT
if [[ $no_flink == 0 ]]; then
  # The daemon and run-once take the cluster's URL from AIFLOWD_FLINK_REST_URL (examples/aiflowd.yaml
  # leaves flink.rest_url to it): the cluster of FLINK_REST_PORT / FLINK_PORT_BASE, if set.
  AIFLOWD_FLINK_REST_URL="$(scripts/flink-cluster.sh url)"
  export AIFLOWD_FLINK_REST_URL
  if ! scripts/flink-cluster.sh status >/dev/null 2>&1; then
    started_cluster=1
    scripts/flink-cluster.sh start >/dev/null
  fi
fi
if [[ $once == 1 ]]; then
  failed=0
  for workflow in examples/workflows/*; do
    name="$(basename "$workflow")"
    [[ "$name" == flink_streaming ]] && continue  # waits for events: see the daemon
    [[ $no_flink == 1 && "$name" == flink* ]] && continue
    echo "=== $workflow"
    .venv/bin/aiflowd run-once "$workflow" || failed=1
  done
  exit $failed
fi
.venv/bin/aiflowd --config "$config"
