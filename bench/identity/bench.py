#!/usr/bin/env python3
"""Benchmark driver for `gatehouse identity` and the Firebase Auth emulator (run.sh calls it).

  bench.py run     --results FILE [--docs FILE]   measure everything, append JSON lines to FILE
  bench.py report  FILE [--docs FILE]             print the Markdown tables (and write the doc)

Servers are started one at a time in their own process group (setsid) and stopped by killing
that group; wrk never loads two servers at once. Only 127.0.0.1 is used, every load run is a
bounded `wrk -d`. CPU and memory come from /proc (utime+stime of the server's process tree,
VmRSS sampled every 100 ms during each run, VmHWM at the end).
"""

import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))

sys.path.insert(0, os.path.dirname(HERE))
from common import (  # noqa: E402
    FOREIGN_MAX, TCK, RssSampler, Server, cli, close_results, command_output, cpu_ticks, emit, env_int, http_call, load,
    machine_meta,
    open_results, parse_wrk, pf, proc_stat_cpu, repeat_runs, proc_tree, say, status_kb, stop_all, utc_mtime,
    start_run, wait_for_builds, wait_quiet,
)

API_KEY = "fake-api-key"
PROJECT = "demo-bench"
ENDPOINTS = ["signup", "signin", "refresh", "lookup"]
LABEL = {
    "signup": "`accounts:signUp` (new e-mail each request)",
    "signin": "`accounts:signInWithPassword` (one user)",
    "refresh": "Secure Token `token` (refresh_token grant)",
    "lookup": "`accounts:lookup` (idToken)",
}
FRESH = "gatehouse-sqlite-lookup-only"  # fresh process that serves only the lookup load

CFG = {
    "runs": env_int("BENCH_RUNS", 3),
    "duration": os.environ.get("BENCH_DURATION", "10s"),
    "connections": env_int("BENCH_CONNECTIONS", 64),
    "threads": env_int("BENCH_THREADS", 1),
    "ready_runs": env_int("BENCH_READY_RUNS", 5),
    "gh_port": env_int("BENCH_GATEHOUSE_PORT", 19180),
    "fb_port": env_int("BENCH_EMULATOR_PORT", 19099),
    "quiet_timeout": env_int("BENCH_QUIET_TIMEOUT", 300),
    "build_wait": env_int("BENCH_BUILD_WAIT", 900),
    "hash_secs": env_int("BENCH_HASH_SECS", 5),
}

