#!/usr/bin/env bash
# Gatehouse API gateway vs nginx / HAProxy+JWT, in one run, one target under load at a time.
#
#   bench/gateway/run.sh               # measure, write bench/gateway/results/<UTC timestamp>.jsonl,
#                                      # print the tables, (re)write the "## Gateway" section of
#                                      # docs/benchmarks.md (the rest of that file is left alone)
#   bench/gateway/run.sh --setup-only  # only install nginx / haproxy / wrk / PyJWT
#
# Never runs cargo: it measures the existing target/release/gatehouse (build it first).
#
# Knobs (environment): BENCH_RUNS (3), BENCH_DURATION (10s), BENCH_CONNECTIONS (64),
# BENCH_THREADS (1), BENCH_TOKENS (20000 distinct tokens for the uncached series; must exceed the
# gateway's 10,000-entry verified-token cache), BENCH_PORT_BASE (18180: backend +1, nginx proxy +2,
# HAProxy+JWT +4, JWKS server +9, gateway +10, gateway admin +11), BENCH_QUIET_TIMEOUT (300 s),
# BENCH_BUILD_WAIT (1500 s; waits for rustc/cargo/cc1/pytest/node to finish, polling every 20 s),
# BENCH_ONLY (comma list of series, e.g. "a,g1"), BENCH_WRITE_DOCS=0, BENCH_RESULTS_DIR,
# GATEHOUSE_GW_BENCH_SCRATCH (/tmp/gatehouse-gw-bench; must be outside the repo).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
. "$HERE/../common.sh"
scratch_dir GATEHOUSE_GW_BENCH_SCRATCH /tmp/gatehouse-gw-bench
BIN=$ROOT/target/release/gatehouse
RESULTS_DIR=${BENCH_RESULTS_DIR:-$HERE/results}

# --- tools: nginx, haproxy, wrk, python3 (apt). Debian's policy-rc.d may keep the packaged
# services from starting; the benchmark starts its own instances on 127.0.0.1 either way.
missing=()
for t in nginx haproxy wrk python3 openssl; do
  command -v "$t" >/dev/null || [ -x "/usr/sbin/$t" ] || missing+=("$t")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "installing ${missing[*]} (apt-get)" >&2
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi
export PATH="$PATH:/usr/sbin"

# --- PyJWT + cryptography, in a venv in the scratch folder (system packages visible)
VENV=$SCRATCH/venv
if ! "$VENV/bin/python" -c "import jwt, cryptography" 2>/dev/null; then
  echo "creating $VENV with PyJWT + cryptography (pip)" >&2
  python3 -m venv --system-site-packages "$VENV"
  "$VENV/bin/python" -c "import cryptography" 2>/dev/null || "$VENV/bin/pip" install -q cryptography
  "$VENV/bin/pip" install -q PyJWT
fi

[ "${1:-}" = --setup-only ] && { echo "setup done ($SCRATCH)"; exit 0; }

[ -x "$BIN" ] || { echo "missing $BIN: build it first (cargo build --release -p gatehouse); this script never runs cargo" >&2; exit 2; }

stamp=$(date -u +%Y%m%dT%H%M%SZ)
docs=()
[ "${BENCH_WRITE_DOCS:-1}" = 1 ] && docs=(--docs "$ROOT/docs/benchmarks.md")
exec "$VENV/bin/python" "$HERE/bench.py" run --results "$RESULTS_DIR/$stamp.jsonl" "${docs[@]}" \
  --gatehouse "$BIN" --scratch "$SCRATCH"
