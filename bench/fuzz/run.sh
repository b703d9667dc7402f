#!/usr/bin/env bash
# The long fuzz run of issue #14: every target for 10 minutes (two at a time), from the
# checked-in seeds and regressions, going on past crashes and sorting them by message at the
# end. Prints per-target execs, exec/s, coverage (cov/ft), corpus size and crashes: the figures
# recorded under "Fuzzing" in docs/security.md. Takes about 40 minutes.
#
#   bench/fuzz/run.sh [SECONDS] [TARGET...]    # default 600 s per target
#
# The grown corpora, logs and any crash artifacts stay in the scratch dir it prints (or FUZZ_WORK).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-600}
shift || true
FUZZ_KEEP_GOING=1 exec fuzz/run.sh "$seconds" "$@"