def server_env(base_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    env.update(base_extra or {})
    return env


def gatehouse_server(args, scratch, tag, database_url=None):
    data = os.path.join(scratch, f"data-{tag}")
    shutil.rmtree(data, ignore_errors=True)
    argv = [args.gatehouse, "identity", "--project", PROJECT, "--listen", f"127.0.0.1:{CFG['gh_port']}",
            "--data-dir", data, "--rate-limits", "off"]
    if database_url:
        argv += ["--database-url", database_url]
    return Server(f"gatehouse[{tag}]", argv, scratch, server_env(), os.path.join(scratch, f"gatehouse-{tag}.log"),
                  CFG["gh_port"], "/healthz")


def emulator_server(args, scratch):
    fb = args.fb_dir
    hub, logging = CFG["fb_port"] + 301, CFG["fb_port"] + 401
    with open(os.path.join(fb, "firebase.json"), "w") as fh:
        json.dump({"emulators": {"auth": {"host": "127.0.0.1", "port": CFG["fb_port"]},
                                 "ui": {"enabled": False},
                                 "hub": {"host": "127.0.0.1", "port": hub},
                                 "logging": {"host": "127.0.0.1", "port": logging}}}, fh, indent=2)
    argv = ["node", os.path.join(fb, "node_modules", "firebase-tools", "lib", "bin", "firebase.js"),
            "emulators:start", "--only", "auth", "--project", PROJECT]
    env = server_env({"NO_UPDATE_NOTIFIER": "1"})
    return Server("firebase-emulator", argv, fb, env, os.path.join(scratch, "emulator.log"),
                  CFG["fb_port"], "/", extra_ports=(hub, logging))


# ---------------------------------------------------------------- wrk

def wrk_once(server, endpoint, env_extra):
    lua = os.path.join(HERE, "lua", f"{endpoint}.lua")
    argv = ["wrk", f"-t{CFG['threads']}", f"-c{CFG['connections']}", f"-d{CFG['duration']}", "--latency",
            "-s", lua, f"http://127.0.0.1:{server.port}"]
    tree = proc_tree(server.proc.pid)
    sampler = RssSampler(tree)
    c0, s0 = cpu_ticks(tree), proc_stat_cpu()
    self0, kids0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler.start()
    t0 = time.time()
    p = subprocess.run(argv, env={**os.environ, **env_extra}, capture_output=True, text=True)
    dt = time.time() - t0
    sampler.halt.set()
    sampler.join()
    c1, s1 = cpu_ticks(tree), proc_stat_cpu()
    self1, kids1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"wrk failed ({p.returncode}): {p.stderr}")
    r = parse_wrk(p.stdout)
    server_s = (c1 - c0) / TCK
    wrk_s = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    self_s = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
    busy_s = (s1[0] - s0[0]) / TCK
    r.update({
        "wall_s": round(dt, 2),
        "server_cpu_pct": round(100 * server_s / dt, 1),  # of one core
        "server_cpu_us_per_req": round(1e6 * server_s / max(1, r["requests"]), 1),
        "wrk_cpu_pct": round(100 * wrk_s / dt, 1),
        "machine_busy_pct": round(100 * busy_s / dt, 1),  # out of 100 x cores
        "foreign_pct": round(100 * (busy_s - server_s - wrk_s - self_s) / dt, 1),
        "steal_pct": round(100 * (s1[1] - s0[1]) / TCK / dt, 1),
        "irq_pct": round(100 * (s1[2] - s0[2]) / TCK / dt, 1),
        "rss_peak_mb": round(sampler.peak_kb / 1024, 1),
        "hwm_mb": round(status_kb(tree, "VmHWM") / 1024, 1),
    })
    return r


def bench_endpoint(target, server, endpoint, env_extra):
    def one_try(tries):
        quiet = wait_quiet(CFG["quiet_timeout"])
        tag = f"{target}-{endpoint}-{tries}-{int(time.time())}".replace("_", "-").lower()
        r = wrk_once(server, endpoint, {**env_extra, "BENCH_TAG": tag})
        record = {"kind": "wrk", "target": target, "endpoint": endpoint, "quiet_before": quiet}
        return record, r, f"cpu {r['server_cpu_pct']}% wrk {r['wrk_cpu_pct']}%"

    repeat_runs(CFG["runs"], f"{target} {endpoint}", one_try)


# ---------------------------------------------------------------- target setup

def make_user(port, email, password):
    body = json.dumps({"email": email, "password": password, "returnSecureToken": True})
    status, raw = http_call(port, "POST", f"/identitytoolkit.googleapis.com/v1/accounts:signUp?key={API_KEY}", body)
    if status != 200:
        raise SystemExit(f"creating the benchmark user failed: {status} {raw[:300]!r}")
    j = json.loads(raw)
    return j["idToken"], j["refreshToken"]


def smoke(target, port, env):
    """One request per endpoint, as the Lua scripts send it; records the status."""
    it = "/identitytoolkit.googleapis.com/v1/accounts:{}?key=" + API_KEY
    reqs = {
        "signup": (it.format("signUp"), json.dumps({"email": f"smoke-{int(time.time() * 1000)}@bench.test",
                                                     "password": "secret123", "returnSecureToken": True}),
                   "application/json"),
        "signin": (it.format("signInWithPassword"), json.dumps({"email": env["BENCH_EMAIL"],
                                                                 "password": env["BENCH_PASSWORD"],
                                                                 "returnSecureToken": True}), "application/json"),
        "refresh": (f"/securetoken.googleapis.com/v1/token?key={API_KEY}",
                    "grant_type=refresh_token&refresh_token=" + env["BENCH_REFRESH_TOKEN_FORM"],
                    "application/x-www-form-urlencoded"),
        "lookup": (it.format("lookup"), json.dumps({"idToken": env["BENCH_ID_TOKEN"]}), "application/json"),
    }
    out = {}
    for ep, (path, body, ctype) in reqs.items():
        status, raw = http_call(port, "POST", path, body, ctype)
        out[ep] = status
        if status != 200:
            say(f"  WARNING {target} {ep}: HTTP {status}: {raw[:300]!r}")
    emit({"kind": "smoke", "target": target, "status": out})


