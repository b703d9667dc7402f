#!/usr/bin/env python3
"""The runner under the faults of issue #16, long forms of scenarios 2 and 4 (its part).

  bench/reliability/runner_faults.py [--kill-seconds N] [--kills K] [--switch-seconds N]
        [--every S] [--clients C] [--instances I]

Runs from any directory; never builds anything. It measures $GATEHOUSE_BIN, or
target/release/gatehouse (cargo build --release -p gatehouse). Needs python3.

One `gatehouse up` on 127.0.0.1 with two services running the same small Python server (answers
`{"pid", "greeting"}` after 10 ms): `hello`, private, behind the stack's gateway (its account
holds roles/run.invoker), and `open`, public, called on its ingress directly. Each has
--instances instances (min = max, default 2). --clients threads per target (default 8) send
keep-alive GETs (10 s client timeout) for the whole of each phase.

  kill    (§2) --kills times (default 3) over --kill-seconds (default 30), alternating targets:
          SIGKILL to the process group of the instance that answered last. Per kill: requests
          failed (status != 200) or without an HTTP answer, the slowest, whether a survivor kept
          serving, and when the restarted process (a new pid) answered its first 200.
          Pass: every request got an HTTP answer (200, or 502/503 for those the kill cut) within
          5 s; the killed instance answers again.
  switch  (§4) every --every seconds (default 1.0) for --switch-seconds (default 60) the manifest
          changes both services' GREETING and `gatehouse up -f` applies it to the running stack
          (a new revision of each: started, ready, traffic moved, the old one drained and
          stopped). Pass: 0 failed requests, 0 requests without an answer; after the run both
          targets answer with the last greeting.

Output: a JSON line per phase appended to bench/reliability/results/<UTC stamp>-runner.jsonl and
a summary on stdout.
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, binary, die  # noqa: E402

APP = r'''
import http.server, json, os, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        time.sleep(0.01)
        body = json.dumps({"pid": os.getpid(), "greeting": os.environ.get("GREETING")}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
'''

OPENAPI = """swagger: '2.0'
info: {title: t, version: 1.0.0}
paths:
  /hello:
    get:
      operationId: hello
      x-google-backend:
        address: '${services.hello.url}'
