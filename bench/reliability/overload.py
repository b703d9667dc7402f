#!/usr/bin/env python3
"""Issue 16, scenario 5, long form: overload and abuse against the release binary.

  idle      IDLE connections to `gatehouse gateway` that send nothing: the gateway's RSS
            before, with them open, and after one request on each; valid requests on fresh
            connections meanwhile (every one must be a 200).
  slowloris SLOW connections send a request head at one byte a second to a gateway started
            with `--head-timeout-secs HEAD`; each must get 408 and be closed at the deadline,
            while a normal client's requests are all answered. SLOW more connections send a
            body at one byte a second on a route with a 5 s deadline: 504, closed.
  bodies    a 1 GiB Content-Length and an endless chunked body, to the gateway (limit 32 MiB)
            and to the identity server (16 MiB): 413, the bytes the client got to write, RSS.
  flood     `gatehouse identity` with its default abuse limits, behind one trusted proxy hop
            (X-Forwarded-For names the client): another user's account lookups, p50/p99, alone
            and while FLOODERS clients send wrong passwords (one IP; many IPs at one account;
            many IPs at many accounts, which fills the password-hashing queue).

127.0.0.1 only; stops by itself.

    python3 bench/reliability/overload.py [--docs docs/reliability.md]
    IDLE=10000 SLOW=200 HEAD=10 FLOOD_SECS=10 FLOODERS=32 QUEUE_FLOODERS=300 (the defaults)
"""

import http.client
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import ROOT, Server, binary, call  # noqa: E402

IDLE = int(os.environ.get("IDLE", "10000"))
SLOW = int(os.environ.get("SLOW", "200"))
HEAD = float(os.environ.get("HEAD", "10"))
FLOOD_SECS = float(os.environ.get("FLOOD_SECS", "10"))
FLOODERS = int(os.environ.get("FLOODERS", "32"))
# More clients than the password-hashing queue (256) holds.
QUEUE_FLOODERS = int(os.environ.get("QUEUE_FLOODERS", "300"))
KEYS = "/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com"


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def status_of(data):
    try:
        return int(data[9:12])
    except ValueError:
        return 0


def get(addr, path="/x", host="api.example"):
    h, p = addr.rsplit(":", 1)
    c = http.client.HTTPConnection(h, int(p), timeout=30)
    t = time.time()
    try:
        c.request("GET", path, headers={"host": host})
        r = c.getresponse()
        r.read()
        return r.status, time.time() - t
    except OSError:
        return 0, time.time() - t
    finally:
        c.close()


def connect(addr):
    h, p = addr.rsplit(":", 1)
    s = socket.create_connection((h, int(p)), timeout=30)
    return s


def read_until_closed(s, limit):
    s.settimeout(limit)
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except OSError:
        pass
    return out


# A backend that reads the whole request body (Content-Length or chunked) before it answers,
# as an upload handler does; `gatehouse apps hello` answers at once without reading it.
READER = """import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                self.rfile.read(size + 2)
                if size == 0:
                    break
        else:
            self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    do_GET = do_POST
    def log_message(self, *args):
        pass
class S(http.server.ThreadingHTTPServer):
    request_queue_size = 1024
S(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


def start_stack(scratch, name, extra=(), reader=False):
    hello_port = free_port()
    env = dict(os.environ, PORT=str(hello_port))
    cmd = [sys.executable, "-c", READER] if reader else [binary(), "apps", "hello"]
    hello = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", hello_port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    cfg = os.path.join(scratch, "gw.yaml")
    with open(cfg, "w") as f:
        f.write(f"""swagger: "2.0"
info: {{title: overload, version: 1.0.0}}
host: api.example
x-google-backend:
  address: http://127.0.0.1:{hello_port}
  deadline: 5.0
paths:
  /{{x=**}}:
    get: {{operationId: g}}
    post: {{operationId: p}}
