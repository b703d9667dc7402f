#!/usr/bin/env python3
"""The gateway under the faults of issue #16, long forms of scenarios 2 and 4.

  bench/reliability/gateway_faults.py [--seconds N] [--every S] [--outage S]
        [--scenarios switch,kill,slow] [--docs docs/reliability.md] [--timeout S]

Runs from any directory; never builds anything. It measures $GATEHOUSE_BIN, or
target/release/gatehouse (build it: cargo build --release -p gatehouse), with nginx and wrk
(apt-get install nginx wrk). The short forms of the same faults are the tests in
crates/gateway/tests/reliability.rs.

Scenarios (each with a fresh `gatehouse gateway --threads 1 --watch-secs 0`):

  switch  (§4) two nginx backends (1 worker each, every path answers 200 "a" / "b", keep-alive).
          `wrk -t1 -c64 -d{seconds}s --latency` (default 60 s) on GET /x (no auth) while, every
          --every seconds (default 1.0), the config file is rewritten (atomic rename) to route /x
          to the other backend and to carry a second route that differs (/v<n>), and
          POST /configs/reload on the admin listener is called.
          Pass: wrk reports 0 non-2xx and 0 socket errors; acknowledged switches
          >= seconds / every - 1; GET /configs shows the last acknowledged version active; after
          the run /x answers from the backend of the last config and /v<last> exists.
  kill    (§2) one nginx backend; `wrk -t1 -c64 -d{seconds}s --latency` (default 30 s) on /x with
          a Lua script that counts 200 / 503 / other statuses. At 1/3 of the run the nginx master
          and its worker get SIGKILL (their process group); after --outage seconds (default 5)
          nginx is started again on the same port; from that moment single GETs every 10 ms go
          to nginx directly and to the gateway, until the gateway answers 200.
          Pass: 0 socket errors (every request got an answer), only 200 and 503 statuses, the
          gateway answers 200 at most 1 s after nginx itself does, wrk's max latency < 1 s (a
          refused connect answers at once).
  slow    (§2, second half) a backend (a Python thread) that answers after 3 s, behind a route
          with `x-google-backend: {address: ..., deadline: 1.0}`; 20 sequential GETs.
          Pass: every one is 504 after 1.0-1.5 s.

Everything listens on 127.0.0.1, on ports BENCH_PORT_BASE (default 18280) + 1..15; scratch files
go to a temporary directory under /tmp (kept if a scenario fails). Every server and wrk run in
their own process group, killed on exit, on SIGINT / SIGTERM / SIGHUP and when the overall
--timeout (default: computed from the durations) expires.

Output: one JSON line per scenario (after a `meta` line) appended to
bench/reliability/results/<UTC stamp>-gateway.jsonl, a summary table on stdout and, with --docs,
the section "## 2 and 4. Gateway: killed and slow backends, config switches under load" of that
Markdown file (replaced in place; the file is created if missing). Exit status 1 if a scenario
failed. Other processes may share the machine: these are correctness figures, and the load
average is recorded with them.
"""

import argparse
import datetime
import http.client
import http.server
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.dirname(HERE))
from common import (  # noqa: E402
    Server, busy_tools, close_results, command_output, emit, env_int, machine_meta, open_results,
    parse_wrk, port_open, proc_tree, say, status_kb, stop_all, utc_mtime, write_section,
)

HEADING = "## 2 and 4. Gateway: killed and slow backends, config switches under load"
INTRO = ("# Reliability: the gateway under faults (issue #16)\n\n"
         "Long forms of the fault scenarios, run by `bench/reliability/gateway_faults.py`; "
         "the short forms are `crates/gateway/tests/reliability.rs`.\n")
BASE = env_int("BENCH_PORT_BASE", 18280)
PORTS = {
    "backend_a": BASE + 1, "backend_b": BASE + 2, "backend_kill": BASE + 3, "backend_slow": BASE + 4,
    "gw_switch": BASE + 10, "admin_switch": BASE + 11, "gw_kill": BASE + 12, "admin_kill": BASE + 13,
    "gw_slow": BASE + 14, "admin_slow": BASE + 15,
}
CONNECTIONS = 64
SLOW_REQUESTS = 20
SLOW_BACKEND_S = 3.0
SLOW_DEADLINE_S = 1.0
SLOW_MAX_S = 1.5
RECOVERY_MAX_S = 1.0
KILL_MAX_LATENCY_MS = 1000.0
# Info lines of the reload task ("config activated"), warnings and errors of the rest; the
# per-request access line (info) stays off under load.
GATEWAY_LOG = "warn,gatehouse_gateway::reload=info"


class Abort(BaseException):
    """The overall timeout or a signal: stop everything, write what was measured."""


GROUPS = []  # process groups started outside common.Server (wrk), killed on exit


def on_signal(signum, _frame):
    raise Abort(f"signal {signal.Signals(signum).name}")


