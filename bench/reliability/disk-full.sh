#!/usr/bin/env bash
# Issue 16, scenario 7 (disk full), long form; see disk-full.py for what it measures.
set -euo pipefail
exec python3 "$(dirname "$0")/disk-full.py" "$@"