def bench_target(target, server, scratch, endpoints=ENDPOINTS):
    server.start()
    try:
        ready = server.wait_ready(180)
        emit({"kind": "ready", "target": target, "purpose": "load instance", "seconds": round(ready, 4)})
        say(f"  {target} ready in {ready:.3f} s")
        time.sleep(2)
        tree = proc_tree(server.proc.pid)
        idle = status_kb(tree, "VmRSS") / 1024
        emit({"kind": "idle_rss", "target": target, "mb": round(idle, 1), "processes": len(tree)})
        say(f"  {target} idle RSS {idle:.1f} MB")
        email = f"signin-{int(time.time())}@bench.test"
        id_token, refresh = make_user(server.port, email, "secret123")
        env = {"BENCH_EMAIL": email, "BENCH_PASSWORD": "secret123", "BENCH_ID_TOKEN": id_token,
               "BENCH_REFRESH_TOKEN_FORM": urllib.parse.quote(refresh, safe="")}
        smoke(target, server.port, env)
        for ep in endpoints:
            bench_endpoint(target, server, ep, env)
        tree = proc_tree(server.proc.pid)
        emit({"kind": "end_rss", "target": target, "rss_mb": round(status_kb(tree, "VmRSS") / 1024, 1),
              "hwm_mb": round(status_kb(tree, "VmHWM") / 1024, 1)})
    finally:
        server.stop()


def ready_series(args, scratch):
    for i in range(CFG["ready_runs"]):
        wait_quiet(min(60, CFG["quiet_timeout"]))
        s = gatehouse_server(args, scratch, f"ready{i + 1}")
        s.start()
        try:
            sec = s.wait_ready(30)
        finally:
            s.stop()
        emit({"kind": "ready", "target": "gatehouse-sqlite", "purpose": "fresh data dir", "run": i + 1,
              "seconds": round(sec, 4)})
        say(f"  gatehouse ready run {i + 1}: {1000 * sec:.1f} ms")


def hash_rate(args):
    wait_quiet(CFG["quiet_timeout"])
    p = subprocess.run([args.hash_rate, str(CFG["hash_secs"])], capture_output=True, text=True, check=True)
    rec = {"kind": "hash_rate", "output": p.stdout.strip()}
    for key, name in (("hash_per_s", "argon2id hash"), ("verify_per_s", "argon2id verify")):
        m = re.search(rf"{name}: ([\d.]+)/s", p.stdout)
        rec[key] = float(m.group(1)) if m else None
    emit(rec)
    say("  " + p.stdout.strip().replace("\n", "\n  "))


def meta(args):
    fb_pkg = os.path.join(args.fb_dir, "node_modules", "firebase-tools", "package.json")
    fb_version = json.load(open(fb_pkg))["version"] if os.path.exists(fb_pkg) else None
    return {
        **machine_meta(),
        "gatehouse_bin": os.path.relpath(args.gatehouse, ROOT),
        "gatehouse_bin_mtime": utc_mtime(args.gatehouse),
        "node": command_output(["node", "--version"]), "firebase_tools": fb_version,
        "postgres": bool(args.pg_url), "config": CFG,
        "command": "bench/identity/run.sh",
    }


def cmd_run(args):
    scratch = start_run(args.results, args.scratch)
    try:
        emit(meta(args))
        say(f"results: {args.results}\nscratch: {scratch}")
        say("waiting for a quiet machine (no compiler running)")
        emit({"kind": "builds", **wait_for_builds(CFG["build_wait"])})
        say("hash rate (target/release/examples/hash_rate)")
        hash_rate(args)
        say(f"gatehouse ready time x{CFG['ready_runs']}")
        ready_series(args, scratch)
        say("gatehouse (SQLite) under load")
        bench_target("gatehouse-sqlite", gatehouse_server(args, scratch, "load"), scratch)
        say("gatehouse (SQLite), accounts:lookup only, in a fresh process (memory without prior hashing)")
        bench_target(FRESH, gatehouse_server(args, scratch, "lookup-only"), scratch, ["lookup"])
        if args.pg_url:
            say("gatehouse (PostgreSQL) under load")
            bench_target("gatehouse-pg", gatehouse_server(args, scratch, "pg", args.pg_url), scratch)
        if not args.skip_emulator:
            say("Firebase Auth emulator under load")
            bench_target("emulator", emulator_server(args, scratch), scratch)
        emit({"kind": "done"})
    finally:
        stop_all()
        close_results()
        for d in os.listdir(scratch):
            if d.startswith("data-"):
                shutil.rmtree(os.path.join(scratch, d), ignore_errors=True)
    print(report(args.results, args.docs))


