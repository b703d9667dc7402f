#!/usr/bin/env bash
# Creates tests/compat/iam/.venv with the pinned requirements (idempotent).
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/../venv.sh" "$(dirname "${BASH_SOURCE[0]}")"