def on_alarm(_signum, _frame):
    raise Abort("overall timeout")


def kill_groups():
    for p in list(GROUPS):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        GROUPS.remove(p)


def cleanup():
    kill_groups()
    stop_all()


# ---------------------------------------------------------------- prerequisites and files

def find_tools():
    gatehouse = os.environ.get("GATEHOUSE_BIN") or os.path.join(ROOT, "target", "release", "gatehouse")
    if not os.access(gatehouse, os.X_OK):
        raise SystemExit(f"no gatehouse binary at {gatehouse}; build it: cargo build --release -p gatehouse")
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    missing = [n for n, p in (("nginx", nginx), ("wrk", shutil.which("wrk"))) if not p]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}; install: apt-get install -y {' '.join(missing)}")
    return gatehouse, nginx


NGINX_CONF = """worker_processes 1;
daemon off;
pid logs/nginx.pid;
error_log logs/error.log warn;
events {{
    worker_connections 4096;
    use epoll;
}}
http {{
    access_log off;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    keepalive_timeout 65s;
    keepalive_requests 10000000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            default_type text/plain;
            return 200 "{body}";
        }}
    }}
}}
"""

# Counts statuses and bodies in each wrk thread; done() prints the sums on one line.
LUA = """local threads = {}
local names = {"s200", "s502", "s503", "s504", "sother", "ba", "bb", "bother"}
function setup(thread) table.insert(threads, thread) end
function init(args) s200, s502, s503, s504, sother, ba, bb, bother = 0, 0, 0, 0, 0, 0, 0, 0 end
function response(status, headers, body)
  if status == 200 then s200 = s200 + 1
  elseif status == 503 then s503 = s503 + 1
  elseif status == 502 then s502 = s502 + 1
  elseif status == 504 then s504 = s504 + 1
  else sother = sother + 1 end
  if body == "a" then ba = ba + 1 elseif body == "b" then bb = bb + 1 else bother = bother + 1 end
end
function done(summary, latency, requests)
  local out = {}
  for _, n in ipairs(names) do
    local sum = 0
    for _, t in ipairs(threads) do sum = sum + (t:get(n) or 0) end
    out[#out + 1] = n .. "=" .. sum
  end
  io.write("LUA " .. table.concat(out, " ") .. "\\n")
end
"""


def gateway_config(backend_port, extra=None, slow_port=None):
    """An OpenAPI 2.0 document: GET /x (no auth) to the backend; /v<extra> as a second route
    that differs between versions; /slow to the slow backend with a 1 s deadline."""
    text = ("swagger: \"2.0\"\ninfo: {title: reliability, version: 1.0.0}\nhost: api.example\n"
            f"x-google-backend:\n  address: http://127.0.0.1:{backend_port}\npaths:\n"
            "  /x:\n    get: {operationId: x}\n")
    if extra is not None:
        text += f"  /v{extra}:\n    get: {{operationId: extra}}\n"
    if slow_port is not None:
        text += ("  /slow:\n    get:\n      operationId: slow\n      x-google-backend:\n"
                 f"        address: http://127.0.0.1:{slow_port}\n        deadline: {SLOW_DEADLINE_S}\n")
    return text


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    env.update(extra or {})
    return env


