#!/usr/bin/env bash
# Creates tests/compat/secrets/.venv with the pinned requirements (idempotent).
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/../venv.sh" "$(dirname "${BASH_SOURCE[0]}")"
