#!/usr/bin/env bash
# Time from `gatehouse up` (the demo) to ready, and the stack's memory at rest. See bench.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python3 bench/up/bench.py "$@"
