#!/usr/bin/env bash
# Issue 16, scenario 8 (graceful shutdown), long form; see shutdown.py for what it measures.
set -euo pipefail
exec python3 "$(dirname "$0")/shutdown.py" "$@"
