#!/usr/bin/env bash
# Set up the host, then serve the deploy platform: logs pages at /logs/,
# the API at /api/, deployed domains on a private nginx at 127.0.0.1:8080.
# Extra arguments go to `dna serve` (see `.venv/bin/dna serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/dna serve "$@"