# ---------------------------------------------------------------- report

def summarize(recs, target, endpoint):
    runs = [r for r in recs if r["kind"] == "wrk" and r["target"] == target and r["endpoint"] == endpoint
            and not r["discarded"]]
    if not runs:
        return None
    med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
    return {
        "rps": med("rps"), "p50": med("p50_ms"), "p99": med("p99_ms"), "cpu": med("server_cpu_pct"),
        "us": med("server_cpu_us_per_req"), "wrk_cpu": med("wrk_cpu_pct"),
        "non2xx": sum(r["non2xx"] for r in runs), "requests": sum(r["requests"] for r in runs),
        "timeouts": sum(r["socket_errors"].get("timeout", 0) for r in runs),
        "errors": sum(v for r in runs for k, v in r["socket_errors"].items() if k != "timeout"),
        "rss": max(r["rss_peak_mb"] for r in runs), "each": [r["rps"] for r in runs],
        "discarded": sum(1 for r in recs if r["kind"] == "wrk" and r["target"] == target
                         and r["endpoint"] == endpoint and r["discarded"]),
        "quiet": all(r["quiet_before"] for r in runs),
    }


def fmt_rps(x):
    return f"{x:,.0f}" if x is not None else "–"


def fmt_ms(x):
    if x is None:
        return "–"
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:,.0f}"


def fmt_mb(x):
    return "–" if x is None else f"{x:.1f} MB"


