#!/usr/bin/env bash
# Installs what the federated sign-in tests need: the npm packages oidc-provider (the upstream
# OpenID Provider that op.mjs runs), jose (ID token checks) and firebase (the JS SDK). Idempotent:
# `npm ci` runs only when node_modules is missing or older than package-lock.json.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
command -v node >/dev/null || { echo "node is required: apt-get install -y nodejs npm" >&2; exit 1; }
command -v npm >/dev/null || { echo "npm is required: apt-get install -y npm" >&2; exit 1; }
# oidc-provider 9 uses URL.parse and crypto.hash: Node 20.18 or later (it prints an "Unsupported
# runtime" warning below Node 22 but works).
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=18)?0:1)' || {
  echo "Node.js >= 20.18 is required, found $(node --version): apt-get install -y nodejs (Debian 13) or a newer Node" >&2
  exit 1
}
stale=0
for pkg in oidc-provider jose firebase; do
  [ -d "$here/node_modules/$pkg" ] || stale=1
done
[ "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ] && stale=1
if [ "$stale" = 1 ]; then
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error) || {
    echo "npm ci failed in $here: the npm registry must be reachable (npm config get registry)" >&2
    exit 1
  }
fi
