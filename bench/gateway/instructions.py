#!/usr/bin/env python3
"""Instructions per request (valgrind callgrind) for the gateway benchmark's proxies (issue #16).

  /tmp/gatehouse-gw-bench/venv/bin/python bench/gateway/instructions.py [--docs docs/benchmarks.md]

(the venv, with PyJWT for minting, is made by `bench/gateway/run.sh --setup-only`). Wall-clock
figures move with the machine; user-space instruction counts do not. Targets:

  b   nginx 1-worker reverse proxy (bench.py's config plus `master_process off;`, so the process
      callgrind runs is the one that serves)
  c   HAProxy nbthread 1 + RS256 jwt_verify, valid token
  g0  gateway --threads 1, no-auth operation GET /open
  g1  gateway --threads 1, valid token (verified-token cache hit)
  g3  gateway --threads 1, a different valid token on every request (lua/distinct_tokens.lua)

For each: the nginx backend and the JWKS server run natively; the target runs under
`valgrind --tool=callgrind`; once it answers, `wrk -t1 -c8 -d3s` warms it up, `callgrind_control
-z` zeroes the counters, `wrk -t1 -c8 -d10s` is the measured load, `callgrind_control -d` dumps,
the target is stopped, and `callgrind_annotate` reads the PROGRAM TOTALS of the dump:
instructions / request = total ÷ the requests wrk completed. For g1 and g3 the top functions by
inclusive cost are kept too.

Keys, tokens, configs and servers come from bench.py (imported, not copied): same ports (P, 18180+),
so it refuses to run while `bench.py run` is running. 127.0.0.1 only; every step has a hard
timeout; every process it starts runs in its own process group, killed on exit and on
SIGTERM/SIGINT. Results: bench/gateway/results/<UTC stamp>-instructions.jsonl.
"""

import argparse
import datetime
import glob
import os
import re
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import bench  # noqa: E402  (bench/gateway/bench.py: runs nothing on import)
from common import (  # noqa: E402
    ROOT, close_results, command_output, emit, machine_meta, parse_wrk, port_open, say, start_run, stop_all,
    utc_mtime, write_section,
)

P = bench.P
HEADING = "## Gateway: instructions per request"
STEP_TIMEOUT = 120  # s, any single step (start under valgrind, wrk, callgrind_control, annotate)
RUN_TIMEOUT = 1800  # s, the whole run
TOP = 10
SCAFFOLD_PCT = 90  # inclusive share at or above which a frame is the event loop, not the work

# id, label, which server is loaded, how the request is made (as bench.SERIES)
TARGETS = [
    ("b", "nginx 1 worker reverse proxy, no auth", "nginx_proxy", {"path": "/"}),
    ("c", "HAProxy nbthread 1 + RS256 `jwt_verify`, valid token", "haproxy_jwt", {"path": "/", "token": "valid"}),
    ("g0", "Gatehouse gateway, no-auth operation `/open`", "gateway", {"path": "/open"}),
    ("g1", "Gatehouse gateway, valid token (cache hit)", "gateway", {"path": "/", "token": "valid"}),
    ("g3", "Gatehouse gateway, a different valid token per request (uncached)", "gateway", {"lua": "distinct"}),
]
TOP_FOR = ("g1", "g3")


def run(argv, timeout, **kw):
    """A short command with a hard timeout; its output (stdout + stderr)."""
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} ... failed ({p.returncode}):\n{p.stdout}{p.stderr}")
    return p.stdout + p.stderr


def wrk(port, how, work, duration, connections, token_start):
    """One bounded wrk run against 127.0.0.1:port; parse_wrk's figures."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s"]
    env = dict(os.environ)
    if "token" in how:
        tok = open(os.path.join(work, "tokens", how["token"] + ".jwt")).read().strip()
        argv += ["-H", f"Authorization: Bearer {tok}"]
    if "lua" in how:
        argv += ["-s", os.path.join(HERE, "lua", "distinct_tokens.lua")]
        env["BENCH_TOKENS_FILE"] = os.path.join(work, "tokens", f"{how['lua']}.txt")
        env["BENCH_TOKEN_START"] = str(token_start)
    argv.append(f"http://127.0.0.1:{port}{how.get('path', '/')}")
    return parse_wrk(run(argv, duration + 60, env=env))


def under_callgrind(kind, work, gatehouse, out_dir):
    """bench.make_server's server for `kind`, run under callgrind (nginx: one process, no master)."""
    s = bench.make_server(kind, work, gatehouse, {"threads": 1})
    argv = list(s.argv)
    if kind == "nginx_proxy":
        conf = os.path.join(s.cwd, "conf")
        text = open(os.path.join(conf, "nginx.conf")).read()
        open(os.path.join(conf, "nginx-callgrind.conf"), "w").write("master_process off;\n" + text)
        argv[argv.index("conf/nginx.conf")] = "conf/nginx-callgrind.conf"
    s.argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_dir}/cg.%p"] + argv
    return s