""")
    gw = Server(["gateway", "--config", cfg, "--listen", "127.0.0.1:0", "--watch-secs", "0",
                 "--threads", "1", *extra], os.path.join(scratch, f"gw-{name}.log"))
    return gw, hello


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def idle(scratch):
    gw, hello = start_stack(scratch, "idle")
    addr, pid = gw.addr(), gw.proc.pid
    for _ in range(20):
        get(addr)
    before = rss_kb(pid)
    t = time.time()
    conns = [connect(addr) for _ in range(IDLE)]
    connect_s = time.time() - t
    time.sleep(2)
    held = rss_kb(pid)
    during = [get(addr) for _ in range(200)]
    for s in conns:
        s.sendall(b"GET /x HTTP/1.1\r\nhost: api.example\r\n\r\n")
    ok = 0
    for s in conns:
        s.settimeout(30)
        try:
            d = s.recv(4096)
            ok += status_of(d) == 200
        except OSError:
            pass
    time.sleep(1)
    used = rss_kb(pid)
    for s in conns:
        s.close()
    time.sleep(1)
    after = rss_kb(pid)
    gw.stop()
    hello.terminate()
    warnings = [ln[:300] for ln in gw.lines() if '"WARN"' in ln or '"ERROR"' in ln]
    lat = [d for st, d in during if st == 200]
    return {
        "idle": IDLE, "connect_s": connect_s, "rss_before_kb": before, "rss_held_kb": held,
        "per_idle_conn_b": (held - before) * 1024 / IDLE,
        "rss_after_request_kb": used, "per_used_conn_b": (used - before) * 1024 / IDLE,
        "rss_closed_kb": after,
        "valid_during": len(during), "valid_ok": sum(1 for st, _ in during if st == 200),
        "valid_p50_ms": pct(lat, 50) * 1000, "valid_p99_ms": pct(lat, 99) * 1000,
        "idle_answered": ok, "warnings": warnings[:5], "warning_count": len(warnings),
    }


def slowloris(scratch):
    gw, hello = start_stack(scratch, "slowloris", ["--head-timeout-secs", str(HEAD)], reader=True)
    addr = gw.addr()
    results, bodies = [], []
    lock = threading.Lock()
    head = b"GET /slow HTTP/1.1\r\nhost: api.example\r\nx-pad: " + b"a" * 200 + b"\r\n\r\n"

    def trickle(prefix, data, into):
        """Sends `prefix`, then `data` a byte a second until the server answers; records the
        answer's status and the seconds from connecting to the close."""
        s = connect(addr)
        t = time.time()
        s.sendall(prefix)
        s.settimeout(1.0)
        got = b""
        for b in data:
            try:
                s.sendall(bytes([b]))
                got = s.recv(4096)
                break
            except socket.timeout:
                continue
            except OSError:
                break
        got += read_until_closed(s, 30)
        with lock:
            into.append((status_of(got), time.time() - t))
        s.close()

    def slow_head():
        trickle(b"", head, results)

    def slow_body():
        trickle(b"POST /up HTTP/1.1\r\nhost: api.example\r\ncontent-length: 1000\r\n\r\n",
                b"x" * 1000, bodies)

    threads = [threading.Thread(target=slow_head) for _ in range(SLOW)]
    threads += [threading.Thread(target=slow_body) for _ in range(SLOW)]
    for th in threads:
        th.start()
    normal = []
    t = time.time()
    while any(th.is_alive() for th in threads) and time.time() - t < 120:
        normal.append(get(addr))
        time.sleep(0.01)
    for th in threads:
        th.join()
    gw.stop()
    hello.terminate()
    lat = [d for st, d in normal if st == 200]
    return {
        "slow": SLOW, "head_timeout_s": HEAD,
        "head_statuses": sorted({st for st, _ in results}),
        "head_closed_min_s": min(d for _, d in results), "head_closed_max_s": max(d for _, d in results),
        "body_statuses": sorted({st for st, _ in bodies}),
        "body_closed_min_s": min(d for _, d in bodies), "body_closed_max_s": max(d for _, d in bodies),
        "normal": len(normal), "normal_ok": len(lat),
        "normal_p50_ms": pct(lat, 50) * 1000, "normal_p99_ms": pct(lat, 99) * 1000,
        "normal_max_ms": max(lat) * 1000 if lat else None,
    }


