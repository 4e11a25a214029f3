#!/usr/bin/env bash
# Set up the host, then run the whole test suite against the real Docker
# daemon, private nginx instances and a loopback Pebble, and then the tox
# envs: one per web framework, one with none, and mypy --strict.
# Extra arguments go to the first pytest run.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1

.venv/bin/pytest -ra "$@"
status=$?
if [ "$status" -ne 0 ]; then
    exit "$status"
fi
.venv/bin/tox run -e core,flask,falcon,bottle,mypy
