#!/usr/bin/env bash
# Installs what the browser end-to-end test needs: the npm package playwright-core (it drives
# Debian's Chromium; no browser download) and checks that Chromium is present. Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
chromium=${CHROMIUM:-/usr/bin/chromium}
command -v node >/dev/null || { echo "node is required: apt-get install -y nodejs npm" >&2; exit 1; }
[ -x "$chromium" ] || { echo "Chromium is required at $chromium: apt-get install -y chromium" >&2; exit 1; }
if [ ! -d "$here/node_modules/playwright-core" ] || [ "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ]; then
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi
