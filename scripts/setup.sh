#!/usr/bin/env bash
# Creates .venv (Python 3.11+) and installs aiflowd into it with its test tools.
# Usage: scripts/setup.sh [--flink]   (--flink adds the apache-flink extra, ~850 MB)
# Idempotent: re-running with an unchanged pyproject.toml installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="test"
if [[ "${1:-}" == "--flink" || "${AIFLOWD_WITH_FLINK:-0}" == "1" ]]; then
  extras="test,flink"
fi

python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      python="$candidate"
      break
    fi
  done
fi
if [[ -z "$python" ]]; then
  echo "setup: aiflowd needs Python 3.11 or newer on the PATH (or PYTHON=/path/to/python)" >&2
  exit 1
fi

if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv .venv
fi

stamp=".venv/.aiflowd-installed"
want="$(cat pyproject.toml | sha256sum | cut -c1-16) $extras"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$extras]"
echo "$want" > "$stamp"
