#!/usr/bin/env bash
# Gatehouse identity server vs the Firebase Auth emulator, in one run, one server at a time.
#
#   bench/identity/run.sh               # measure, write bench/identity/results/<UTC timestamp>.jsonl,
#                                       # print the tables, rewrite docs/benchmarks.md
#   bench/identity/run.sh --setup-only  # only install wrk / firebase-tools
#
# Knobs (environment): GATEHOUSE_BENCH_PG_URL (also measure Gatehouse on that PostgreSQL database,
# which should be empty), BENCH_SKIP_EMULATOR=1, BENCH_RUNS (3), BENCH_DURATION (10s),
# BENCH_CONNECTIONS (64), BENCH_READY_RUNS (5), BENCH_GATEHOUSE_PORT (19180),
# BENCH_EMULATOR_PORT (19099; hub +301, logging +401), BENCH_QUIET_TIMEOUT (300 s),
# BENCH_BUILD_WAIT (900 s), BENCH_NO_BUILD=1 (never run cargo), BENCH_WRITE_DOCS=0,
# BENCH_RESULTS_DIR, GATEHOUSE_BENCH_SCRATCH (/tmp/gatehouse-bench; must be outside the repo).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
. "$HERE/../common.sh"
scratch_dir GATEHOUSE_BENCH_SCRATCH /tmp/gatehouse-bench
FB_VERSION=15.34.2
FB_DIR=$SCRATCH/fb
BIN=$ROOT/target/release/gatehouse
HASH_BIN=$ROOT/target/release/examples/hash_rate
RESULTS_DIR=${BENCH_RESULTS_DIR:-$HERE/results}

# --- tools: wrk, python3, curl (apt), Node >= 20 for the emulator
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v python3 >/dev/null || missing+=(python3)
command -v curl >/dev/null || missing+=(curl)
if [ "${BENCH_SKIP_EMULATOR:-0}" != 1 ] && ! command -v npm >/dev/null; then missing+=(nodejs npm); fi
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "installing ${missing[*]} (apt-get)" >&2
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

# --- firebase-tools, pinned, in a scratch folder outside the repository
if [ "${BENCH_SKIP_EMULATOR:-0}" != 1 ]; then
  node_major=$(node -p 'process.versions.node.split(".")[0]')
  if [ "$node_major" -lt 20 ]; then
    echo "firebase-tools $FB_VERSION needs Node >= 20 (found $(node --version)); or set BENCH_SKIP_EMULATOR=1" >&2
    exit 2
  fi
  have=$(node -p "try { require('$FB_DIR/node_modules/firebase-tools/package.json').version } catch { '' }")
  if [ "$have" != "$FB_VERSION" ]; then
    echo "installing firebase-tools@$FB_VERSION into $FB_DIR (npm, ~300 MB)" >&2
    mkdir -p "$FB_DIR"
    cat > "$FB_DIR/package.json" <<EOF
{ "name": "gatehouse-bench-emulator", "private": true, "dependencies": { "firebase-tools": "$FB_VERSION" } }
EOF
    (cd "$FB_DIR" && npm install --no-audit --no-fund --loglevel=error)
  fi
fi

[ "${1:-}" = --setup-only ] && { echo "setup done ($SCRATCH)"; exit 0; }

# --- binaries: always brought up to date (a no-op when fresh), unless BENCH_NO_BUILD=1
if [ "${BENCH_NO_BUILD:-0}" = 1 ]; then
  [ -x "$BIN" ] && [ -x "$HASH_BIN" ] || { echo "missing $BIN or $HASH_BIN and BENCH_NO_BUILD=1" >&2; exit 2; }
else
  (cd "$ROOT" && cargo build --release --locked -p gatehouse \
              && cargo build --release --locked -p gatehouse-identity --example hash_rate)
fi

stamp=$(date -u +%Y%m%dT%H%M%SZ)
docs=()
[ "${BENCH_WRITE_DOCS:-1}" = 1 ] && docs=(--docs "$ROOT/docs/benchmarks.md")
extra=()
[ "${BENCH_SKIP_EMULATOR:-0}" = 1 ] && extra+=(--skip-emulator)
exec python3 "$HERE/bench.py" run --results "$RESULTS_DIR/$stamp.jsonl" "${docs[@]}" "${extra[@]}" \
  --gatehouse "$BIN" --hash-rate "$HASH_BIN" --fb-dir "$FB_DIR" --scratch "$SCRATCH"
