#!/usr/bin/env bash
# Set up the host, then run the whole test suite against the real Docker
# daemon, a private nginx and a loopback Pebble. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pytest -ra "$@"
