"""What the scenario 7 and 8 harnesses share: the binary, a started `gatehouse` process and
its log, plain HTTP calls. Standard library only; 127.0.0.1 only."""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def die(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def binary():
    """The gatehouse binary: $GATEHOUSE_BIN, else the release build, else the debug build."""
    for cand in (os.environ.get("GATEHOUSE_BIN"),
                 os.path.join(ROOT, "target/release/gatehouse"),
                 os.path.join(ROOT, "target/debug/gatehouse")):
        if cand and os.path.isfile(cand):
            return cand
    die("no gatehouse binary: run `cargo build --release -p gatehouse` (or set GATEHOUSE_BIN)")


def require(program, hint):
    if shutil.which(program) is None:
        die(f"`{program}` is required but not installed: {hint}")


class Server:
    """A started `gatehouse` command whose JSON log goes to `log_path`."""

    def __init__(self, args, log_path, env=None, ready=lambda line: '"listening"' in line):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([binary()] + args, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env)
        deadline = time.time() + 120
        self.line = None
        while time.time() < deadline:
            for line in self.lines():
                if ready(line):
                    self.line = line
                    return
            if self.proc.poll() is not None:
                die(f"gatehouse {args[0]} exited early; see {log_path}")
            time.sleep(0.05)
        self.proc.kill()
        die(f"gatehouse {args[0]} did not get ready; see {log_path}")

    def lines(self):
        with open(self.log_path) as f:
            return f.read().splitlines()

    def addr(self):
        return json.loads(self.line)["addr"]

    def stop(self, timeout=60):
        """SIGTERM, then the seconds it took to exit (None: still running, killed)."""
        t = time.time()
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
            return time.time() - t
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None


def call(url, body=None, form=None, timeout=30):
    """POST JSON (or a form) or GET: (status, parsed body or None, seconds)."""
    data, headers = None, {}
    if body is not None:
        data, headers = json.dumps(body).encode(), {"content-type": "application/json"}
    elif form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers = {"content-type": "application/x-www-form-urlencoded"}
    req = urllib.request.Request(url, data=data, headers=headers)
    t = time.time()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except Exception as e:  # noqa: BLE001 - a transport failure is a figure here
        return 0, {"transport": str(e)}, time.time() - t
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    return status, parsed, time.time() - t


import urllib.parse  # noqa: E402  (used by call)