def nginx_server(nginx, work, name, port, body):
    d = os.path.join(work, name)
    for sub in ("conf", "logs", "tmp"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    with open(os.path.join(d, "conf", "nginx.conf"), "w") as fh:
        fh.write(NGINX_CONF.format(port=port, body=body))
    argv = [nginx, "-p", d + "/", "-e", "logs/error.log", "-c", "conf/nginx.conf"]
    return Server(name, argv, d, clean_env(), os.path.join(d, "logs", "stdout.log"), port, "/")


def gateway_server(gatehouse, work, name, config_path, port, admin, ready_path="/x"):
    argv = [gatehouse, "gateway", "--config", config_path, "--listen", f"127.0.0.1:{port}",
            "--admin-listen", f"127.0.0.1:{admin}", "--threads", "1", "--watch-secs", "0"]
    return Server(name, argv, work, clean_env({"GATEHOUSE_LOG": GATEWAY_LOG}),
                  os.path.join(work, f"{name}.log"), port, ready_path, extra_ports=(admin,))


# ---------------------------------------------------------------- HTTP helpers, wrk

def get(port, path, timeout=5.0):
    """(status, body, seconds) of one GET on a new connection; status None on a socket error."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        return r.status, body, time.perf_counter() - t0
    except OSError as e:
        return None, repr(e).encode(), time.perf_counter() - t0
    finally:
        conn.close()


def admin_json(port, method, path, timeout=10.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=b"" if method == "POST" else None)
        r = conn.getresponse()
        raw = r.read()
        try:
            return r.status, json.loads(raw)
        except ValueError:
            return r.status, {"raw": raw.decode(errors="replace")[:500]}
    finally:
        conn.close()


def metrics_lines(admin):
    """The request counters of the gateway (`gatehouse_gateway_requests_total`)."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode(errors="replace")
        conn.close()
    except OSError as e:
        return [f"metrics unavailable: {e!r}"]
    return [ln for ln in text.splitlines() if ln.startswith("gatehouse_gateway_requests_total")]


def log_problems(path, limit=5):
    """The gateway log's WARN and ERROR lines, grouped by level and message (JSON lines, the
    binary's default format; text lines are matched on the level word), and its size."""
    groups, activated, total = {}, 0, 0
    try:
        fh = open(path, errors="replace")
    except OSError:
        return {"warn_error_lines": 0, "groups": [], "activated_lines": 0, "bytes": 0}
    with fh:
        for ln in fh:
            try:
                r = json.loads(ln)
                level, message = r.get("level", ""), str(r.get("message", ""))
            except ValueError:
                m = re.search(r"\b(WARN|ERROR|INFO|DEBUG|TRACE)\b\s*(.*)", ln)
                level, message = (m.group(1), m.group(2)) if m else ("", ln)
            if "config activated" in message:
                activated += 1
            if level in ("WARN", "ERROR"):
                total += 1
                key = (level, message[:240])
                groups[key] = groups.get(key, 0) + 1
    top = sorted(groups.items(), key=lambda kv: -kv[1])[:limit]
    return {"warn_error_lines": total, "groups": [{"level": k[0], "message": k[1], "count": v} for k, v in top],
            "activated_lines": activated, "bytes": os.path.getsize(path)}


class Wrk:
    """`wrk -t1 -c64 -d{seconds}s --latency -s counts.lua URL` in its own process group."""

    def __init__(self, work, name, port, path, seconds):
        self.out_path = os.path.join(work, f"wrk-{name}.txt")
        self.seconds = seconds
        self.argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "2s", "--latency",
                     "-s", os.path.join(work, "counts.lua"), f"http://127.0.0.1:{port}{path}"]

    def start(self):
        self.out = open(self.out_path, "w")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        GROUPS.append(self.proc)
        self.t0 = time.perf_counter()
        return self.t0

    def finish(self):
        """wrk's figures (common.parse_wrk) plus the Lua counts; fails if wrk outlives its -d."""
        try:
            self.proc.wait(timeout=self.seconds + 30)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"wrk still running {self.seconds + 30} s after its start; see {self.out_path}")
        finally:
            self.out.close()
            kill_groups()
        text = open(self.out_path).read()
        r = parse_wrk(text)
        m = re.search(r"^LUA (.*)$", text, re.M)
        counts = dict((k, int(v)) for k, v in (kv.split("=") for kv in m.group(1).split())) if m else {}
        r["statuses"] = {"200": counts.get("s200"), "502": counts.get("s502"), "503": counts.get("s503"),
                         "504": counts.get("s504"), "other": counts.get("sother")}
        r["bodies"] = {"a": counts.get("ba"), "b": counts.get("bb"), "other": counts.get("bother")}
        r["wrk_rc"] = self.proc.returncode
        r["wrk_output"] = text
        return r


def sleep_until(t):
    d = t - time.perf_counter()
    if d > 0:
        time.sleep(d)


def loadavg():
    return [round(x, 2) for x in os.getloadavg()]


