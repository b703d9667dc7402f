#!/usr/bin/env python3
"""Benchmark driver for `gatehouse gateway` against nginx and HAProxy + JWT (run.sh calls it).

  bench.py run     --results FILE --scratch DIR [--docs FILE]   measure, append JSON lines to FILE
  bench.py report  FILE [--docs FILE]                           print the Markdown section (and
                                                                 replace "## Gateway" in the doc)

Series (each `wrk -t1 -c64 -d10s --latency`, 3 runs, median):
  a   nginx backend, directly                 b   nginx reverse proxy, no auth
  c   HAProxy + RS256 jwt_verify, valid token
  g0  gateway, no-auth route /open            g1  gateway, valid token (verified-token cache hit)
  g2  gateway, token signed by another key    g3  gateway, a different valid token per request
  g3c control for g3: the same Lua script with a one-token list (cache hit)
  g1m g1 with the gateway's default thread count (gateway::default_threads: one per core, one core left free up to 4 cores); every other g series runs the
      gateway with --threads 1, as the peers run one nginx worker / one HAProxy thread

One nginx backend (same config as the peer benchmark) runs throughout; every proxy is started
for its own series and stopped after it, so only one target is ever under load. Servers run in
their own process group and are stopped by killing that group. Only 127.0.0.1; every load run is
a bounded `wrk -d`. CPU and memory come from /proc (utime+stime of each process tree, VmRSS
sampled every 100 ms during each run, VmHWM at the end).
"""

import base64
import http.client
import json
import os
import platform
import re
import resource
import secrets
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))

sys.path.insert(0, os.path.dirname(HERE))
from common import (  # noqa: E402
    TCK, RssSampler, Server, FOREIGN_MAX, ToolWait, cli, close_results, command_output, cpu_ticks, emit, env_int,
    ksoftirqd_pids, load, machine_meta, open_results, parse_wrk, pf, port_open, proc_stat_cpu, proc_tree,
    repeat_runs, request, start_run,
    say, status_kb, stop_all, utc_mtime, wait_quiet, write_section as _write_section,
)

ISS = "https://issuer.peerbench.test/"  # as the peer tokens (bench-peers/mint_jwt.py)
AUD = "peerbench-api"
KID = "bench-key-1"
TOKEN_CACHE_MAX = 10_000  # crates/gateway/src/auth.rs
# Medians from /work/shared/bench-peers/README.md (2026-11-21), same series and method.
PEER_README = {"a": 135_147, "b": 62_488, "c": 21_717}


BASE = env_int("BENCH_PORT_BASE", 18180)
CFG = {
    "runs": env_int("BENCH_RUNS", 3),
    "duration": os.environ.get("BENCH_DURATION", "10s"),
    "connections": env_int("BENCH_CONNECTIONS", 64),
    "threads": env_int("BENCH_THREADS", 1),
    "tokens": env_int("BENCH_TOKENS", 20_000),
    "quiet_timeout": env_int("BENCH_QUIET_TIMEOUT", 300),
    "build_wait": env_int("BENCH_BUILD_WAIT", 1500),
    "ports": {"backend": BASE + 1, "nginx_proxy": BASE + 2, "haproxy_jwt": BASE + 4, "jwks": BASE + 9,
              "gateway": BASE + 10, "gateway_admin": BASE + 11},
    "only": [s for s in os.environ.get("BENCH_ONLY", "").split(",") if s],
    "log": "GATEHOUSE_LOG=warn",
}
P = CFG["ports"]

# id, label, target (which server is loaded), how the request is made
SERIES = [
    ("a", "nginx backend, directly (wrk → nginx)", "backend", {"path": "/"}),
    ("b", "nginx 1 worker reverse proxy, no auth, upstream keep-alive", "nginx_proxy", {"path": "/"}),
    ("c", "HAProxy nbthread 1 + RS256 `jwt_verify` + alg/iss/aud/exp checks, valid token", "haproxy_jwt",
     {"path": "/", "token": "valid"}),
    ("g0", "Gatehouse gateway, no-auth operation (`/open`, `security: []`)", "gateway", {"path": "/open"}),
    ("g1", "Gatehouse gateway, valid token (verified-token cache hit)", "gateway", {"path": "/", "token": "valid"}),
    ("g2", "Gatehouse gateway, token signed by another key (every request 401)", "gateway",
     {"path": "/", "token": "other_key"}),
    ("g3", f"Gatehouse gateway, a different valid token on every request (uncached verification)", "gateway",
     {"lua": "distinct"}),
    ("g3c", "control for g3: same Lua script, one-token list (cache hit)", "gateway", {"lua": "single"}),
    ("g1m", "Gatehouse gateway, valid token, default threads (gateway::default_threads: 1 on 2 cores)", "gateway",
     {"path": "/", "token": "valid", "threads": 0}),
]
LABEL = {s[0]: s[1] for s in SERIES}

