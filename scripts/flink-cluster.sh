#!/usr/bin/env bash
# A standalone Flink session cluster from the distribution inside the apache-flink package,
# for the tests, the examples and local use.
#
#   scripts/flink-cluster.sh start    # prints the REST URL once a task slot is free
#   scripts/flink-cluster.sh stop     # stops only the JVMs this script started
#   scripts/flink-cluster.sh status
#
# Bound to 127.0.0.1, REST on $FLINK_REST_PORT (default 8081), 8 task slots, memory small
# enough for a 2-core machine running tests beside it (JobManager 768m, TaskManager 1280m). Its config, logs, pids, temporary
# files and savepoints live under $AIFLOWD_FLINK_WORKDIR (default: .flink in the repository).
# Needs the `flink` extra installed (scripts/setup.sh --flink) and Java 17.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
python="${AIFLOWD_PYTHON:-$repo/.venv/bin/python}"
workdir="${AIFLOWD_FLINK_WORKDIR:-$repo/.flink}"
port="${FLINK_REST_PORT:-8081}"
url="http://127.0.0.1:$port"

die() { echo "flink-cluster: $*" >&2; exit 1; }

flink_home() {
  "$python" -c 'import os, pyflink; print(os.path.dirname(os.path.abspath(pyflink.__file__)))' 2>/dev/null \
    || die "apache-flink is not installed in $python; run scripts/setup.sh --flink"
}

# Flink's scripts use $JAVA_HOME, else `java` on the PATH, and fail on a JDK newer than 17.
find_java17() {
  local candidate
  for candidate in "${JAVA_HOME:-}" "$(dirname "$(dirname "$(readlink -f "$(command -v java 2>/dev/null || echo /nonexistent)")")")" /usr/lib/jvm/*17*; do
    [[ -n "$candidate" && -x "$candidate/bin/java" ]] || continue
    if "$candidate/bin/java" -version 2>&1 | head -1 | grep -q '"17\.'; then
      echo "$candidate"
      return
    fi
  done
  die "Flink needs Java 17 and none was found (set JAVA_HOME to a JDK 17)"
}

slots_free() {
  "$python" - "$url" <<'EOF'
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1] + "/overview", timeout=1) as answer:
        print(json.load(answer).get("slots-available", 0))
except Exception:
    print(-1)
EOF
}

write_config() {
  local home="$1"
  mkdir -p "$workdir"/{conf,log,pid,tmp,savepoints}
  cp "$home"/conf/log4j*.properties "$home"/conf/logback*.xml "$workdir/conf/" 2>/dev/null || true
  "$python" - "$home/conf/config.yaml" "$workdir/conf/config.yaml" <<EOF
import sys, yaml
with open(sys.argv[1]) as fh:
    config = yaml.safe_load(fh)

def put(key, value):
    node = config
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value

settings = {
    "jobmanager.bind-host": "127.0.0.1",
    "jobmanager.rpc.address": "127.0.0.1",
    "taskmanager.bind-host": "127.0.0.1",
    "taskmanager.host": "127.0.0.1",
    "rest.address": "127.0.0.1",
    "rest.bind-address": "127.0.0.1",
    "rest.port": $port,
    "taskmanager.numberOfTaskSlots": 8,
    "parallelism.default": 1,
    "jobmanager.memory.process.size": "768m",
    "jobmanager.memory.jvm-metaspace.size": "256m",
    "jobmanager.memory.jvm-overhead.min": "64m",
    "jobmanager.memory.off-heap.size": "32m",
    "taskmanager.memory.process.size": "1280m",
    # Every job's classes load in a class loader of their own; 160m of metaspace ran out
    # after about 30 jobs (OutOfMemoryError: Metaspace), a test run submits more.
    "taskmanager.memory.jvm-metaspace.size": "384m",
    "taskmanager.memory.jvm-overhead.min": "64m",
    "taskmanager.memory.framework.heap.size": "64m",
    "taskmanager.memory.framework.off-heap.size": "48m",
    # Python UDF workers talk to the TaskManager over gRPC buffers in direct memory; without
    # room for them a few jobs in, tasks fail with "Cannot reserve ... direct buffer memory".
    "taskmanager.memory.task.off-heap.size": "192m",
    "taskmanager.memory.network.min": "32m",
    "taskmanager.memory.managed.fraction": 0.25,
    # Without it, batch jobs fail on direct memory or hang at this size.
    "taskmanager.memory.framework.off-heap.batch-shuffle.size": "16m",
    "cluster.registration.error-delay": 1000,
    # GET /jobs/<id> is cached this long; 3 s by default would slow every status poll.
    "web.refresh-interval": 500,
    "python.executable": "$python",
    "python.client.executable": "$python",
    "execution.checkpointing.savepoint-dir": "file://$workdir/savepoints",
    "io.tmp.dirs": "$workdir/tmp",
    "web.tmpdir": "$workdir/tmp",
    "web.upload.dir": "$workdir/tmp",
}
for key, value in settings.items():
    put(key, value)
# Keep the shipped JDK 17 --add-opens list; C1 only: the JVMs start faster and these jobs are small.
opts = config["env"]["java"]["opts"]
opts["all"] = opts.get("all", "") + " -XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
with open(sys.argv[2], "w") as fh:
    yaml.safe_dump(config, fh, sort_keys=False)
EOF
}

daemons() {
  local home="$1" action="$2"
  local java_home; java_home="$(find_java17)"
  export JAVA_HOME="$java_home" FLINK_CONF_DIR="$workdir/conf" FLINK_LOG_DIR="$workdir/log" \
         FLINK_PID_DIR="$workdir/pid" FLINK_IDENT_STRING=aiflowd
  "$home/bin/jobmanager.sh" "$action" >/dev/null
  "$home/bin/taskmanager.sh" "$action" >/dev/null
}

case "${1:-}" in
  start)
    home="$(flink_home)"
    if [[ "$(slots_free)" != "-1" ]]; then
      echo "$url"  # already running
      exit 0
    fi
    write_config "$home"
    daemons "$home" start
    for _ in $(seq 1 600); do
      [[ "$(slots_free)" -gt 0 ]] && { echo "$url"; exit 0; }
      sleep 0.1
    done
    die "the cluster did not offer a task slot within 60 s; see $workdir/log"
    ;;
  stop)
    for pidfile in "$workdir"/pid/*.pid; do
      [[ -f "$pidfile" ]] || continue
      while read -r pid; do
        [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true
      done < "$pidfile"
    done
    for _ in $(seq 1 100); do
      alive=0
      for pidfile in "$workdir"/pid/*.pid; do
        [[ -f "$pidfile" ]] || continue
        while read -r pid; do
          [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && alive=1
        done < "$pidfile"
      done
      [[ $alive == 0 ]] && break
      sleep 0.1
    done
    for pidfile in "$workdir"/pid/*.pid; do
      [[ -f "$pidfile" ]] || continue
      while read -r pid; do [[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null || true; done < "$pidfile"
      rm -f "$pidfile"
    done
    ;;
  status)
    free="$(slots_free)"
    if [[ "$free" == "-1" ]]; then echo "not running ($url)"; exit 1; fi
    echo "running at $url, $free task slots free"
    ;;
  *)
    echo "usage: scripts/flink-cluster.sh start|stop|status" >&2
    exit 2
    ;;
esac