def wrk_fields(r):
    sock = r["socket_errors"]
    return {"requests": r["requests"], "rps": r["rps"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
            "max_ms": r["max_ms"], "non2xx": r["non2xx"],
            "socket_errors": {k: sock.get(k, 0) for k in ("connect", "read", "write", "timeout")},
            "socket_errors_total": sum(sock.values()), "statuses": r["statuses"], "bodies": r["bodies"]}


# ---------------------------------------------------------------- scenario 4: config switches

def run_switch(args, gatehouse, nginx, work):
    seconds, every = args.switch_seconds, args.every
    rec = {"kind": "scenario", "scenario": "switch", "seconds": seconds, "every_s": every,
           "connections": CONNECTIONS, "load_before": loadavg(), "busy_tools": busy_tools()}
    a = nginx_server(nginx, work, "nginx-a", PORTS["backend_a"], "a")
    b = nginx_server(nginx, work, "nginx-b", PORTS["backend_b"], "b")
    for s in (a, b):
        s.start()
        s.wait_ready(20)
    cfg = os.path.join(work, "switch.yaml")
    write_atomic(cfg, gateway_config(PORTS["backend_a"], extra=0))
    gw = gateway_server(gatehouse, work, "gateway-switch", cfg, PORTS["gw_switch"], PORTS["admin_switch"])
    gw.start()
    rec["gateway_ready_s"] = round(gw.wait_ready(30), 3)
    admin = PORTS["admin_switch"]
    rec["rss_kb_start"] = status_kb([gw.proc.pid], "VmRSS")

    wrk = Wrk(work, "switch", PORTS["gw_switch"], "/x", seconds)
    t0 = wrk.start()
    acked, refused, reload_ms, last_ack, n = 0, [], [], None, 0
    order = []  # (switch number, backend, acknowledged version)
    while True:
        n += 1
        at = t0 + (n - 0.5) * every
        if at > t0 + seconds - 0.2:
            break
        sleep_until(at)
        backend = "b" if n % 2 else "a"
        write_atomic(cfg, gateway_config(PORTS[f"backend_{backend}"], extra=n))
        t = time.perf_counter()
        try:
            st, body = admin_json(admin, "POST", "/configs/reload")
        except OSError as e:
            st, body = None, {"error": repr(e)}
        reload_ms.append(1000 * (time.perf_counter() - t))
        if st == 200 and isinstance(body.get("active"), int) and (last_ack is None or body["active"] > last_ack):
            acked += 1
            last_ack = body["active"]
            order.append((n, backend, last_ack))
        else:
            refused.append({"switch": n, "status": st, "body": body})
    w = wrk.finish()
    rec.update(wrk_fields(w))
    rec["switch_attempts"] = n - 1
    rec["switches"] = acked
    rec["switches_needed"] = int(seconds / every) - 1
    rec["reload_refused"] = refused[:10]
    rec["reload_ms_median"] = round(statistics.median(reload_ms), 2) if reload_ms else None
    rec["reload_ms_max"] = round(max(reload_ms), 2) if reload_ms else None
    st, configs = admin_json(admin, "GET", "/configs")
    rec["configs"] = configs
    last_n, last_backend = (order[-1][0], order[-1][1]) if order else (0, "a")
    # After the run: /x from the last config's backend, its /v<n> route present, the one before gone.
    sx, bx, _ = get(PORTS["gw_switch"], "/x")
    sv, _, _ = get(PORTS["gw_switch"], f"/v{last_n}")
    sp, _, _ = get(PORTS["gw_switch"], f"/v{last_n - 1}") if last_n > 0 else (None, b"", 0)
    rec["after"] = {"x_status": sx, "x_body": bx.decode(errors="replace")[:80], "expected_body": last_backend,
                    "v_last_status": sv, "v_previous_status": sp}
    rec["rss_kb_end"] = status_kb([gw.proc.pid], "VmRSS")
    rec["metrics"] = metrics_lines(admin)
    rec["load_after"] = loadavg()
    gw.stop()
    a.stop()
    b.stop()
    rec["gateway_log"] = log_problems(gw.log_path)
    rec["wrk_output"] = w["wrk_output"]
    c = {
        "no_non2xx": rec["non2xx"] == 0,
        "no_socket_errors": rec["socket_errors_total"] == 0,
        "enough_switches": acked >= rec["switches_needed"],
        "final_version_active": st == 200 and last_ack is not None and configs.get("active") == last_ack
                                and last_ack in configs.get("versions", []),
        "final_routes": sx == 200 and bx.decode(errors="replace") == last_backend and sv == 200
                        and (last_n == 0 or sp == 404),
        "every_response_from_a_backend": rec["bodies"]["other"] == 0,
    }
    rec["checks"] = c
    rec["pass"] = all(c.values())
    return rec


# ---------------------------------------------------------------- scenario 2: killed backend

def run_kill(args, gatehouse, nginx, work):
    seconds, outage = args.kill_seconds, args.outage
    rec = {"kind": "scenario", "scenario": "kill", "seconds": seconds, "outage_s": outage,
           "connections": CONNECTIONS, "load_before": loadavg(), "busy_tools": busy_tools()}
    port = PORTS["backend_kill"]
    backend = nginx_server(nginx, work, "nginx-kill", port, "a")
    backend.start()
    backend.wait_ready(20)
    cfg = os.path.join(work, "kill.yaml")
    write_atomic(cfg, gateway_config(port))
    gw = gateway_server(gatehouse, work, "gateway-kill", cfg, PORTS["gw_kill"], PORTS["admin_kill"])
    gw.start()
    rec["gateway_ready_s"] = round(gw.wait_ready(30), 3)

    wrk = Wrk(work, "kill", PORTS["gw_kill"], "/x", seconds)
    t0 = wrk.start()
    sleep_until(t0 + seconds / 3)
    pids = proc_tree(backend.proc.pid)
    t_kill = time.perf_counter()
    os.killpg(backend.proc.pid, signal.SIGKILL)
    backend.proc.wait()
    rec["killed_pids"] = pids
    rec["killed_at_s"] = round(t_kill - t0, 3)
    # Every process of the group is gone and nothing listens on the port any more.
    deadline = time.perf_counter() + 5
    while time.perf_counter() < deadline and (any(os.path.exists(f"/proc/{p}") for p in pids) or port_open(port)):
        time.sleep(0.01)
    rec["killed_clean"] = not any(os.path.exists(f"/proc/{p}") for p in pids) and not port_open(port)
    backend.stop()  # forget it (its group is gone)

    # Single GETs during the outage: status and time of each answer.
    probes = []
    t_restart = t_kill + outage
    while time.perf_counter() < t_restart - 0.15:
        st, _, dt = get(PORTS["gw_kill"], "/x", timeout=3)
        probes.append((st, dt))
        time.sleep(0.1)
    rec["outage_probes"] = {"n": len(probes), "statuses": sorted({str(s) for s, _ in probes}),
                            "max_ms": round(1000 * max((d for _, d in probes), default=0), 2)}

    sleep_until(t_restart)
    backend = nginx_server(nginx, work, "nginx-kill", port, "a")
    backend.start()
    t_start = backend.t0
    t_nginx = t_gw = None
    t_nginx_down = t_start  # the last direct GET that found nginx not (yet) answering
    gw_statuses = {}
    while time.perf_counter() < t_start + 15:
        if t_nginx is None:
            t = time.perf_counter()
            st, _, _ = get(port, "/x", timeout=1)
            if st == 200:
                t_nginx = time.perf_counter()
            else:
                t_nginx_down = t
        st, _, _ = get(PORTS["gw_kill"], "/x", timeout=3)
        gw_statuses[str(st)] = gw_statuses.get(str(st), 0) + 1
        if st == 200:
            t_gw = time.perf_counter()
            break
        time.sleep(0.01)
    rec["restarted_at_s"] = round(t_start - t0, 3)
    rec["nginx_up_after_restart_s"] = round(t_nginx - t_start, 3) if t_nginx else None
    rec["gateway_200_after_restart_s"] = round(t_gw - t_start, 3) if t_gw else None
    # Recovery: nginx's first direct 200 to the gateway's first 200. If the gateway's 200 came
    # first (nginx came up between the two GETs of one poll), nginx was up no earlier than the
    # last direct GET that failed: the time since then bounds the recovery from above.
    rec["nginx_seen_first"] = t_nginx is not None
    if t_gw is not None:
        rec["recovery_s"] = round(max(0.0, t_gw - (t_nginx if t_nginx is not None else t_nginx_down)), 4)
    else:
        rec["recovery_s"] = None
    rec["recovery_polls"] = gw_statuses
    w = wrk.finish()
    rec.update(wrk_fields(w))
    rec["metrics"] = metrics_lines(PORTS["admin_kill"])
    rec["load_after"] = loadavg()
    gw.stop()
    backend.stop()
    rec["gateway_log"] = log_problems(gw.log_path)
    rec["log_mb_per_outage_s"] = round(rec["gateway_log"]["bytes"] / 1e6 / outage, 2)
    rec["wrk_output"] = w["wrk_output"]
    s = rec["statuses"]
    c = {
        "killed_clean": rec["killed_clean"],
        "no_socket_errors": rec["socket_errors_total"] == 0,
        "only_200_and_503": (s["200"] or 0) > 0 and not s["502"] and not s["504"] and not s["other"],
        "answers_counted": (s["200"] or 0) + (s["503"] or 0) + (s["502"] or 0) + (s["504"] or 0)
                           + (s["other"] or 0) == rec["requests"],
        "saw_503": (s["503"] or 0) > 0,
        "recovery_within_1s": rec["recovery_s"] is not None and rec["recovery_s"] <= RECOVERY_MAX_S,
        "max_latency_below_1s": rec["max_ms"] is not None and rec["max_ms"] < KILL_MAX_LATENCY_MS,
    }
    rec["checks"] = c
    rec["pass"] = all(c.values())
    return rec


# ---------------------------------------------------------------- scenario 2b: slow backend

class SlowHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a late answer must not reach a later request
    hits = 0
    lock = threading.Lock()

    def do_GET(self):
        with SlowHandler.lock:
            SlowHandler.hits += 1
        time.sleep(SLOW_BACKEND_S)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"late")
        except OSError:
            pass

    def log_message(self, *a):
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass


