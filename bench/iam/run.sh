#!/usr/bin/env bash
# IAM throughput, in process: permission checks per second, the audit log's row rate, ID-token
# and access-token mint rates, bearer authentication rate.
#
#   bench/iam/run.sh     # build the example (release), measure on SQLite (and on PostgreSQL when
#                        # GATEHOUSE_BENCH_PG_URL names an empty database), write
#                        # bench/iam/results/<UTC timestamp>.jsonl and the "## IAM" section of
#                        # docs/benchmarks.md (the rest of that file is left alone)
#
# Knobs: BENCH_SECONDS (5 per measurement), BENCH_WRITE_DOCS=0.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"
cargo build --release -q -p gatehouse-iam --example iam_bench
BIN=$ROOT/target/release/examples/iam_bench
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=$HERE/results/$stamp.jsonl
secs=${BENCH_SECONDS:-5}
{
  echo "{\"kind\":\"meta\",\"date\":\"$(date -u +%Y-%m-%dT%H:%MZ)\",\"commit\":\"$(git rev-parse --short HEAD)\",\"cores\":$(nproc),\"cpu\":\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\",\"seconds\":$secs}"
  GATEHOUSE_LOG=warn "$BIN" --seconds "$secs" | grep '^{"' | grep -v '"level"'
  if [ -n "${GATEHOUSE_BENCH_PG_URL:-}" ]; then
    GATEHOUSE_LOG=warn "$BIN" --seconds "$secs" --database-url "$GATEHOUSE_BENCH_PG_URL" | grep '^{"' | grep -v '"level"' | grep '"backend"'
  fi
} > "$out"
echo "results: $out" >&2
python3 - "$out" "$ROOT/docs/benchmarks.md" "${BENCH_WRITE_DOCS:-1}" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
meta = next(r for r in recs if r["kind"] == "meta")
def f(x): return f"{x:,.0f}"
L = ["## IAM", "",
     f"Date: {meta['date']}. Machine: {meta['cores']} cores ({meta['cpu']}). Repository at {meta['commit']}. "
     f"Command: `bench/iam/run.sh` (raw figures: `bench/iam/results/{sys.argv[1].rsplit('/',1)[-1]}`; "
     f"source: `crates/iam/examples/iam_bench.rs`). In process, {meta['seconds']} s per measurement; "
     "the production defaults (1 s policy/account cache, audit log on).", "",
     "| measurement | tasks | per second |", "|---|---:|---:|"]
names = {
  "checks": "permission checks, cached policies (half allowed on the resource, half denied after the resource and the project policy), each one audited",
  "audit_distinct": "permission checks on a new resource every time (policy read from the store, one new audit row each)",
  "id_token_mint": "Google-style ID tokens minted (RSA-2048 RS256)",
  "access_token_mint": "access tokens minted",
  "authenticate": "bearer access tokens authenticated (signature + account and key state)",
}
for r in recs:
    if r["kind"] in names:
        backend = f" ({r['backend']})" if "backend" in r else ""
        L.append(f"| {names[r['kind']]}{backend} | {r.get('tasks', 1)} | {f(r['per_sec'])} |")
L += ["", "The audit writer batches decisions and writes identical ones in a batch as one row with a count; "
      "its queue is bounded (65,536), so a writer that falls behind slows checks instead of dropping "
      "records or growing memory. `audit_drain_ms` in the raw figures is the lag after each check run.", ""]
section = "\n".join(L)
print(section)
if sys.argv[3] == "1":
    path = sys.argv[2]
    text = open(path).read()
    start = text.find("## IAM\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + ("" if end < 0 else text[end:])
    open(path, "w").write(text.rstrip("\n") + "\n")
PY