# ---------------------------------------------------------------- keys, tokens, configs

def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def mint(work, n_distinct):
    """Key pair, the peer benchmark's test tokens, n_distinct distinct valid tokens, the JWKS."""
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key()
    open(os.path.join(work, "privkey.pem"), "wb").write(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    open(os.path.join(work, "pubkey.pem"), "wb").write(pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    nums = pub.public_numbers()
    i2b = lambda i: b64u(i.to_bytes((i.bit_length() + 7) // 8, "big"))  # noqa: E731
    jwks = {"keys": [{"kty": "RSA", "kid": KID, "use": "sig", "alg": "RS256", "n": i2b(nums.n), "e": i2b(nums.e)}]}
    json.dump(jwks, open(os.path.join(work, "jwks.json"), "w"), indent=1)

    now = int(time.time())
    base = {"iss": ISS, "aud": AUD, "sub": "user-123", "iat": now, "exp": now + 30 * 24 * 3600}
    hdr = {"kid": KID}
    enc = lambda claims, k=key: jwt.encode(claims, k, algorithm="RS256", headers=hdr)  # noqa: E731
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    js = lambda d: b64u(json.dumps(d, separators=(",", ":")).encode())  # noqa: E731
    toks = {
        "valid": enc(base),
        "expired": enc({**base, "exp": now - 3600}),  # beyond the gateway's 60 s skew
        "wrong_aud": enc({**base, "aud": "other-api"}),
        "wrong_iss": enc({**base, "iss": "https://evil.test/"}),
        "other_key": enc(base, other),
        "alg_none": js({"alg": "none", "typ": "JWT"}) + "." + js(base) + ".",
    }
    v = toks["valid"].split(".")
    toks["tampered"] = v[0] + "." + js({**base, "sub": "admin"}) + "." + v[2]
    os.makedirs(os.path.join(work, "tokens"), exist_ok=True)
    for k, t in toks.items():
        open(os.path.join(work, "tokens", f"{k}.jwt"), "w").write(t)
    t0 = time.time()
    with open(os.path.join(work, "tokens", "distinct.txt"), "w") as fh:
        for i in range(n_distinct):
            fh.write(enc({**base, "sub": f"user-{i}", "jti": secrets.token_hex(8)}) + "\n")
    open(os.path.join(work, "tokens", "single.txt"), "w").write(toks["valid"] + "\n")
    distinct = len(set(open(os.path.join(work, "tokens", "distinct.txt")).read().split()))
    return {"kind": "tokens", "distinct": distinct, "mint_s": round(time.time() - t0, 1),
            "valid_len": len(toks["valid"]), "pyjwt": jwt.__version__}


NGINX_COMMON = """worker_processes 1;
daemon off;
pid logs/nginx.pid;
error_log logs/error.log warn;
events {
    worker_connections 4096;
    use epoll;
}
"""
NGINX_HTTP_COMMON = """    access_log off;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    keepalive_timeout 65s;
    keepalive_requests 10000000;   # never close a client keep-alive connection during a run
"""


def write_configs(work):
    # nginx backend: every path answers 200 "ok" (so the gateway's / and /open both reach it).
    for name, server in (
        ("nginx-backend", f"""    server {{
        listen 127.0.0.1:{P['backend']} backlog=4096;
        location / {{
            default_type text/plain;
            return 200 "ok";
        }}
    }}
"""),
        ("nginx-proxy", f"""    upstream backend {{
        server 127.0.0.1:{P['backend']};
        keepalive 128;               # idle keep-alive connections kept to the backend
        keepalive_requests 10000000;
    }}
    server {{
        listen 127.0.0.1:{P['nginx_proxy']} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
        }}
    }}
""")):
        d = os.path.join(work, name)
        for sub in ("conf", "logs", "tmp"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        open(os.path.join(d, "conf", "nginx.conf"), "w").write(
            NGINX_COMMON + "http {\n" + NGINX_HTTP_COMMON + server + "}\n")

    pubkey = os.path.join(work, "pubkey.pem")
    open(os.path.join(work, "haproxy-jwt.cfg"), "w").write(f"""global
    nbthread 1
    maxconn 8000
    log stderr format short local0 err

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
    option http-keep-alive
    http-reuse safe

frontend fe_jwt
    bind 127.0.0.1:{P['haproxy_jwt']}
    http-request deny status 401 content-type text/plain string "missing bearer" unless {{ req.hdr(authorization) -m beg "Bearer " }}
    http-request set-var(txn.bearer) req.hdr(authorization),word(2,' ')
    http-request set-var(txn.jwt_alg) var(txn.bearer),jwt_header_query('$.alg')
    http-request deny status 401 content-type text/plain string "bad alg" unless {{ var(txn.jwt_alg) -m str RS256 }}
    http-request deny status 401 content-type text/plain string "bad signature" unless {{ var(txn.bearer),jwt_verify(txn.jwt_alg,"{pubkey}") -m int 1 }}
    http-request set-var(txn.jwt_iss) var(txn.bearer),jwt_payload_query('$.iss')
    http-request set-var(txn.jwt_aud) var(txn.bearer),jwt_payload_query('$.aud')
    http-request set-var(txn.jwt_exp) var(txn.bearer),jwt_payload_query('$.exp','int')
    http-request set-var(txn.now) date()
    http-request deny status 401 content-type text/plain string "bad iss" unless {{ var(txn.jwt_iss) -m str {ISS} }}
    http-request deny status 401 content-type text/plain string "bad aud" unless {{ var(txn.jwt_aud) -m str {AUD} }}
    http-request deny status 401 content-type text/plain string "expired" if {{ var(txn.jwt_exp),sub(txn.now) -m int lt 0 }}
    default_backend be_ok

backend be_ok
    server ok1 127.0.0.1:{P['backend']} maxconn 1000
""")

    open(os.path.join(work, "gateway.yaml"), "w").write(f"""swagger: "2.0"
info: {{title: bench, version: 1.0.0}}
host: bench.example
x-google-backend:
  address: http://127.0.0.1:{P['backend']}
securityDefinitions:
  jwt:
    type: oauth2
    flow: implicit
    authorizationUrl: ""
    x-google-issuer: "{ISS}"
    x-google-jwks_uri: "http://127.0.0.1:{P['jwks']}/jwks.json"
    x-google-audiences: "{AUD}"
security:
  - jwt: []
paths:
  /:
    get:
      operationId: root
  /open:
    get: {{operationId: open, security: []}}
""")


# ---------------------------------------------------------------- servers

def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    env.update(extra or {})
    return env


def make_server(kind, work, gatehouse, how=None):
    if kind in ("backend", "nginx_proxy"):
        d = os.path.join(work, "nginx-backend" if kind == "backend" else "nginx-proxy")
        argv = ["nginx", "-p", d + "/", "-e", "logs/error.log", "-c", "conf/nginx.conf"]
        return Server(kind, argv, d, clean_env(), os.path.join(d, "logs", "stdout.log"), P[kind], "/")
    if kind == "haproxy_jwt":
        argv = ["haproxy", "-db", "-f", os.path.join(work, "haproxy-jwt.cfg")]
        return Server(kind, argv, work, clean_env(), os.path.join(work, "haproxy.log"), P[kind], "/")
    if kind == "jwks":
        argv = [sys.executable, os.path.join(HERE, "jwks_server.py"), str(P["jwks"]), os.path.join(work, "jwks.json")]
        return Server(kind, argv, work, clean_env(), os.path.join(work, "jwks.log"), P[kind], "/jwks.json")
    if kind == "gateway":
        argv = [gatehouse, "gateway", "--config", os.path.join(work, "gateway.yaml"),
                "--listen", f"127.0.0.1:{P['gateway']}", "--admin-listen", f"127.0.0.1:{P['gateway_admin']}"]
        # One serving thread, as the peers run one worker (nginx) / one thread (HAProxy);
        # threads 0 = the default, gateway::default_threads.
        threads = (how or {}).get("threads", 1)
        if threads:
            argv += ["--threads", str(threads)]
        # warn: no per-request access-log line (info) during the load runs
        return Server(kind, argv, work, clean_env({"GATEHOUSE_LOG": "warn"}), os.path.join(work, "gateway.log"),
                      P[kind], "/open", extra_ports=(P["gateway_admin"],))
    raise ValueError(kind)


def status(port, path, headers=None, timeout=5):
    return request(port, "GET", path, headers=headers, timeout=timeout)


def start(server, timeout=30):
    """Start and wait until it answers: seconds from exec to the first HTTP answer
    (for the gateway: GET /open answered 200 through to the backend)."""
    server.start()
    end = server.t0 + timeout
    while time.perf_counter() < end:
        if server.proc.poll() is not None:
            raise SystemExit(f"{server.name} exited with {server.proc.returncode}; see {server.log_path}")
        try:
            st, _ = status(server.port, server.ready_path, timeout=2)
            if server.name != "gateway" or st == 200:
                return time.perf_counter() - server.t0
        except OSError:
            pass
        time.sleep(0.005)
    raise SystemExit(f"{server.name} not ready after {timeout}s; see {server.log_path}")


# ---------------------------------------------------------------- wrk

def wrk_once(sid, loaded, backend, how, work, token_start):
    url = f"http://127.0.0.1:{loaded.port}{how.get('path', '/')}"
    argv = ["wrk", f"-t{CFG['threads']}", f"-c{CFG['connections']}", f"-d{CFG['duration']}", "--latency"]
    env = dict(os.environ)
    if "token" in how:
        tok = open(os.path.join(work, "tokens", how["token"] + ".jwt")).read().strip()
        argv += ["-H", f"Authorization: Bearer {tok}"]
    if "lua" in how:
        argv += ["-s", os.path.join(HERE, "lua", "distinct_tokens.lua")]
        env["BENCH_TOKENS_FILE"] = os.path.join(work, "tokens", f"{how['lua']}.txt")
        env["BENCH_TOKEN_START"] = str(token_start)
    argv.append(url)
    tree = proc_tree(loaded.proc.pid)
    btree = [] if backend is loaded else proc_tree(backend.proc.pid)
    ksoft = ksoftirqd_pids()
    sampler = RssSampler(tree)
    c0, b0, k0, s0 = cpu_ticks(tree), cpu_ticks(btree), cpu_ticks(ksoft), proc_stat_cpu()
    self0, kids0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler.start()
    t0 = time.time()
    dur = float(re.sub(r"[a-z]+$", "", CFG["duration"])) * {"s": 1, "m": 60}.get(CFG["duration"][-1], 1)
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=dur + 60)
    dt = time.time() - t0
    sampler.halt.set()
    sampler.join()
    c1, b1, k1, s1 = cpu_ticks(tree), cpu_ticks(btree), cpu_ticks(ksoft), proc_stat_cpu()
    self1, kids1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"wrk failed ({p.returncode}): {p.stderr}")
    r = parse_wrk(p.stdout)
    srv_s, back_s = (c1 - c0) / TCK, (b1 - b0) / TCK
    wrk_s = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    self_s = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
    # Machine busy time includes irq + softirq: with tick accounting a task's stime includes the
    # softirq ticks that hit while it ran (loopback TCP), while /proc/stat books them as softirq.
    busy_s = ((s1[0] + s1[2]) - (s0[0] + s0[2])) / TCK
    ksoft_s = (k1 - k0) / TCK
    r.update({
        "wall_s": round(dt, 2),
        "server_cpu_pct": round(100 * srv_s / dt, 1),  # of one core
        "server_cpu_us_per_req": round(1e6 * srv_s / max(1, r["requests"]), 1),
        "backend_cpu_pct": round(100 * back_s / dt, 1) if btree else None,
        "wrk_cpu_pct": round(100 * wrk_s / dt, 1),
        "machine_busy_pct": round(100 * busy_s / dt, 1),  # out of 100 x cores
        "ksoftirqd_pct": round(100 * ksoft_s / dt, 1),
        "irq_pct": round(100 * (s1[2] - s0[2]) / TCK / dt, 1),
        "foreign_pct": round(100 * (busy_s - srv_s - back_s - wrk_s - self_s - ksoft_s) / dt, 1),
        "steal_pct": round(100 * (s1[1] - s0[1]) / TCK / dt, 1),
        "rss_peak_mb": round(sampler.peak_kb / 1024, 1),
        "hwm_mb": round(status_kb(tree, "VmHWM") / 1024, 1),
    })
    return r, p.stdout


def run_series(sid, loaded, backend, how, work, tools):
    token_start = 0

    def one_try(tries):
        nonlocal token_start
        tools.wait()
        quiet = wait_quiet(CFG["quiet_timeout"])
        r, text = wrk_once(sid, loaded, backend, how, work, token_start)
        first_token, token_start = token_start, token_start + r["requests"]
        if tries == 1:
            open(os.path.join(work, f"wrk-{sid}.txt"), "w").write(text)
        record = {"kind": "wrk", "series": sid, "target": loaded.name, "quiet_before": quiet,
                  "token_start": first_token if "lua" in how else None}
        cpu = (f"cpu {r['server_cpu_pct']}% ({r['server_cpu_us_per_req']} us/req) "
               f"backend {r['backend_cpu_pct']}% wrk {r['wrk_cpu_pct']}%")
        return record, r, cpu

    repeat_runs(CFG["runs"], sid, one_try, digits=3)


# ---------------------------------------------------------------- checks

CHECK_TOKENS = ["valid", "expired", "wrong_aud", "wrong_iss", "other_key", "alg_none", "tampered", None]


def rejection_check(target, port, work, path="/"):
    out = {}
    for name in CHECK_TOKENS:
        h = {}
        if name:
            h["Authorization"] = "Bearer " + open(os.path.join(work, "tokens", name + ".jwt")).read().strip()
        st, body = status(port, path, h)
        msg = body.decode(errors="replace").strip()
        try:
            msg = json.loads(msg).get("message", msg)
        except (ValueError, AttributeError):
            pass
        out[name or "no token"] = [st, msg[:80]]
    if target == "gateway":
        st, body = status(port, "/open")
        out["no token, /open"] = [st, body.decode(errors="replace").strip()[:80]]
        # one token of the uncached list (g3 runs in a fresh process, so this caches nothing there)
        last = open(os.path.join(work, "tokens", "distinct.txt")).read().split()[-1]
        st, _ = status(port, "/", {"Authorization": "Bearer " + last})
        out["distinct list (last entry)"] = [st, ""]
    emit({"kind": "check", "target": target, "status": out})
    say(f"  check {target}: " + ", ".join(f"{k}={v[0]}" for k, v in out.items()))
    return out


def scrape_metrics(series):
    try:
        st, body = status(P["gateway_admin"], "/metrics")
    except OSError as e:
        emit({"kind": "metrics", "series": series, "error": str(e)})
        return
    lines = [ln for ln in body.decode(errors="replace").splitlines()
             if ln.startswith(("gatehouse_gateway_requests_total", "gatehouse_gateway_auth_failures_total"))]
    emit({"kind": "metrics", "series": series, "http": st, "lines": lines})


def meta(args):
    def out(cmd):
        return command_output(cmd)

    return {
        **machine_meta(),
        "gatehouse_bin": os.path.relpath(args.gatehouse, ROOT),
        "gatehouse_bin_mtime": utc_mtime(args.gatehouse),
        "nginx": out(["nginx", "-v"]).replace("nginx version: ", ""),
        "haproxy": out(["haproxy", "-v"]).splitlines()[0] if out(["haproxy", "-v"]) else "",
        "openssl": out(["openssl", "version"]),
        "python": platform.python_version(),
        "config": CFG, "command": "bench/gateway/run.sh",
    }


# ---------------------------------------------------------------- run

def cmd_run(args):
    work = start_run(args.results, args.scratch)
    only = CFG["only"] or [s[0] for s in SERIES]
    if CFG["tokens"] <= TOKEN_CACHE_MAX:
        say(f"warning: BENCH_TOKENS={CFG['tokens']} does not exceed the gateway's token cache ({TOKEN_CACHE_MAX}); "
            "g3 would partly hit the cache")
    try:
        emit(meta(args))
        say(f"results: {args.results}\nscratch: {work}")
        say(f"minting {CFG['tokens']} distinct tokens (PyJWT, RS256)")
        rec = mint(work, CFG["tokens"])
        emit(rec)
        say(f"  {rec['distinct']} distinct tokens in {rec['mint_s']} s; one token is {rec['valid_len']} bytes")
        write_configs(work)
        p = subprocess.run([args.gatehouse, "gateway", "validate", os.path.join(work, "gateway.yaml")],
                           capture_output=True, text=True, env=clean_env())
        emit({"kind": "validate", "rc": p.returncode, "output": (p.stdout + p.stderr).strip()[-2000:]})
        if p.returncode != 0:
            raise SystemExit("gateway config rejected:\n" + p.stdout + p.stderr)
        tools = ToolWait(CFG["build_wait"])
        say("waiting for a machine without compilers / test runners")
        t0 = time.time()
        ok = tools.wait(settle=True)
        emit({"kind": "builds", "quiet": ok, "seen": sorted(tools.seen), "waited_s": round(time.time() - t0, 1)})

        backend = make_server("backend", work, args.gatehouse)
        emit({"kind": "ready", "target": "backend", "seconds": round(start(backend), 4)})
        for path in ("/", "/open"):
            emit({"kind": "check", "target": "backend", "path": path, "status": status(P["backend"], path)[0]})
        jwks = None
        for sid, label, kind, how in SERIES:
            if sid not in only:
                continue
            say(f"{sid}: {label}")
            loaded = backend
            if kind != "backend":
                if kind == "gateway" and jwks is None:
                    jwks = make_server("jwks", work, args.gatehouse)
                    start(jwks)
                loaded = make_server(kind, work, args.gatehouse, how)
                sec = start(loaded)
                emit({"kind": "ready", "target": kind, "series": sid, "seconds": round(sec, 4)})
                time.sleep(1)
                tree = proc_tree(loaded.proc.pid)
                emit({"kind": "idle_rss", "series": sid, "target": kind,
                      "mb": round(status_kb(tree, "VmRSS") / 1024, 1), "processes": len(tree)})
                if sid in ("c", "g1"):
                    rejection_check(kind, loaded.port, work)
            try:
                run_series(sid, loaded, backend, how, work, tools)
                if kind == "gateway":
                    scrape_metrics(sid)
                tree = proc_tree(loaded.proc.pid)
                emit({"kind": "end_rss", "series": sid, "rss_mb": round(status_kb(tree, "VmRSS") / 1024, 1),
                      "hwm_mb": round(status_kb(tree, "VmHWM") / 1024, 1)})
            finally:
                if loaded is not backend:
                    loaded.stop()
        emit({"kind": "done", "tool_wait_s": round(tools.waited, 1)})
    finally:
        stop_all()
        close_results()
        left = [p for p in P.values() if port_open(p)]
        if left:
            say(f"WARNING: ports still listening after stop: {left}")
    print(report(args.results, args.docs))


# ---------------------------------------------------------------- report

def summarize(recs, sid):
    runs = [r for r in recs if r["kind"] == "wrk" and r["series"] == sid and not r["discarded"]]
    if not runs:
        return None
    med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
    b = [r["backend_cpu_pct"] for r in runs if r.get("backend_cpu_pct") is not None]
    return {
        "rps": med("rps"), "p50": med("p50_ms"), "p99": med("p99_ms"), "cpu": med("server_cpu_pct"),
        "us": med("server_cpu_us_per_req"), "wrk_cpu": med("wrk_cpu_pct"),
        "backend_cpu": statistics.median(b) if b else None,
        "foreign": max(r["foreign_pct"] for r in runs),
        "busy": med("machine_busy_pct"),
        "non2xx": sum(r["non2xx"] for r in runs), "requests": sum(r["requests"] for r in runs),
        "timeouts": sum(r["socket_errors"].get("timeout", 0) for r in runs),
        "errors": sum(v for r in runs for k, v in r["socket_errors"].items() if k != "timeout"),
        "rss": max(r["rss_peak_mb"] for r in runs), "hwm": max(r["hwm_mb"] for r in runs),
        "each": [r["rps"] for r in runs],
        "discarded": sum(1 for r in recs if r["kind"] == "wrk" and r["series"] == sid and r["discarded"]),
        "quiet": all(r["quiet_before"] for r in runs),
    }


def fr(x):
    return "–" if x is None else f"{x:,.0f}"


def fm(x):
    return "–" if x is None else (f"{x:.2f}" if x < 10 else f"{x:.1f}")


def report(path, docs_path=None):
    recs = load(path)
    m = next(r for r in recs if r["kind"] == "meta")
    cfg = m["config"]
    tok = next((r for r in recs if r["kind"] == "tokens"), {})
    S = {s[0]: summarize(recs, s[0]) for s in SERIES}
    ready = [r["seconds"] for r in recs if r["kind"] == "ready" and r["target"] == "gateway"]
    idle = {r["series"]: r["mb"] for r in recs if r["kind"] == "idle_rss"}
    builds = next((r for r in recs if r["kind"] == "builds"), {})
    checks = {r["target"]: r["status"] for r in recs if r["kind"] == "check" and r["target"] in ("gateway", "haproxy_jwt")}
    metrics = {r["series"]: r.get("lines", []) for r in recs if r["kind"] == "metrics"}
    L = ["## Gateway", ""]
    L.append(f"Date: {m['date_utc']}. Machine: {m['nproc']} cores ({m['cpu_model']}), {m['mem_gib']} GiB RAM, "
             f"Linux {m['kernel']}. Gatehouse: `{m['gatehouse_bin']}` built {m['gatehouse_bin_mtime']} (repository at "
             f"{m['git_rev']} when measured; the harness does not build it). Peers: nginx {m['nginx'].split('/')[-1]}, "
             f"{m['haproxy'].split(' - ')[0]}, {m['openssl']}; load: {m['wrk']}; tokens: PyJWT {tok.get('pyjwt', '?')}.")
    L.append("")
    L.append(f"Command: `bench/gateway/run.sh` (raw figures: `bench/gateway/results/{os.path.basename(path)}`; "
             "method and files: `bench/gateway/README.md`).")
    L.append("")
    L.append(f"Method: the peer benchmark's method, in one run. Each series is `wrk -t{cfg['threads']} "
             f"-c{cfg['connections']} -d{cfg['duration']} --latency` × {cfg['runs']} against one target on 127.0.0.1; "
             "req/s is the median run, p50/p99 the medians of the per-run values. One nginx backend (1 worker, "
             "`return 200 \"ok\"` on every path) sits behind every proxy; each proxy is started for its own series "
             "and stopped after it. Tokens are RS256 (2048-bit key, `kid`, the peer tokens' iss/aud), minted with "
             "PyJWT before the run; the gateway fetches the public key as a JWKS from a small local HTTP server. "
             "The gateway runs with `GATEHOUSE_LOG=warn`, so the per-request access-log line (info level) is off "
             "during the load, as nginx (`access_log off`) and HAProxy (`log ... err`) are. The gateway serves "
             "with `--threads 1` in every g series but g1m, as nginx runs one worker and HAProxy one thread "
             "(g1m: the default, `gateway::default_threads`: one thread per core, one core left free on machines of up to 4 cores, so 1 thread here). CPU % is of one core; µs/req = the "
             "proxy's CPU time ÷ requests. Peak RSS: VmRSS sampled every 100 ms during the runs. wrk, proxy and "
             "backend share the same 2 cores. A run during which anything besides wrk, the proxy, the backend, "
             f"ksoftirqd and the driver used more than {FOREIGN_MAX:.0f} % of a core (machine busy time from "
             "/proc/stat, irq and softirq included) is discarded and repeated.")
    L.append("")
    L.append("| # | target | req/s (median) | p50 ms | p99 ms | proxy CPU % of 1 core | proxy CPU µs / req | "
             "proxy peak RSS MB | non-2xx |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for sid, label, kind, _ in SERIES:
        s = S[sid]
        if not s:
            continue
        who = " (backend)" if kind == "backend" else ""
        L.append(f"| {sid} | {label} | {fr(s['rps'])} | {fm(s['p50'])} | {fm(s['p99'])} | {s['cpu']:.0f}{who} | "
                 f"{s['us']:.1f}{who} | {s['rss']:.1f} | {s['non2xx']:,} of {s['requests']:,} |")
    L.append("")
    if S.get("g3"):
        L.append(f"g3 sends a different token on every request, round-robin from {tok.get('distinct', cfg['tokens']):,} "
                 f"distinct valid tokens (`bench/gateway/lua/distinct_tokens.lua`); the gateway caches at most "
                 f"{TOKEN_CACHE_MAX:,} verified tokens and clears the cache when it is full, so with a longer list "
                 "taken in order no request finds its token cached: each pays parse + RSA-2048 verify + claims checks. "
                 "g3c runs the same Lua script with a one-token list, to separate the cost of wrk's per-request Lua "
                 "(on the same cores) from the cost of verification.")
        L.append("")
    # targets
    g1, b, c = S.get("g1"), S.get("b"), S.get("c")
    L.append("### Targets")
    L.append("")
    L.append("| target | measured | result |")
    L.append("|---|---|---|")
    if g1 and c:
        r = g1["rps"] / c["rps"]
        L.append(f"| gateway with token (g1) ≥ 2× HAProxy + JWT (c) throughput | {r:.2f}× ({fr(g1['rps'])} vs "
                 f"{fr(c['rps'])} req/s) | {pf(r >= 2)} |")
    if g1 and b:
        r = g1["rps"] / b["rps"]
        L.append(f"| gateway with token (g1) ≥ 0.9× nginx without auth (b) throughput | {r:.2f}× ({fr(g1['rps'])} vs "
                 f"{fr(b['rps'])} req/s) | {pf(r >= 0.9)} |")
        L.append(f"| gateway with token (g1) p99 ≤ nginx (b) p99 + 1 ms | {fm(g1['p99'])} ms vs {fm(b['p99'])} + 1 = "
                 f"{fm(b['p99'] + 1)} ms | {pf(g1['p99'] <= b['p99'] + 1)} |")
    if g1:
        L.append(f"| gateway RSS < 30 MB under the token load (g1, peak) | {g1['rss']:.1f} MB | {pf(g1['rss'] < 30)} |")
    gs = [(sid, S[sid]) for sid in ("g0", "g1", "g2", "g3", "g3c", "g1m") if S.get(sid)]
    if gs:
        sid, worst = max(gs, key=lambda x: x[1]["rss"])
        L.append(f"| gateway RSS < 30 MB under every gateway load (peak, worst series {sid}) | {worst['rss']:.1f} MB | "
                 f"{pf(worst['rss'] < 30)} |")
    L.append("")
    if g1:
        ref = "; ".join(f"{k}: {fr(v)} req/s" for k, v in PEER_README.items())
        parts = []
        if "c" in PEER_README:
            parts.append(f"g1 / peer c = {g1['rps'] / PEER_README['c']:.2f}×")
        if "b" in PEER_README:
            parts.append(f"g1 / peer b = {g1['rps'] / PEER_README['b']:.2f}×")
        L.append(f"The targets use this run's peer figures. The peer README (2026-11-21) has {ref}; "
                 f"against those, {', '.join(parts)}.")
        L.append("")
    if S.get("g3") and c:
        g3 = S["g3"]
        L.append(f"Uncached (g3) vs HAProxy, which verifies every request: {g3['rps'] / c['rps']:.2f}× "
                 f"({fr(g3['rps'])} vs {fr(c['rps'])} req/s); gateway {g3['us']:.1f} µs of CPU per request vs "
                 f"HAProxy {c['us']:.1f}.")
        L.append("")
    # details
    L.append("### Details")
    L.append("")
    L.append("| # | req/s per run | proxy CPU % | backend CPU % | wrk CPU % | machine busy % of 200 | max foreign "
             "CPU % | peak RSS MB (VmHWM) | idle RSS MB | timeouts / socket errors | discarded runs |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for sid, *_ in SERIES:
        s = S[sid]
        if not s:
            continue
        L.append(f"| {sid} | {' / '.join(fr(x) for x in s['each'])} | {s['cpu']:.0f} | "
                 f"{fr(s['backend_cpu'])} | {s['wrk_cpu']:.0f} | {s['busy']:.0f} | "
                 f"{s['foreign']:.1f} | {s['rss']:.1f} ({s['hwm']:.1f}) | {idle.get(sid, '–')} | "
                 f"{s['timeouts']} / {s['errors']} | {s['discarded']} |")
    L.append("")
    notes = []
    if ready:
        notes.append("Gateway start → `GET /open` answered 200 (JWKS fetched, backend reached): "
                     + ", ".join(f"{1000 * x:.0f}" for x in ready) + " ms.")
    quiet = builds.get("quiet", True) and all(s["quiet"] and not s["discarded"] for s in S.values() if s)
    notes.append("Machine quiet during the measured runs: " + ("yes." if quiet else
                 f"no (tools seen before start: {builds.get('seen')}, waited {builds.get('waited_s')} s; "
                 "see discarded runs / foreign CPU)."))
    L.append(" ".join(notes))
    L.append("")
    if checks:
        L.append("Rejection check (one request each, before the load; HTTP status and message):")
        L.append("")
        names = list(dict.fromkeys(k for v in checks.values() for k in v))
        tg = [t for t in ("gateway", "haproxy_jwt") if t in checks]
        L.append("| token | " + " | ".join({"gateway": "Gatehouse gateway", "haproxy_jwt": "HAProxy + JWT"}[t]
                                            for t in tg) + " |")
        L.append("|---|" + "---|" * len(tg))
        for n in names:
            cells = []
            for t in tg:
                v = checks[t].get(n)
                cells.append("–" if v is None else f"{v[0]} {v[1]}".strip().replace("|", "\\|"))
            L.append(f"| {n} | " + " | ".join(cells) + " |")
        L.append("")
    if metrics:
        L.append("Gateway counters after each series (`/metrics` on the admin listener; one fresh process per series):")
        L.append("")
        L.append("```")
        for sid, lines in metrics.items():
            for ln in lines:
                L.append(f"{sid}: {ln}")
        L.append("```")
        L.append("")
    text = "\n".join(L) + "\n"
    if docs_path:
        write_section(docs_path, text)
    return text


def write_section(docs_path, section):
    """Replace the "## Gateway" section of the doc (up to the next "## " heading), or append it."""
    _write_section(docs_path, "## Gateway", section)


def main():
    cli(cmd_run, report, lambda r: r.add_argument("--scratch", required=True))


if __name__ == "__main__":
    main()