def run_slow(args, gatehouse, nginx, work):
    rec = {"kind": "scenario", "scenario": "slow", "requests": SLOW_REQUESTS, "backend_delay_s": SLOW_BACKEND_S,
           "deadline_s": SLOW_DEADLINE_S, "load_before": loadavg(), "busy_tools": busy_tools()}
    port = PORTS["backend_slow"]
    if port_open(port):
        raise SystemExit(f"port 127.0.0.1:{port} is already in use; not starting the slow backend")
    srv = QuietServer(("127.0.0.1", port), SlowHandler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        # /x goes to an address nobody listens on; only /slow is asked.
        cfg = os.path.join(work, "slow.yaml")
        write_atomic(cfg, gateway_config(PORTS["backend_a"], slow_port=port))
        gw = gateway_server(gatehouse, work, "gateway-slow", cfg, PORTS["gw_slow"], PORTS["admin_slow"],
                            ready_path="/healthz")
        gw.start()
        rec["gateway_ready_s"] = round(gw.wait_ready(30), 3)
        results = []
        for _ in range(SLOW_REQUESTS):
            st, body, dt = get(PORTS["gw_slow"], "/slow", timeout=10)
            results.append({"status": st, "s": round(dt, 4), "body": body.decode(errors="replace")[:120]})
        times = [r["s"] for r in results]
        rec["answers"] = results
        rec["statuses"] = sorted({str(r["status"]) for r in results})
        rec["min_s"], rec["max_s"] = min(times), max(times)
        rec["median_s"] = round(statistics.median(times), 4)
        time.sleep(SLOW_BACKEND_S - SLOW_DEADLINE_S + 0.2)  # let the last backend answer come (late)
        rec["backend_hits"] = SlowHandler.hits
        rec["metrics"] = metrics_lines(PORTS["admin_slow"])
        rec["load_after"] = loadavg()
        gw.stop()
        rec["gateway_log"] = log_problems(gw.log_path)
    finally:
        srv.shutdown()
        srv.server_close()
    ok = [r["status"] == 504 and SLOW_DEADLINE_S <= r["s"] <= SLOW_MAX_S for r in results]
    c = {"every_answer_504_in_1.0_to_1.5s": all(ok),
         "one_backend_request_each": rec["backend_hits"] == SLOW_REQUESTS}
    rec["checks"] = c
    rec["pass"] = all(c.values())
    return rec


SCENARIOS = {"switch": run_switch, "kill": run_kill, "slow": run_slow}


# ---------------------------------------------------------------- report

def fms(x):
    return "–" if x is None else (f"{x:.2f}" if x < 10 else f"{x:,.1f}")


def ms(seconds):
    return "–" if seconds is None else fms(1000 * seconds)


def pf(ok):
    return "**PASS**" if ok else "**FAIL**"


def rows(recs):
    """(scenario, figures, criterion, pass) for the summary table and the doc."""
    out = []
    for r in recs:
        sc = r["scenario"]
        if "error" in r:
            out.append((sc, f"did not complete: {r['error']}", "", False))
            continue
        sock = r["socket_errors"] if "socket_errors" in r else {}
        se = ", ".join(f"{k} {v}" for k, v in sock.items())
        if sc == "switch":
            fig = (f"{r['requests']:,} requests, {r['rps']:,.0f} req/s, p99 {fms(r['p99_ms'])} ms, max "
                   f"{fms(r['max_ms'])} ms; {r['switches']} switches acknowledged of {r['switch_attempts']} "
                   f"(reload call median {fms(r['reload_ms_median'])} ms, max {fms(r['reload_ms_max'])} ms); "
                   f"active version {r['configs'].get('active')}; non-2xx {r['non2xx']}; socket errors: {se}; "
                   f"bodies a {r['bodies']['a']:,} / b {r['bodies']['b']:,} / other {r['bodies']['other']}")
            crit = (f"0 non-2xx, 0 socket errors, switches ≥ {r['switches_needed']}, GET /configs shows the "
                    "last version, /x answers from the last config's backend")
        elif sc == "kill":
            s = r["statuses"]
            fig = (f"{r['requests']:,} requests, {r['rps']:,.0f} req/s, p99 {fms(r['p99_ms'])} ms, max "
                   f"{fms(r['max_ms'])} ms; statuses 200 {s['200']:,} / 503 {s['503']:,} / 502 {s['502']} / "
                   f"504 {s['504']} / other {s['other']}; socket errors: {se}; nginx killed at "
                   f"{r['killed_at_s']} s, restarted at {r['restarted_at_s']} s; nginx answered "
                   f"{ms(r['nginx_up_after_restart_s'])} ms after its restart, the gateway "
                   f"{ms(r['gateway_200_after_restart_s'])} ms (recovery {ms(r['recovery_s'])} ms); "
                   f"outage probes {r['outage_probes']['n']}: {'/'.join(r['outage_probes']['statuses'])}, max "
                   f"{fms(r['outage_probes']['max_ms'])} ms")
            crit = "0 socket errors, only 200 and 503, recovery ≤ 1 s after nginx is back, max latency < 1 s"
        else:
            fig = (f"{r['requests']} sequential GETs: statuses {'/'.join(r['statuses'])}, min {r['min_s']:.3f} s, "
                   f"median {r['median_s']:.3f} s, max {r['max_s']:.3f} s; backend reached {r['backend_hits']} times")
            crit = "every answer 504 after 1.0–1.5 s"
        out.append((sc, fig, crit, r["pass"]))
    return out


def summary_table(recs):
    lines = ["scenario  result  figures"]
    for sc, fig, _crit, ok in rows(recs):
        lines.append(f"{sc:<8}  {'PASS' if ok else 'FAIL':<6}  {fig}")
        for r in recs:
            if r["scenario"] == sc and "checks" in r:
                failed = [k for k, v in r["checks"].items() if not v]
                if failed:
                    lines.append(f"{'':<8}  {'':<6}  failed checks: {', '.join(failed)}")
    return "\n".join(lines)


def doc_section(meta, recs, results_rel):
    m = meta
    L = [HEADING, ""]
    L.append(f"Date: {m['date_utc']}. Machine: {m['nproc']} cores ({m['cpu_model']}), {m['mem_gib']} GiB RAM, "
             f"Linux {m['kernel']}; load average at the start {' / '.join(map(str, m['load_start']))} (1 / 5 / 15 min"
             f"{'; ' + ', '.join(m['busy_tools']) + ' running' if m['busy_tools'] else ''}): other processes "
             "were compiling on the same 2 cores, so these are correctness figures, not throughput figures. "
             f"Gatehouse: `{m['gatehouse_bin_rel']}` built {m['gatehouse_bin_mtime']} (repository at {m['git_rev']}); "
             f"{m['nginx']}; {m['wrk']}.")
    L.append("")
    L.append(f"Command (from the repository root): `{m['command']}` (raw figures: `{results_rel}`).")
    L.append("")
    L.append(f"Method: each scenario starts a fresh `gatehouse gateway --threads 1 --watch-secs 0` on 127.0.0.1 "
             "with nginx backends (1 worker, `return 200` on every path, keep-alive); load is "
             f"`wrk -t1 -c{CONNECTIONS} --timeout 2s --latency` on `GET /x` (no auth) with a Lua script counting "
             "statuses and bodies. *switch* (§4): every "
             f"{recs_get(recs, 'switch', 'every_s', '?')} s the config file is replaced by an atomic rename (/x "
             "alternates between backend `a` and backend `b`, and a second route `/v<n>` changes with every "
             "version) and `POST /configs/reload` is called on the admin listener. *kill* (§2): at a third of the "
             "run the nginx master and its worker get SIGKILL (process group); after "
             f"{recs_get(recs, 'kill', 'outage_s', '?')} s nginx is started again on the same port, and from then "
             "single GETs every 10 ms go to nginx directly and through the gateway; recovery is the time from "
             "nginx's first direct answer to the gateway's first 200 (if the gateway's 200 comes first, from the "
             "last direct GET that failed: an upper bound). *slow* (§2): a backend that answers after "
             f"{SLOW_BACKEND_S:.0f} s behind a route with `deadline: {SLOW_DEADLINE_S}`, "
             f"{SLOW_REQUESTS} sequential GETs.")
    L.append("")
    L.append("| scenario | figures | pass criterion | result |")
    L.append("|---|---|---|---|")
    names = {"switch": "§4 config switches under load", "kill": "§2 backend killed under load",
             "slow": "§2 slow backend, 1 s deadline"}
    for sc, fig, crit, ok in rows(recs):
        L.append(f"| {names.get(sc, sc)} ({sc}) | {fig} | {crit} | {pf(ok)} |")
    L.append("")
    notes = []
    for r in recs:
        failed = [k for k, v in r.get("checks", {}).items() if not v]
        if failed:
            notes.append(f"{r['scenario']}: failed checks: {', '.join(f'`{k}`' for k in failed)}.")
        gl = r.get("gateway_log")
        if gl and gl["warn_error_lines"]:
            kinds = "; ".join(f"{g['count']:,} × {g['level']} `{g['message']}`" for g in gl["groups"])
            notes.append(f"{r['scenario']}: the gateway log (`{GATEWAY_LOG}`) has {gl['warn_error_lines']:,} "
                         f"WARN/ERROR lines, {gl['bytes'] / 1e6:.1f} MB in all"
                         + (f" ({r['log_mb_per_outage_s']} MB per second of outage)" if "log_mb_per_outage_s" in r
                            else "") + f": {kinds}.")
    sw = next((r for r in recs if r["scenario"] == "switch" and "configs" in r), None)
    if sw:
        notes.append(f"switch: GET /configs after the run: active {sw['configs'].get('active')}, kept versions "
                     f"{sw['configs'].get('versions')}, reload attempts {sw['configs'].get('reloads', {}).get('attempts')}; "
                     f"gateway RSS {sw['rss_kb_start'] / 1024:.1f} MB before, {sw['rss_kb_end'] / 1024:.1f} MB after.")
    k = next((r for r in recs if r["scenario"] == "kill" and "metrics" in r), None)
    if k:
        notes.append("kill: gateway counters after the run: " + "; ".join(f"`{x}`" for x in k["metrics"]) + ".")
    for n in notes:
        L.append(f"- {n}")
    if notes:
        L.append("")
    return "\n".join(L) + "\n"


def recs_get(recs, sc, key, default):
    return next((r[key] for r in recs if r["scenario"] == sc and key in r), default)


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, help="length of the switch and kill load runs "
                    "(default: 60 for switch, 30 for kill)")
    ap.add_argument("--every", type=float, default=1.0, help="seconds between config switches (1.0)")
    ap.add_argument("--outage", type=float, default=5.0, help="seconds nginx stays dead in kill (5)")
    ap.add_argument("--scenarios", default="switch,kill,slow", help="comma list of switch, kill, slow")
    ap.add_argument("--docs", help="Markdown file whose gateway reliability section is (re)written")
    ap.add_argument("--results", help="results file (default bench/reliability/results/<UTC stamp>-gateway.jsonl)")
    ap.add_argument("--timeout", type=float, help="hard overall limit in seconds (default: from the durations)")
    args = ap.parse_args()
    args.switch_seconds = int(args.seconds or 60)
    args.kill_seconds = int(args.seconds or 30)
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    bad = [s for s in chosen if s not in SCENARIOS]
    if bad or not chosen:
        ap.error(f"unknown scenario(s) {bad}; choose from {', '.join(SCENARIOS)}")
    if args.kill_seconds < 3 * args.outage / 2 + 2:
        ap.error("--seconds is too short for the kill scenario's outage (needs the restart inside the run)")
    timeout = args.timeout or (120 + 2 * (args.switch_seconds + args.kill_seconds) + args.outage
                               + SLOW_REQUESTS * SLOW_MAX_S)

    gatehouse, nginx = find_tools()
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin"
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    results = args.results or os.path.join(HERE, "results", f"{stamp}-gateway.jsonl")
    os.makedirs(os.path.dirname(os.path.abspath(results)), exist_ok=True)
    work = tempfile.mkdtemp(prefix="gatehouse-gw-faults-")
    os.chmod(work, 0o755)  # nginx workers run as nobody

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(timeout) + 1)

    cmd_env = " ".join(f"{k}={shlex.quote(os.environ[k])}" for k in ("BENCH_PORT_BASE", "GATEHOUSE_BIN")
                       if k in os.environ)
    script = os.path.relpath(os.path.abspath(__file__), ROOT)
    command = " ".join(x for x in (cmd_env, script, *map(shlex.quote, sys.argv[1:])) if x)
    meta = machine_meta()
    meta.update({
        "command": command, "gatehouse_bin": gatehouse,
        "gatehouse_bin_rel": os.path.relpath(gatehouse, ROOT) if gatehouse.startswith(ROOT) else gatehouse,
        "gatehouse_bin_mtime": utc_mtime(gatehouse),
        "nginx": command_output([nginx, "-v"]).replace("nginx version: ", ""),
        "load_start": loadavg(), "busy_tools": busy_tools(), "ports": PORTS, "scratch": work,
        "timeout_s": timeout, "scenarios": chosen,
    })
    say(f"results: {results}\nscratch: {work}\noverall timeout: {timeout:.0f} s")
    with open(os.path.join(work, "counts.lua"), "w") as fh:
        fh.write(LUA)

    recs, aborted = [], None
    open_results(results)
    try:
        emit(meta)
        for sc in chosen:
            say(f"{sc}: running")
            try:
                rec = SCENARIOS[sc](args, gatehouse, nginx, work)
            except (Exception, SystemExit) as e:
                cleanup()
                rec = {"kind": "scenario", "scenario": sc, "error": str(e) or repr(e), "pass": False}
            out = {k: v for k, v in rec.items() if k != "wrk_output"}
            if "wrk_output" in rec:
                out["wrk_tail"] = rec["wrk_output"].strip().splitlines()[-12:]
            emit(out)
            recs.append(rec)
            say(f"{sc}: {'PASS' if rec['pass'] else 'FAIL'}")
    except Abort as e:
        aborted = str(e)
        say(f"stopping: {aborted}")
        emit({"kind": "aborted", "reason": aborted})
    finally:
        signal.alarm(0)
        cleanup()
        close_results()
        left = [p for p in PORTS.values() if port_open(p)]
        if left:
            say(f"WARNING: ports still listening after stop: {left}")

    print(summary_table(recs))
    if aborted:
        print(f"aborted: {aborted}; {len(recs)} of {len(chosen)} scenarios ran")
    ok = bool(recs) and all(r["pass"] for r in recs) and not aborted and len(recs) == len(chosen)
    if args.docs and recs:
        if not os.path.exists(args.docs):
            with open(args.docs, "w") as fh:
                fh.write(INTRO)
        rel = os.path.relpath(os.path.abspath(results), ROOT)
        write_section(args.docs, HEADING, doc_section(meta, recs, rel))
        say(f"wrote {HEADING!r} in {args.docs}")
    if ok:
        shutil.rmtree(work, ignore_errors=True)
    else:
        say(f"scratch kept for the logs: {work}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
