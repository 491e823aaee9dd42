#!/usr/bin/env bash
# Creates .venv (Python 3.11+) and installs aiflowd into it with its test tools.
# Usage: scripts/setup.sh [--flink]   (--flink adds the apache-flink extra, ~850 MB)
# Idempotent: re-running with an unchanged pyproject.toml installs nothing. A .venv made
# with an older Python (or whose Python no longer runs) is rebuilt, and it says so.
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

if [[ -e .venv || -L .venv ]]; then
  if ! version="$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)"; then
    echo "setup: .venv has no working Python (its interpreter is gone or broken): rebuilding it with $python" >&2
    rm -rf .venv
  elif ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup: .venv was made with Python $version and aiflowd needs 3.11 or newer: rebuilding it with $python" >&2
    rm -rf .venv
  fi
fi
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv with $("$python" -c 'import sys; print(sys.executable, sys.version.split()[0])')" >&2
  "$python" -m venv .venv
fi

stamp=".venv/.aiflowd-installed"
hash="$(sha256sum < pyproject.toml | cut -c1-16)"
if [[ -f "$stamp" ]]; then
  read -r have_hash have_extras < "$stamp" || true
  # Done already: the same pyproject.toml, with these extras or more (flink kept once installed).
  if [[ "$have_hash" == "$hash" && ( "$have_extras" == "$extras" || "$have_extras" == "test,flink" ) ]]; then
    exit 0
  fi
fi
if [[ "$extras" == *flink* ]]; then
  size="about 900 MB, most of it apache-flink"
else
  size="about 80 MB"
fi
echo "setup: installing aiflowd[$extras] into .venv ($size; pip shows its progress)" >&2
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --disable-pip-version-check -e ".[$extras]"
echo "$hash $extras" > "$stamp"