def report(path, docs_path=None):
    recs = load(path)
    meta_r = next(r for r in recs if r["kind"] == "meta")
    hr = next((r for r in recs if r["kind"] == "hash_rate"), {})
    builds = next((r for r in recs if r["kind"] == "builds"), {})
    gh_targets = [t for t in ("gatehouse-sqlite", "gatehouse-pg") if any(r.get("target") == t for r in recs)]
    S = {(t, e): summarize(recs, t, e) for t in gh_targets + [FRESH, "emulator"] for e in ENDPOINTS}
    ready_gh = [r["seconds"] for r in recs if r["kind"] == "ready" and r.get("purpose") == "fresh data dir"]
    ready_fb = [r["seconds"] for r in recs if r["kind"] == "ready" and r["target"] == "emulator"]
    idle = {r["target"]: r["mb"] for r in recs if r["kind"] == "idle_rss"}
    cfg = meta_r["config"]
    L = []
    L.append("# Benchmarks: identity server")
    L.append("")
    L.append(f"Date: {meta_r['date_utc']}. Machine: {meta_r['nproc']} cores ({meta_r['cpu_model']}), "
             f"{meta_r['mem_gib']} GiB RAM, Linux {meta_r['kernel']}. Gatehouse: `{meta_r['gatehouse_bin']}` built "
             f"{meta_r['gatehouse_bin_mtime']} (repository at {meta_r['git_rev']} when measured), Firebase Auth emulator from firebase-tools "
             f"{meta_r['firebase_tools'] or '–'} on Node {meta_r['node']}, {meta_r['wrk'].split(' Copyright')[0]}.")
    L.append("")
    L.append("Command: `bench/identity/run.sh` (raw figures: "
             f"`bench/identity/results/{os.path.basename(path)}`).")
    L.append("")
    L.append(f"Method: each endpoint gets `wrk -t{cfg['threads']} -c{cfg['connections']} -d{cfg['duration']} "
             f"--latency` {cfg['runs']} times against one server at a time on 127.0.0.1; the table shows the "
             "median req/s and the medians of the per-run p50/p99. Gatehouse runs with `--rate-limits off` and "
             "a fresh SQLite data dir; the emulator with `--only auth`. Both serve the same Lua-generated requests "
             "(`bench/identity/lua/`): sign-up with a new e-mail per request, sign-in / refresh / lookup for one "
             "user. wrk, the server and everything else share the same cores. A run during which processes outside "
             f"the test used more than {FOREIGN_MAX:.0f} % of a core is discarded and repeated.")
    L.append("")
    for t in gh_targets:
        name = "Gatehouse (SQLite)" if t == "gatehouse-sqlite" else "Gatehouse (PostgreSQL)"
        L.append(f"## {name} vs Firebase Auth emulator")
        L.append("")
        L.append("| endpoint | gatehouse req/s | p50 ms | p99 ms | emulator req/s | p50 ms | p99 ms | "
                 "ratio gatehouse / emulator |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for e in ENDPOINTS:
            g, f = S[(t, e)], S[("emulator", e)]
            ratio = f"{g['rps'] / f['rps']:.2f}×" if g and f else "–"
            L.append(f"| {LABEL[e]} | {fmt_rps(g and g['rps'])} | {fmt_ms(g and g['p50'])} | "
                     f"{fmt_ms(g and g['p99'])} | {fmt_rps(f and f['rps'])} | {fmt_ms(f and f['p50'])} | "
                     f"{fmt_ms(f and f['p99'])} | {ratio} |")
        L.append("")
    # targets
    t = gh_targets[0] if gh_targets else None
    ratio = lambda e: (S[(t, e)]["rps"] / S[("emulator", e)]["rps"]  # noqa: E731
                       if t and S[(t, e)] and S[("emulator", e)] else None)
    hash_s, verify_s = hr.get("hash_per_s"), hr.get("verify_per_s")
    rg = statistics.median(ready_gh) if ready_gh else None
    lookup_rss = S[(t, "lookup")]["rss"] if t and S[(t, "lookup")] else None
    all_rss = max((S[(t, e)]["rss"] for e in ENDPOINTS if t and S[(t, e)]), default=None)
    fresh_rss = S[(FRESH, "lookup")]["rss"] if S[(FRESH, "lookup")] else None
    L.append("## Targets (issue #2)")
    L.append("")
    L.append("| target | measured | result |")
    L.append("|---|---|---|")
    r = ratio("lookup")
    L.append(f"| `accounts:lookup` ≥ 10× emulator | {r:.2f}× ({fmt_rps(S[(t, 'lookup')]['rps'])} vs "
             f"{fmt_rps(S[('emulator', 'lookup')]['rps'])} req/s) | {pf(r >= 10)} |" if r is not None
             else "| `accounts:lookup` ≥ 10× emulator | – | n/a |")
    r = ratio("refresh")
    L.append(f"| token refresh ≥ 2.5× emulator | {r:.2f}× ({fmt_rps(S[(t, 'refresh')]['rps'])} vs "
             f"{fmt_rps(S[('emulator', 'refresh')]['rps'])} req/s) | {pf(r >= 2.5)} |" if r is not None
             else "| token refresh ≥ 2.5× emulator | – | n/a |")
    # "Bound by the password hash": the server's cores are saturated and most of its CPU time per
    # request is the hash itself (CPU µs of one hash alone / server CPU µs per request).
    ncpu = meta_r.get("nproc") or 2
    for e, rate, what in (("signin", verify_s, "verifies"), ("signup", hash_s, "hashes")):
        g = S[(t, e)] if t else None
        if g and rate:
            hash_us = ncpu * 1e6 / rate
            share = hash_us / g["us"] if g["us"] else 0
            saturated = g["cpu"] >= 90 * ncpu
            L.append(f"| {'sign-in' if e == 'signin' else 'sign-up'} bound by the password hash "
                     f"(CPU saturated, hash ≥ 70 % of CPU per request) | {fmt_rps(g['rps'])} req/s vs {rate:,.1f} {what}/s alone; "
                     f"CPU {g['cpu']:.0f} %; hash {hash_us / 1000:.1f} ms of {g['us'] / 1000:.1f} ms CPU per request = {100 * share:.0f} % "
                     f"| {pf(saturated and share >= 0.7)} |")
        else:
            L.append(f"| {e} bound by the password hash | – | n/a |")
    L.append(f"| peak RSS under `accounts:lookup` load < 50 MB, fresh process (lookup load only) | "
             f"{fmt_mb(fresh_rss)} | {pf(fresh_rss < 50 if fresh_rss is not None else None)} |")
    L.append(f"| peak RSS under `accounts:lookup` load < 50 MB, same process after the sign-up / sign-in runs | "
             f"{fmt_mb(lookup_rss)} | {pf(lookup_rss < 50 if lookup_rss is not None else None)} |")
    L.append(f"| peak RSS under any of the four loads < 50 MB | {fmt_mb(all_rss)} | "
             f"{pf(all_rss < 50 if all_rss is not None else None)} |")
    L.append(f"| ready (exec → `/healthz` 200, fresh data dir) < 1 s | median {1000 * rg:.0f} ms of "
             f"{len(ready_gh)} | {pf(rg < 1)} |" if rg is not None else "| ready < 1 s | – | n/a |")
    L.append("")
    L.append("## Details")
    L.append("")
    L.append("| target | endpoint | req/s per run | server CPU % of a core | server CPU µs/req | wrk CPU % | "
             "peak RSS MB | non-2xx | timeouts / socket errors | discarded runs |")
    L.append("|---|---|---|---:|---:|---:|---:|---:|---|---:|")
    for tt in gh_targets + [FRESH, "emulator"]:
        for e in ENDPOINTS:
            s = S[(tt, e)]
            if not s:
                continue
            L.append(f"| {tt} | {e} | {' / '.join(f'{x:,.0f}' for x in s['each'])} | {s['cpu']:.0f} | "
                     f"{s['us']:,.0f} | {s['wrk_cpu']:.0f} | {s['rss']:.1f} | {s['non2xx']} of "
                     f"{s['requests']:,} | {s['timeouts']} / {s['errors']} | {s['discarded']} |")
    L.append("")
    extra = []
    if ready_gh:
        extra.append("Gatehouse ready times (ms): " + ", ".join(f"{1000 * x:.0f}" for x in ready_gh) + ".")
    if ready_fb:
        extra.append(f"Emulator ready time (exec → `GET /` 200): {ready_fb[0]:.1f} s.")
    if idle:
        extra.append("Idle RSS after start: " + ", ".join(f"{k} {v} MB" for k, v in idle.items()) + ".")
    quiet = builds.get("quiet", True) and all(
        s["quiet"] for s in S.values() if s) and not any(s["discarded"] for s in S.values() if s)
    extra.append("Machine quiet during the measured runs: " + ("yes." if quiet else
                 f"no (compilers seen before start: {builds.get('build_seen')}, waited {builds.get('waited_s')} s; "
                 "see discarded runs)."))
    L.append(" ".join(extra))
    L.append("")
    if hr:
        L.append(f"Password hashing alone (`target/release/examples/hash_rate {cfg['hash_secs']}`, all cores):")
        L.append("")
        L.append("```")
        L.append(hr["output"])
        L.append("```")
        L.append("")
    L.append("The emulator stores passwords unhashed and issues unsigned tokens, so its sign-up, sign-in and "
             "refresh figures contain no cryptography; Gatehouse's contain an argon2id hash or verify "
             "(12 MiB, t=3) per sign-up / sign-in and an RS256 signature per issued ID token.")
    text = "\n".join(L) + "\n"
    if docs_path:
        # The identity part is the top of the file; other components' sections ("## Gateway",
        # "## IAM", ...) follow and are kept as they are.
        rest = ""
        if os.path.exists(docs_path):
            old = open(docs_path).read()
            cut = [i for i in (old.find("\n## Gateway"), old.find("\n## IAM")) if i >= 0]
            if cut:
                rest = old[min(cut):]
        with open(docs_path, "w") as fh:
            fh.write(text.rstrip("\n") + "\n" + rest)
    return text


def main():
    def run_args(r):
        r.add_argument("--hash-rate", default=os.path.join(ROOT, "target", "release", "examples", "hash_rate"))
        r.add_argument("--fb-dir", required=True)
        r.add_argument("--scratch", required=True)
        r.add_argument("--pg-url", default=os.environ.get("GATEHOUSE_BENCH_PG_URL"))
        r.add_argument("--skip-emulator", action="store_true")
    cli(cmd_run, report, run_args)


if __name__ == "__main__":
    main()