"""


def manifest(work, greeting, instances):
    app = os.path.join(work, "app.py")
    py = shutil.which("python3")
    svc = (f"command: [{py}, {app}], min_instances: {instances}, max_instances: {instances}, "
           f"concurrency: 80, env: {{GREETING: '{greeting}'}}")
    return (
        "project: {id: runner-faults}\n"
        "identity: {port: 0}\n"
        "service_accounts: [{name: apigw-sa}]\n"
        "bindings: [{resource: services/hello, role: roles/run.invoker, member: 'serviceAccount:apigw-sa'}]\n"
        f"services:\n  - {{name: hello, {svc}}}\n  - {{name: open, allow_unauthenticated: true, {svc}}}\n"
        "apis: [{name: hello-api, openapi: openapi.yaml}]\n"
        "gateways: [{name: gw, port: 0, api: hello-api, service_account: apigw-sa}]\n"
    )


class Load:
    """Threads sending keep-alive GETs to one target; every outcome recorded as
    (sent, took, status, pid, greeting); status 0: no HTTP answer."""

    def __init__(self, name, hostport, path, clients):
        self.name, self.hostport, self.path = name, hostport, path
        self.out, self.lock, self.stop = [], threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def run(self):
        conn = None
        while not self.stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection(self.hostport, timeout=10)
            sent = time.time()
            status, pid, greeting = 0, None, None
            try:
                conn.request("GET", self.path)
                r = conn.getresponse()
                body = r.read()
                status = r.status
                if status == 200:
                    d = json.loads(body)
                    pid, greeting = d["pid"], d["greeting"]
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException, ValueError):
                conn.close()
                conn = None
            with self.lock:
                self.out.append((sent, time.time() - sent, status, pid, greeting))

    def last_pid(self):
        with self.lock:
            for o in reversed(self.out):
                if o[3]:
                    return o[3]
        return None

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(15)
        return self.out


def stats(outcomes):
    st = {}
    for o in outcomes:
        st[o[2]] = st.get(o[2], 0) + 1
    return {"requests": len(outcomes), "statuses": {str(k): v for k, v in sorted(st.items())},
            "no_answer": st.get(0, 0), "slowest_s": round(max((o[1] for o in outcomes), default=0), 3)}


def kill_phase(loads, seconds, kills):
    records = []
    step = seconds / (kills + 1)
    start = time.time()
    for k in range(kills):
        time.sleep(max(0, start + step * (k + 1) - time.time()))
        load = loads[k % len(loads)]
        pid = load.last_pid()
        with load.lock:
            seen = {o[3] for o in load.out if o[3]}
        t_kill = time.time()
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError as e:
            die(f"kill {pid}: {e}")
        records.append({"target": load.name, "pid": pid, "t": t_kill, "seen": seen})
    time.sleep(max(0, start + seconds - time.time()))
    outs = {ld.name: ld.finish() for ld in loads}
    result = []
    for r in records:
        out = outs[r["target"]]
        after = [o for o in out if o[0] + o[1] >= r["t"]]
        window = [o for o in after if o[0] < r["t"] + 5]
        failed = [o for o in window if o[2] != 200]
        new_pid = [o for o in after if o[2] == 200 and o[3] not in r["seen"]]
        survivor = [o for o in after if o[2] == 200 and o[3] in r["seen"] and o[3] != r["pid"]]
        back = min((o[0] + o[1] for o in new_pid), default=None)
        result.append({
            "target": r["target"],
            "failed": len(failed),
            "failed_statuses": sorted({o[2] for o in failed}),
            "slowest_failure_s": round(max((o[1] for o in failed), default=0), 3),
            "survivor_served": len([o for o in survivor if back is None or o[0] < back]),
            "replacement_first_200_s": None if back is None else round(back - r["t"], 3),
        })
    totals = {name: stats(out) for name, out in outs.items()}
    ok = all(t["no_answer"] == 0 and t["slowest_s"] < 5
             and set(t["statuses"]) <= {"200", "502", "503"} for t in totals.values())
    ok = ok and all(r["replacement_first_200_s"] is not None for r in result)
    return {"phase": "kill", "pass": ok, "kills": result, "totals": totals}


def switch_phase(loads, work, data, seconds, every, instances):
    applies = []
    n = 0
    start = time.time()
    while time.time() - start < seconds:
        n += 1
        greeting = f"g{n}"
        with open(os.path.join(work, "gatehouse.yaml"), "w") as f:
            f.write(manifest(work, greeting, instances))
        t = time.time()
        p = subprocess.run([binary(), "up", "-f", os.path.join(work, "gatehouse.yaml"),
                            "--data-dir", data], capture_output=True, text=True, timeout=120)
        applies.append({"n": n, "rc": p.returncode, "took_s": round(time.time() - t, 3),
                        "err": p.stderr.strip()[-300:] if p.returncode else ""})
        time.sleep(max(0, t + every - time.time()))
    last = f"g{n}"
    time.sleep(0.5)
    outs = {ld.name: ld.finish() for ld in loads}
    totals = {name: stats(out) for name, out in outs.items()}
    final = {name: out[-1][4] if out else None for name, out in outs.items()}
    greetings = {name: len({o[4] for o in out if o[4]}) for name, out in outs.items()}
    took = sorted(a["took_s"] for a in applies)
    ok = all(a["rc"] == 0 for a in applies) and all(
        t["requests"] > 0 and set(t["statuses"]) == {"200"} for t in totals.values()
    ) and all(v == last for v in final.values())
    return {"phase": "switch", "pass": ok, "applies": len(applies),
            "applies_failed": [a for a in applies if a["rc"]],
            "apply_median_s": took[len(took) // 2] if took else None,
            "apply_max_s": took[-1] if took else None, "last": last, "final": final,
            "greetings_seen": greetings, "totals": totals}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kill-seconds", type=float, default=30)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--switch-seconds", type=float, default=60)
    ap.add_argument("--every", type=float, default=1.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--instances", type=int, default=2)
    ap.add_argument("--phases", default="kill,switch")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="runner-faults-")
    data = os.path.join(work, "data")
    with open(os.path.join(work, "app.py"), "w") as f:
        f.write(APP)
    with open(os.path.join(work, "openapi.yaml"), "w") as f:
        f.write(OPENAPI)
    with open(os.path.join(work, "gatehouse.yaml"), "w") as f:
        f.write(manifest(work, "g0", a.instances))
    log = open(os.path.join(work, "up.log"), "w")
    up = subprocess.Popen([binary(), "up", "--output", "json", "-f",
                           os.path.join(work, "gatehouse.yaml"), "--data-dir", data],
                          stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
    report = None
    deadline = time.time() + 120
    while time.time() < deadline:
        line = up.stdout.readline()
        if not line:
            die(f"up exited; see {work}/up.log")
        if line.startswith("{") and '"components"' in line:
            report = json.loads(line)
            break
    if report is None:
        os.killpg(up.pid, signal.SIGKILL)
        die("up did not get ready")
    threading.Thread(target=lambda: up.stdout.read(), daemon=True).start()
    comps = report["components"]
    gw = comps["gateway:gw"]["url"].removeprefix("http://")
    ingress = comps["service:open"]["url"].removeprefix("http://")
    results = []

    def loads():
        return [Load("gateway→hello (private)", gw, "/hello", a.clients),
                Load("ingress→open (public)", ingress, "/", a.clients)]
    try:
        for phase in a.phases.split(","):
            ld = loads()
            time.sleep(1)
            if phase == "kill":
                results.append(kill_phase(ld, a.kill_seconds, a.kills))
            elif phase == "switch":
                results.append(switch_phase(ld, work, data, a.switch_seconds, a.every, a.instances))
            time.sleep(1)
    finally:
        t = time.time()
        subprocess.run([binary(), "down", "--data-dir", data], capture_output=True, timeout=120)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
        down_s = time.time() - t
    os.makedirs(os.path.join(ROOT, "bench/reliability/results"), exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = os.path.join(ROOT, f"bench/reliability/results/{stamp}-runner.jsonl")
    with open(path, "w") as f:
        f.write(json.dumps({"kind": "meta", "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                            "args": vars(a), "nproc": os.cpu_count(),
                            "load": os.getloadavg(), "down_s": round(down_s, 2)}) + "\n")
        for r in results:
            f.write(json.dumps(r) + "\n")
    for r in results:
        print(json.dumps(r, indent=1))
    ok = all(r["pass"] for r in results)
    if ok:
        shutil.rmtree(work, ignore_errors=True)
    print(f"results: {path}" + ("" if ok else f"; work dir {work}"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