def annotate(dump, inclusive=False):
    """callgrind_annotate's PROGRAM TOTALS and its function lines [(Ir, name)], highest first."""
    argv = ["callgrind_annotate", "--threshold=100", f"--inclusive={'yes' if inclusive else 'no'}", dump]
    text = run(argv, STEP_TIMEOUT)
    m = re.search(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?PROGRAM TOTALS", text, re.M)
    if not m:
        raise SystemExit(f"no PROGRAM TOTALS in callgrind_annotate {dump}:\n{text[:2000]}")
    total = int(m.group(1).replace(",", ""))
    funcs = []
    for line in text[m.end():].splitlines():
        f = re.match(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*)$", line)
        if f and "PROGRAM TOTALS" not in line:
            funcs.append((int(f.group(1).replace(",", "")), f.group(2).strip()))
    return total, funcs


def short_name(name):
    """`file:function [object]` -> `function` (object file name kept when the function is ???)."""
    m = re.match(r"^(?:[^:\s]*:)?(.*?)(?: \[(.*)\])?$", name)
    fn, obj = (m.group(1), m.group(2)) if m else (name, None)
    fn = re.sub(r"::h[0-9a-f]{16}$", "", fn)  # legacy Rust mangling hash
    if (not fn or fn.startswith("0x") or fn == "???") and obj:
        fn = f"{fn or '???'} ({os.path.basename(obj)})"
    return fn


def measure(sid, kind, how, work, args, cg_dir):
    """One target: start under callgrind, warm up, zero, load, dump, stop; the record."""
    target = under_callgrind(kind, work, args.gatehouse, cg_dir)
    say(f"{sid}: starting {kind} under callgrind")
    try:
        ready = bench.start(target, STEP_TIMEOUT)
        pid = target.proc.pid
        say(f"  answers after {ready:.1f} s (pid {pid}); warm-up {args.warmup} s")
        warm = wrk(target.port, how, work, args.warmup, args.connections, 0)
        token_start = warm["requests"]  # g3: the measured load continues the token list
        run(["callgrind_control", "-z", str(pid)], STEP_TIMEOUT)
        r = wrk(target.port, how, work, args.duration, args.connections, token_start)
        run(["callgrind_control", "-d", str(pid)], STEP_TIMEOUT)
    finally:
        target.stop()
    dumps = sorted(glob.glob(os.path.join(cg_dir, f"cg.{pid}*")), key=os.path.getsize)
    dump = os.path.join(cg_dir, f"cg.{pid}.1")
    if not os.path.exists(dump):
        if not dumps:
            raise SystemExit(f"{sid}: no callgrind dump for pid {pid} in {cg_dir}")
        dump = dumps[-1]
    total, by_self = annotate(dump)
    rec = {"kind": "instructions", "target": sid, "label": dict((t[0], t[1]) for t in TARGETS)[sid],
           "server": kind, "ready_s": round(ready, 2), "warmup_requests": warm["requests"],
           "requests": r["requests"], "rps_under_callgrind": r["rps"], "non2xx": r["non2xx"],
           "socket_errors": r["socket_errors"], "instructions": total,
           "per_request": round(total / max(1, r["requests"])), "dump": dump}
    emit(rec)
    say(f"  {r['requests']:,} requests ({r['non2xx']} non-2xx), {total:,} instructions, "
        f"{rec['per_request']:,} / request")
    if sid in TOP_FOR:
        _, funcs = annotate(dump, inclusive=True)
        self_ir = {n: ir for ir, n in by_self}
        per = lambda ir: round(ir / max(1, r["requests"]))  # noqa: E731
        top = [{"function": short_name(n), "raw": n, "instructions": ir, "per_request": per(ir),
                "self_per_request": per(self_ir.get(n, 0)), "pct": round(100 * ir / total, 1)}
               for ir, n in funcs[:3 * TOP + 20]]
        emit({"kind": "top_inclusive", "target": sid, "functions": top})
        # The frames every request runs through (thread start, the runtime loop, the connection
        # task) hold nearly all of the total; the list starts below them.
        rec["top"] = [f for f in top if f["pct"] < SCAFFOLD_PCT][:TOP]
    return rec


# ---------------------------------------------------------------- report

def table(recs):
    by = {r["target"]: r for r in recs}
    base = by.get("b", {}).get("per_request")
    L = ["| # | target | requests counted | instructions / request | ratio to b |", "|---|---|---:|---:|---:|"]
    for sid, *_ in TARGETS:
        r = by.get(sid)
        if not r:
            continue
        ratio = f"{r['per_request'] / base:.2f}×" if base else "–"
        non = f" ({r['non2xx']:,} non-2xx)" if r["non2xx"] else ""
        L.append(f"| {sid} | {r['label']} | {r['requests']:,}{non} | {r['per_request']:,} | {ratio} |")
    return L


def section(recs, meta, results, command, distinct):
    g3 = next((r for r in recs if r["target"] == "g3"), None)
    fits = g3 is not None and g3["warmup_requests"] + g3["requests"] <= distinct
    all_fresh = (f" and longer than all {g3['warmup_requests'] + g3['requests']:,} g3 requests of the run, "
                 "warm-up included") if fits else ""
    L = [HEADING, ""]
    L.append(f"Date: {meta['date_utc']}. Machine: {meta['nproc']} cores ({meta['cpu_model']}), "
             f"Linux {meta['kernel']}. {meta['valgrind']}; Gatehouse `{meta['gatehouse_bin']}` built "
             f"{meta['gatehouse_bin_mtime']} (repository at {meta['git_rev']}); nginx {meta['nginx'].split('/')[-1]}, "
             f"{meta['haproxy'].split(' - ')[0]}; load: {meta['wrk']}.")
    L.append("")
    L.append(f"Command: `{command}` (the venv with PyJWT comes from `bench/gateway/run.sh --setup-only`; "
             f"raw figures: `{os.path.relpath(results, ROOT)}`).")
    L.append("")
    L += table(recs)
    L.append("")
    L.append("Method: each target runs alone under `valgrind --tool=callgrind` (nginx with `master_process off;` "
             "added to the benchmark's config, so the process measured is the one serving; HAProxy `nbthread 1`; "
             "the gateway `--threads 1` with `GATEHOUSE_LOG=warn`), with the nginx backend and the JWKS server "
             "running natively beside it. Once it answers, "
             f"`wrk -t1 -c{meta['connections']} -d{meta['warmup_s']}s` warms it up (connections, caches, the g1 "
             "token), `callgrind_control -z` zeroes the counters, "
             f"`wrk -t1 -c{meta['connections']} -d{meta['duration_s']}s` is the measured load, "
             "`callgrind_control -d` dumps, and instructions / request is the dump's PROGRAM TOTALS "
             "(`callgrind_annotate`) ÷ the requests wrk completed. These are user-space instructions of the "
             "proxy's process only: the kernel's TCP work, the same for every proxy, is not counted, nor is the "
             "backend's. The count does not depend on machine load or clock speed, but it is not time: cache "
             "misses, branch mispredictions and system calls cost differently per instruction. Callgrind "
             "serialises threads (one runs at a time), so the gateway's runtime and HAProxy behave as if on one "
             "core. g3 sends a different valid token on every request "
             "(`lua/distinct_tokens.lua`, from a list longer than the gateway's 10,000-entry verified-token "
             f"cache{all_fresh}), so each one is parsed and RSA-verified.")
    L.append("")
    for r in recs:
        if r.get("top"):
            L.append(f"Top {TOP} functions by inclusive cost, {r['target']}, in instructions per request "
                     "(inclusive: the function and everything it calls; self: the function alone). Frames that "
                     f"hold {SCAFFOLD_PCT} % or more of the total, the thread start, the tokio runtime loop and "
                     "the connection task every request runs through, are left out (they are in the results file):")
            L.append("")
            L.append("| function | inclusive / request | % of total | self / request |")
            L.append("|---|---:|---:|---:|")
            for f in r["top"]:
                L.append(f"| `{f['function'].replace('|', '/')}` | {f['per_request']:,} | {f['pct']} | "
                         f"{f['self_per_request']:,} |")
            L.append("")
    return "\n".join(L) + "\n"


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", help="Markdown file whose \"" + HEADING + "\" section is (re)written")
    ap.add_argument("--gatehouse", default=os.path.join(ROOT, "target", "release", "gatehouse"))
    ap.add_argument("--scratch", default=os.environ.get("GATEHOUSE_GW_BENCH_SCRATCH", "/tmp/gatehouse-gw-bench"))
    ap.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    ap.add_argument("--only", default="", help="comma list of targets (b,c,g0,g1,g3)")
    ap.add_argument("--warmup", type=int, default=3, help="seconds of wrk before the counters are zeroed")
    ap.add_argument("--duration", type=int, default=10, help="seconds of measured wrk load")
    ap.add_argument("--connections", type=int, default=8)
    args = ap.parse_args()

    if subprocess.run(["pgrep", "-f", "bench.py run"], capture_output=True).returncode == 0:
        raise SystemExit("bench/gateway/bench.py run is running (same ports, and it wants the machine to "
                         "itself); not starting")
    if not os.access(args.gatehouse, os.X_OK):
        raise SystemExit(f"missing {args.gatehouse}: build it first (this script never runs cargo)")
    scratch = os.path.abspath(args.scratch)
    if (scratch + "/").startswith(ROOT + "/"):
        raise SystemExit("the scratch folder must be outside the repository")
    busy = [p for p in P.values() if port_open(p)]
    if busy:
        raise SystemExit(f"ports already in use on 127.0.0.1: {busy}; not starting")
    only = [s for s in args.only.split(",") if s] or [t[0] for t in TARGETS]

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    results = os.path.join(args.results_dir, f"{stamp}-instructions.jsonl")
    work = start_run(results, scratch)  # also: SIGTERM/SIGINT stop every server
    signal.signal(signal.SIGALRM, lambda *_: (say(f"hard timeout ({RUN_TIMEOUT} s)"), stop_all(), sys.exit(124)))
    signal.alarm(RUN_TIMEOUT)
    cg_dir = os.path.join(work, "callgrind")
    os.makedirs(cg_dir, exist_ok=True)
    command = "/tmp/gatehouse-gw-bench/venv/bin/python bench/gateway/instructions.py" + (
        f" --docs {os.path.relpath(os.path.abspath(args.docs), ROOT)}" if args.docs else "")
    recs = []
    try:
        meta = {
            **machine_meta(),
            "valgrind": command_output(["valgrind", "--version"]),
            "gatehouse_bin": os.path.relpath(args.gatehouse, ROOT),
            "gatehouse_bin_mtime": utc_mtime(args.gatehouse),
            "nginx": command_output(["nginx", "-v"]).replace("nginx version: ", ""),
            "haproxy": (command_output(["haproxy", "-v"]).splitlines() or [""])[0],
            "connections": args.connections, "warmup_s": args.warmup, "duration_s": args.duration,
            "ports": P, "command": command,
        }
        emit(meta)
        say(f"results: {results}\nscratch: {work}")
        n_tokens = bench.CFG["tokens"]
        if "g3" in only:
            say(f"minting {n_tokens} distinct tokens (PyJWT, RS256)")
        rec = bench.mint(work, n_tokens if "g3" in only else 1)
        emit(rec)
        bench.write_configs(work)
        backend = bench.make_server("backend", work, args.gatehouse)
        bench.start(backend)
        jwks = None
        for sid, label, kind, how in TARGETS:
            if sid not in only:
                continue
            if kind == "gateway" and jwks is None:
                jwks = bench.make_server("jwks", work, args.gatehouse)
                bench.start(jwks)
            r = measure(sid, kind, how, work, args, cg_dir)
            recs.append(r)
            if "lua" in how and r["warmup_requests"] + r["requests"] > rec["distinct"]:
                say(f"  warning: more requests than the {rec['distinct']} distinct tokens: some were repeated")
        emit({"kind": "done"})
    finally:
        signal.alarm(0)
        stop_all()
        close_results()
        left = [p for p in P.values() if port_open(p)]
        if left:
            say(f"WARNING: ports still listening after stop: {left}")

    print("\n".join(table(recs)))
    for r in recs:
        if r.get("top"):
            print(f"\ntop {TOP} by inclusive cost below the event loop, {r['target']} "
                  "(inclusive / request, %, self / request):")
            for f in r["top"]:
                print(f"  {f['per_request']:>10,}  {f['pct']:5.1f}%  {f['self_per_request']:>8,}  {f['function']}")
    if args.docs:
        write_section(args.docs, HEADING, section(recs, meta, results, command, rec["distinct"]))
        say(f"wrote the \"{HEADING}\" section of {args.docs}")
    say(f"results: {results}")


if __name__ == "__main__":
    main()
