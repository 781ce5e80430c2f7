#!/usr/bin/env bash
# Set up (see setup.sh) and run the server on the bundled voice: http://127.0.0.1:8765/
# Extra arguments go to `streamvox serve` (e.g. --host 0.0.0.0 --port 9000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/streamvox serve "$@"
