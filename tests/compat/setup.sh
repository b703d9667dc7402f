#!/usr/bin/env bash
# Installs what the real-client compatibility suites need: the npm packages (firebase, jose)
# and a Python venv with firebase-admin and google-auth. Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
command -v node >/dev/null || { echo "node is required: apt-get install -y nodejs npm" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is required: apt-get install -y python3 python3-venv" >&2; exit 1; }
if [ ! -d "$here/node/node_modules/firebase" ] || [ ! -d "$here/node/node_modules/firebase-admin" ] || [ "$here/node/package-lock.json" -nt "$here/node/node_modules/.package-lock.json" ]; then
  (cd "$here/node" && npm ci --no-audit --no-fund --loglevel=error)
fi
bash "$here/python/setup.sh"
bash "$here/iam/setup.sh"
bash "$here/secrets/setup.sh"
bash "$here/gateway/setup.sh"
