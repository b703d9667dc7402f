#!/usr/bin/env bash
# The CATS v DOGS vote app (apps/vote) on PostgreSQL: votes/s and `GET /` latency at 0, 10^4 and
# 10^6 votes, with the app's tally (TALLY_MODE=tally) and with the sample's own queries
# (TALLY_MODE=count: a COUNT per candidate per request), on one throw-away PostgreSQL cluster.
#
#   bench/vote/run.sh   # measure (about 8 minutes), write bench/vote/results/<UTC timestamp>.jsonl,
#                       # print the tables, (re)write the "## Vote app (idp-sql)" section of
#                       # docs/benchmarks.md (the rest of that file is left alone; not for debug builds)
#   python3 bench/vote/summarize.py bench/vote/results/<file>.jsonl [--docs docs/benchmarks.md]
#
# Never runs cargo: it measures existing binaries (build them first).
#
# Knobs (environment): VOTE_BIN (target/release/vote), GATEHOUSE_BIN (target/release/gatehouse),
# BENCH_PG_BIN (/usr/lib/postgresql/15/bin), BENCH_RUNS (3), BENCH_DURATION (10s),
# BENCH_WARMUP (2s), BENCH_CONNECTIONS (16), BENCH_THREADS (1), BENCH_WRK_TIMEOUT (30s),
# BENCH_SIZES (0,10000,1000000), BENCH_MODES (tally,count), BENCH_QUIET_TIMEOUT (60 s, before
# each size x mode), BENCH_BUILD_WAIT (900 s; waits for compilers to finish, once at the start),
# BENCH_WRITE_DOCS=0, BENCH_RESULTS_DIR, GATEHOUSE_VOTE_BENCH_SCRATCH (/tmp/gatehouse-vote-bench;
# must be outside the repo). Ports are picked free at run time; PostgreSQL listens on a unix
# socket only; all load goes to 127.0.0.1.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
. "$HERE/../common.sh"
scratch_dir GATEHOUSE_VOTE_BENCH_SCRATCH /tmp/gatehouse-vote-bench
VOTE_BIN=${VOTE_BIN:-$ROOT/target/release/vote}
GATEHOUSE_BIN=${GATEHOUSE_BIN:-$ROOT/target/release/gatehouse}
PG_BIN=${BENCH_PG_BIN:-/usr/lib/postgresql/15/bin}
RESULTS_DIR=${BENCH_RESULTS_DIR:-$HERE/results}

for b in "$VOTE_BIN" "$GATEHOUSE_BIN"; do
  [ -x "$b" ] || { echo "missing $b: build it first (cargo build --release -p gatehouse -p gatehouse-vote); this script never runs cargo" >&2; exit 2; }
done
for t in initdb pg_ctl postgres psql; do
  [ -x "$PG_BIN/$t" ] || { echo "missing $PG_BIN/$t: install PostgreSQL 15 (apt-get install postgresql-15) or set BENCH_PG_BIN" >&2; exit 2; }
done
for t in wrk python3; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install $t)" >&2; exit 2; }
done
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || { echo "running as root: initdb needs the postgres user (apt-get install postgresql-15)" >&2; exit 2; }
fi

stamp=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$SCRATCH/run-$stamp
mkdir -p "$WORK"

# If the driver dies without cleaning up: stop what it left running (its servers' process groups,
# the cluster) and delete the cluster. The driver removes the pid files of what it stopped itself.
cleanup() {
  for f in "$WORK"/*.pid; do
    [ -f "$f" ] && kill -KILL -- "-$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
  if [ -f "$WORK/pg/data/postmaster.pid" ]; then
    if [ "$(id -u)" = 0 ]; then
      runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m fast -w stop >/dev/null 2>&1 || true
    else
      "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
  fi
  rm -rf "$WORK/pg" "$WORK/identity"
}
trap cleanup EXIT

docs=()
[ "${BENCH_WRITE_DOCS:-1}" = 1 ] && docs=(--docs "$ROOT/docs/benchmarks.md")
python3 "$HERE/bench.py" run --results "$RESULTS_DIR/$stamp.jsonl" --work "$WORK" "${docs[@]}" \
  --vote "$VOTE_BIN" --gatehouse "$GATEHOUSE_BIN" --pg-bin "$PG_BIN"