def push(addr, head, chunk, seconds=10):
    """Sends `head`, then `chunk` as fast as it is taken (for at most `seconds`): the answer's
    status, the body bytes written, the seconds to the answer."""
    s = connect(addr)
    s.sendall(head)
    s.setblocking(False)
    written, got, t = 0, b"", time.time()
    pending = memoryview(chunk)
    while time.time() - t < seconds:
        try:
            d = s.recv(4096)
            if not d:
                break
            got += d
            if b"\r\n\r\n" in got:
                break
        except BlockingIOError:
            pass
        except OSError:
            break
        try:
            # A partial send resumes where it stopped (the chunked framing must stay whole).
            n = s.send(pending)
            written += n
            pending = pending[n:] if n < len(pending) else memoryview(chunk)
        except BlockingIOError:
            time.sleep(0.001)
        except OSError:
            time.sleep(0.01)
    took = time.time() - t
    s.close()
    return status_of(got), written, took


def bodies(scratch):
    gw, hello = start_stack(scratch, "bodies", reader=True)
    idsrv = Server(["identity", "--project", "rel-proj", "--listen", "127.0.0.1:0",
                    "--data-dir", os.path.join(scratch, "id-bodies")],
                   os.path.join(scratch, "id-bodies.log"))
    chunk = b"x" * 65536
    chunked = b"10000\r\n" + chunk + b"\r\n"
    rows = []
    for name, srv, path, head, data in [
        ("gateway, Content-Length 1 GiB", gw, "/up", "content-length: 1073741824", chunk),
        ("gateway, chunked without end", gw, "/up", "transfer-encoding: chunked", chunked),
        ("identity, Content-Length 1 GiB", idsrv,
         "/identitytoolkit.googleapis.com/v1/accounts:signUp?key=k", "content-length: 1073741824", chunk),
        ("identity, chunked without end", idsrv,
         "/identitytoolkit.googleapis.com/v1/accounts:signUp?key=k", "transfer-encoding: chunked", chunked),
    ]:
        before = rss_kb(srv.proc.pid)
        req = f"POST {path} HTTP/1.1\r\nhost: api.example\r\ncontent-type: application/json\r\n{head}\r\n\r\n"
        st, written, took = push(srv.addr(), req.encode(), data)
        time.sleep(0.5)
        after = rss_kb(srv.proc.pid)
        ok = get(gw.addr())[0] if srv is gw else call(f"http://{srv.addr()}{KEYS}")[0]
        rows.append({"case": name, "status": st, "written_mib": written / 1048576, "took_s": took,
                     "rss_before_kb": before, "rss_after_kb": after, "next_request": ok})
    gw.stop()
    idsrv.stop()
    hello.terminate()
    return rows


