#!/usr/bin/env python3
"""Issue 16, scenario 8, long form: graceful shutdown under load, ROUNDS times each.

  identity  SIGTERM to `gatehouse identity` while 8 keep-alive clients sign in (argon2).
  keys      SIGTERM to `gatehouse identity` while 32 clients fetch the published keys (answered
            at once: connections are mostly between two requests when the signal lands).
  gateway   SIGTERM to `gatehouse gateway` in front of a backend answering in 200 ms, 32 clients.
  down      `gatehouse down` for an `up` stack (gateway -> private service whose instance
            answers in 300 ms and dies at once on SIGTERM), 16 clients through the gateway.

Clients are plain keep-alive sockets; a request counts as sent before the signal when its
write returned before the signal was sent. Reported per round: sent before, failed of those,
answered after, refused after, the time from the signal to the process's exit. Pass: zero
failed, every process gone within 30 s, new connections refused. 127.0.0.1 only; stops by
itself.

    bench/reliability/shutdown.sh         # ROUNDS=5 WARMUP=2
"""

import http.server
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import Server, binary, call, die, require  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "5"))
WARMUP = float(os.environ.get("WARMUP", "2"))

SLOW = """import http.server, os, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        time.sleep(float(os.environ.get("DELAY", "0.3")))
        self.send_response(200)
        self.send_header("content-length", "5")
        self.end_headers()
        self.wfile.write(b"slept")
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


def read_response(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} bytes")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin1").split("\r\n")
    status = int(lines[0].split()[1])
    hdr = {k.strip().lower(): v.strip().lower() for k, v in
           (l.split(":", 1) for l in lines[1:] if ":" in l)}
    need = int(hdr.get("content-length", "0"))
    while len(rest) < need:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside the body")
        rest += chunk
    return status, "close" in hdr.get("connection", "")


def drain(addr, request, clients, signal):
    host, port = addr.rsplit(":", 1)
    port = int(port)
    state = {"at": None}
    results, lock, give_up = [], threading.Lock(), threading.Event()

    def client():
        conn = None
        while not give_up.is_set():
            if conn is None:
                try:
                    conn = socket.create_connection((host, port), timeout=60)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError as e:
                    with lock:
                        results.append(("refused" if state["at"] else "failed", time.time(), str(e)))
                    return
            try:
                conn.sendall(request)
            except OSError:
                conn = None
                if state["at"]:
                    continue
                with lock:
                    results.append(("failed", time.time(), "write"))
                continue
            sent = time.time()
            try:
                status, close = read_response(conn)
                with lock:
                    results.append(("answered", sent, status))
                if close:
                    conn.close()
                    conn = None
            except OSError as e:
                with lock:
                    results.append(("failed", sent, str(e)))
                conn = None

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    time.sleep(WARMUP)
    state["at"] = time.time()
    exit_s = signal()
    deadline = time.time() + 60
    while any(t.is_alive() for t in threads) and time.time() < deadline:
        time.sleep(0.02)
    give_up.set()
    at = state["at"]
    before = [r for r in results if r[0] in ("answered", "failed") and r[1] < at]
    failed = [r for r in before if r[0] == "failed" or r[2] != 200]
    after_ok = sum(1 for r in results if r[0] == "answered" and r[1] >= at and r[2] == 200)
    refused = sum(1 for r in results if r[0] == "refused")
    try:
        socket.create_connection((host, port), timeout=2).close()
        accepts = True
    except OSError:
        accepts = False
    return {"sent_before": len(before), "failed_before": len(failed), "answered_after": after_ok,
            "refused_after": refused, "exit_s": exit_s, "accepts_after": accepts,
            "failures": sorted(set(str(r[2])[:50] for r in failed))}


def identity_round(scratch):
    srv = Server(["identity", "--project", "rel-proj", "--listen", "127.0.0.1:0", "--rate-limits",
                  "off", "--data-dir", os.path.join(scratch, "id")], os.path.join(scratch, "id.log"))
    body = '{"email":"ada@example.com","password":"pw-shutdown-1","returnSecureToken":true}'
    call(f"http://{srv.addr()}/identitytoolkit.googleapis.com/v1/accounts:signUp?key=k",
         {"email": "ada@example.com", "password": "pw-shutdown-1", "returnSecureToken": True})
    req = (f"POST /identitytoolkit.googleapis.com/v1/accounts:signInWithPassword?key=k HTTP/1.1\r\n"
           f"host: {srv.addr()}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
           f"{body}").encode()
    return drain(srv.addr(), req, 8, srv.stop)


def keys_round(scratch):
    srv = Server(["identity", "--project", "rel-proj", "--listen", "127.0.0.1:0", "--rate-limits",
                  "off", "--data-dir", os.path.join(scratch, "id")], os.path.join(scratch, "id.log"))
    req = (f"GET /robot/v1/metadata/x509/securetoken@system.gserviceaccount.com HTTP/1.1\r\n"
           f"host: {srv.addr()}\r\n\r\n").encode()
    return drain(srv.addr(), req, 32, srv.stop)


def slow_backend(delay):
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            time.sleep(delay)
            self.send_response(200)
            self.send_header("content-length", "5")
            self.end_headers()
            self.wfile.write(b"slept")

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def gateway_round(scratch):
    backend = slow_backend(0.2)
    cfg = os.path.join(scratch, "gw.yaml")
    with open(cfg, "w") as f:
        f.write("swagger: '2.0'\ninfo: {title: t, version: 1.0.0}\nhost: api.example\n"
                f"x-google-backend:\n  address: http://127.0.0.1:{backend.server_address[1]}\n"
                "paths:\n  /{x=**}:\n    get: {operationId: g}\n")
    srv = Server(["gateway", "--config", cfg, "--listen", "127.0.0.1:0"],
                 os.path.join(scratch, "gw.log"))
    r = drain(srv.addr(), b"GET /slow HTTP/1.1\r\nhost: api.example\r\n\r\n", 32, srv.stop)
    backend.shutdown()
    return r


def down_round(scratch):
    with open(os.path.join(scratch, "slow.py"), "w") as f:
        f.write(SLOW)
    with open(os.path.join(scratch, "openapi.yaml"), "w") as f:
        f.write("swagger: '2.0'\ninfo: {title: t, version: 1.0.0}\npaths:\n  /hello:\n    get:\n"
                "      operationId: hello\n      x-google-backend:\n"
                "        address: '${services.hello.url}'\n")
    manifest = os.path.join(scratch, "gatehouse.yaml")
    py = subprocess.run(["which", "python3"], capture_output=True, text=True).stdout.strip()
    with open(manifest, "w") as f:
        f.write("project: {id: down-project}\nidentity: {port: 0}\n"
                "service_accounts: [{name: apigw-sa}]\n"
                "bindings: [{resource: services/hello, role: roles/run.invoker, "
                "member: 'serviceAccount:apigw-sa'}]\n"
                f"services: [{{name: hello, command: [{py}, {scratch}/slow.py], min_instances: 1, "
                "concurrency: 100}]\n"
                "apis: [{name: hello-api, openapi: openapi.yaml}]\n"
                "gateways: [{name: gw, port: 0, api: hello-api, service_account: apigw-sa}]\n")
    data = os.path.join(scratch, "data")
    up = Server(["up", "--output", "json", "-f", manifest, "--data-dir", data],
                os.path.join(scratch, "up.out"),
                ready=lambda l: l.startswith("{") and '"components"' in l)
    import json
    gw = json.loads(up.line)["components"]["gateway:gw"]["url"].removeprefix("http://")

    def down():
        t = time.time()
        subprocess.run([binary(), "down", "--data-dir", data], capture_output=True, check=True)
        up.proc.wait(60)
        return time.time() - t

    return drain(gw, f"GET /hello HTTP/1.1\r\nhost: {gw}\r\n\r\n".encode(), 16, down)


def main():
    require("python3", "apt-get install -y python3")
    ok = True
    for name, fn in (("identity SIGTERM", identity_round), ("identity SIGTERM (keys)", keys_round),
                     ("gateway SIGTERM", gateway_round),
                     ("up + down", down_round)):
        totals = {"sent_before": 0, "failed_before": 0}
        exits = []
        for i in range(ROUNDS):
            with tempfile.TemporaryDirectory(prefix="gh-shutdown-") as scratch:
                r = fn(scratch)
            totals["sent_before"] += r["sent_before"]
            totals["failed_before"] += r["failed_before"]
            exits.append(r["exit_s"] or 999)
            print(f"{name} round {i + 1}: sent before {r['sent_before']}, failed {r['failed_before']}"
                  f" {r['failures'] or ''}, answered after {r['answered_after']}, refused after "
                  f"{r['refused_after']}, exit {r['exit_s'] or 0:.2f} s, accepts after "
                  f"{r['accepts_after']}", flush=True)
            ok &= r["failed_before"] == 0 and not r["accepts_after"] and (r["exit_s"] or 999) < 30
        print(f"{name}: {ROUNDS} rounds, {totals['sent_before']} requests sent before the signal, "
              f"{totals['failed_before']} failed; exit {min(exits):.2f}-{max(exits):.2f} s", flush=True)
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
