#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30), from a scratch copy of its checked-in
# seed corpus (seeds/<target>/, plus the reproducers of reported bugs in regressions/<target>/)
# so a run never writes into the repository, and fails on any crash, timeout or out-of-memory.
# Prints libFuzzer's final figures per target.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Environment: FUZZ_JOBS targets at a time (default 2), FUZZ_WORK scratch dir (default: a new
# temp dir; it keeps the grown corpora, the logs and any crash artifacts), FUZZ_TARGET_DIR the
# build dir (default outside the checkout, in ~/.cache, so a fresh clone on a machine that has
# built before rebuilds only what changed: a cold build is the bulk of the cost).
# Used by scripts/test (30 s) and bench/fuzz/run.sh (600 s). Needs nightly Rust; installs
# cargo-fuzz when missing.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-30}
shift || true
jobs=${FUZZ_JOBS:-2}
work=${FUZZ_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-fuzz.XXXXXX")}
# Built without a sanitizer: the workspace forbids unsafe code, so what matters is panics,
# overflow (debug assertions are on), hangs and memory blow-ups, which libFuzzer catches alone;
# an ASan build is twice as slow to run and to build.
build_flags=(--sanitizer none)
target_dir=${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gatehouse/fuzz-target}

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: needs a nightly Rust toolchain (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

started=$(date +%s)
cargo +nightly fuzz build "${build_flags[@]}" --target-dir "$target_dir"
built=$(date +%s)
echo "fuzz: built in $((built - started)) s"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
bin=$target_dir/x86_64-unknown-linux-gnu/release
mkdir -p "$work/logs"

# Fork mode: libFuzzer runs the target in child jobs and reports one figure line per job.
# FUZZ_KEEP_GOING=1 (the long run) goes on past crashes, timeouts and OOMs and sorts them by
# message at the end; otherwise the first one stops the target.
fuzz_flags=(-fork=1 -timeout=10 -rss_limit_mb=2048)
if [ "${FUZZ_KEEP_GOING:-0}" = 1 ]; then
  fuzz_flags+=(-ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
fi

run_one() {
  local t=$1
  local corpus=$work/corpus/$t artifacts=$work/artifacts/$t/
  mkdir -p "$corpus" "$artifacts"
  cp seeds/"$t"/* "$corpus"/
  if [ -d regressions/"$t" ]; then
    cp regressions/"$t"/* "$corpus"/
  fi
  "$bin/$t" "$corpus" "${fuzz_flags[@]}" -max_total_time="$seconds" \
    -artifact_prefix="$artifacts" >"$work/logs/$t.log" 2>&1
}

declare -A pid_of
failed=()
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
    wait -n || true
  done
  run_one "$t" &
  pid_of[$t]=$!
done
for t in "${targets[@]}"; do
  wait "${pid_of[$t]}" || failed+=("$t")
  if [ -n "$(find "$work/artifacts/$t" -type f)" ] && [[ ! " ${failed[*]} " =~ " $t " ]]; then
    failed+=("$t")
  fi
done

# The last job line: "#EXECS: cov: N ft: N corp: N exec/s: N oom/timeout/crash: a/b/c time: Ns ...".
printf '%-18s %12s %8s %7s %7s %7s %9s\n' target execs exec/s cov ft corpus crashes
for t in "${targets[@]}"; do
  last=$(grep -E '^#[0-9]+: cov: ' "$work/logs/$t.log" | tail -1 || true)
  field() { sed -nE "s/.*[[:space:]]$1:? ([0-9]+).*/\1/p" <<<"$last"; }
  execs=$(sed -nE 's/^#([0-9]+):.*/\1/p' <<<"$last")
  secs=$(sed -nE 's/.* time: ([0-9]+)s.*/\1/p' <<<"$last")
  rate=-
  if [ -n "$execs" ] && [ "${secs:-0}" -gt 0 ]; then rate=$((execs / secs)); fi
  printf '%-18s %12s %8s %7s %7s %7s %9s\n' "$t" "${execs:--}" "$rate" "$(field cov)" \
    "$(field ft)" "$(find "$work/corpus/$t" -type f | wc -l)" \
    "$(find "$work/artifacts/$t" -type f | wc -l)"
done
echo "fuzz: ${#targets[@]} targets x ${seconds} s in $(($(date +%s) - built)) s; logs, corpora and artifacts in $work"

if [ ${#failed[@]} -gt 0 ]; then
  for t in "${failed[@]}"; do
    echo "fuzz: $t FAILED (log: $work/logs/$t.log); crashes by message:" >&2
    for a in "$work/artifacts/$t"/*; do
      [ -e "$a" ] || continue
      msg=$({ "$bin/$t" "$a" 2>&1 || true; } | grep -A1 -m1 'panicked at' | tail -1 | cut -c1-140)
      echo "${msg:-(no panic message: a timeout or an OOM)}"
    done | sort | uniq -c | sort -rn >&2
    first=$(find "$work/artifacts/$t" -type f | head -1)
    [ -n "$first" ] && echo "reproduce: $bin/$t $first" >&2
  done
  exit 1
fi