def flood(scratch):
    srv = Server(["identity", "--project", "rel-proj", "--listen", "127.0.0.1:0",
                  "--trusted-proxy-hops", "1", "--data-dir", os.path.join(scratch, "id-flood")],
                 os.path.join(scratch, "id-flood.log"))
    addr = srv.addr()
    base = f"http://{addr}/identitytoolkit.googleapis.com/v1/accounts"
    for who in ("victim", "other"):
        call(f"{base}:signUp?key=k", {"email": f"{who}@example.com", "password": f"{who}-password-1"},
             )
    st, body, _ = call(f"{base}:signInWithPassword?key=k",
                       {"email": "other@example.com", "password": "other-password-1",
                        "returnSecureToken": True})
    id_token = body["idToken"]
    h, p = addr.rsplit(":", 1)

    def lookups(stop):
        c = http.client.HTTPConnection(h, int(p), timeout=30)
        lat, bad = [], 0
        payload = json.dumps({"idToken": id_token})
        while not stop.is_set():
            t = time.time()
            try:
                c.request("POST", "/identitytoolkit.googleapis.com/v1/accounts:lookup?key=k",
                          body=payload, headers={"content-type": "application/json",
                                                 "x-forwarded-for": "192.0.2.200"})
                r = c.getresponse()
                r.read()
                if r.status == 200:
                    lat.append(time.time() - t)
                else:
                    bad += 1
            except OSError:
                bad += 1
                c = http.client.HTTPConnection(h, int(p), timeout=30)
        return lat, bad

    def phase(kind, flooders):
        stop = threading.Event()
        counts = {}
        lock = threading.Lock()
        refusal = []

        def flooder(i):
            c = http.client.HTTPConnection(h, int(p), timeout=60)
            n = 0
            while not stop.is_set():
                n += 1
                k = i * 100_000 + n
                many = f"10.{k >> 16 & 255}.{k >> 8 & 255}.{k & 255}"
                if kind == "one IP, many accounts":
                    ip, email = "203.0.113.7", f"u{i}-{n}@example.com"
                elif kind == "many IPs, one account":
                    ip, email = many, "victim@example.com"
                else:
                    ip, email = many, f"u{i}-{n}@example.com"
                t = time.time()
                try:
                    c.request("POST", "/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword?key=k",
                              body=json.dumps({"email": email, "password": "wrong-guess"}),
                              headers={"content-type": "application/json", "x-forwarded-for": ip})
                    r = c.getresponse()
                    b = r.read()
                    try:
                        msg = json.loads(b)["error"]["message"]
                    except (ValueError, KeyError, TypeError):
                        msg = str(r.status)
                    key = f"{r.status} {msg}"
                    if msg == "TOO_MANY_ATTEMPTS_TRY_LATER":
                        with lock:
                            refusal.append(time.time() - t)
                except OSError:
                    key = "transport error"
                    c = http.client.HTTPConnection(h, int(p), timeout=60)
                with lock:
                    counts[key] = counts.get(key, 0) + 1

        ths = []
        if kind != "none":
            ths = [threading.Thread(target=flooder, args=(i,)) for i in range(flooders)]
        for th in ths:
            th.start()
        out = {}
        lk = threading.Thread(target=lambda: out.update(r=lookups(stop)))
        lk.start()
        time.sleep(FLOOD_SECS)
        stop.set()
        lk.join()
        for th in ths:
            th.join()
        lat, bad = out["r"]
        return {"flood": kind, "flooders": len(ths), "lookups": len(lat), "lookup_failed": bad,
                "p50_ms": pct(lat, 50) * 1000, "p99_ms": pct(lat, 99) * 1000,
                "max_ms": max(lat) * 1000 if lat else None, "answers": counts,
                "refusal_p99_ms": pct(refusal, 99) * 1000 if refusal else None}

    rows = [phase("none", 0), phase("one IP, many accounts", FLOODERS),
            phase("many IPs, one account", FLOODERS),
            phase("many IPs, many accounts", QUEUE_FLOODERS)]
    rss_after = rss_kb(srv.proc.pid)
    # After the flood the victim is locked (per-account limit) but the other user signs in.
    st_v, b_v, _ = call(f"{base}:signInWithPassword?key=k",
                        {"email": "victim@example.com", "password": "victim-password-1"})
    st_o, _, _ = call(f"{base}:signInWithPassword?key=k",
                      {"email": "other@example.com", "password": "other-password-1"})
    srv.stop()
    return {"rows": rows, "victim_after": (st_v, (b_v or {}).get("error", {}).get("message")),
            "other_after": st_o, "rss_kb": rss_after}


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    docs = sys.argv[sys.argv.index("--docs") + 1] if "--docs" in sys.argv else None
    scratch = tempfile.mkdtemp(prefix="overload-")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    report = {"date": started, "binary": binary(), "nofile": hard}
    for name, fn in [("idle", idle), ("slowloris", slowloris), ("bodies", bodies), ("flood", flood)]:
        t = time.time()
        report[name] = fn(scratch)
        print(f"== {name} ({time.time() - t:.0f} s)")
        print(json.dumps(report[name], indent=1))
    out = os.path.join(ROOT, "bench/reliability/results",
                       time.strftime("%Y%m%dT%H%M%SZ-overload.json", time.gmtime()))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"raw figures: {out}")
    if docs:
        print("(figures go into docs by hand; see docs/reliability.md §5)")


if __name__ == "__main__":
    main()
