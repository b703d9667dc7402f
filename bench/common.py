"""What the benchmark drivers (bench/gateway, bench/identity, bench/vote) share.

* the results file: one JSON object a line (`open_results`, `emit`, `close_results`), progress on
  stderr (`say`);
* /proc: machine CPU ticks, a process tree, its CPU ticks and memory (VmRSS sampled by
  `RssSampler`, VmHWM), the ksoftirqd threads that finish loopback packet processing;
* a quiet machine: wait for compilers and test runners to finish (`wait_for_builds`,
  `ToolWait`), then for the whole machine to idle (`wait_quiet`);
* servers: started in their own process group, ready when an HTTP path answers 200, stopped by
  killing the group (`Server`, `stop_all` for the signal handlers);
* wrk: its text output parsed (`parse_wrk`);
* the run's metadata (`machine_meta`) and a Markdown section of a doc replaced in place
  (`write_section`).

Import it with `sys.path.insert(0, <repo>/bench)`; it imports only the standard library.
"""

import datetime
import http.client
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
TCK = os.sysconf("SC_CLK_TCK")
# Process names that mean "someone else is building": the machine is not quiet.
BUILD_TOOLS = {"rustc", "cc1", "cc1plus", "cargo", "ld", "collect2", "as", "cc", "gcc", "c++"}
# Process names that mean "someone is building or testing" (ToolWait).
BUSY_TOOLS = {"rustc", "cargo", "cc1", "cc1plus", "pytest", "node"}


def env_int(name, default):
    return int(os.environ.get(name, default))


def env_list(name, default):
    return [x.strip() for x in os.environ.get(name, default).split(",") if x.strip()]


def say(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the results file (JSON lines)

OUT = None  # results file handle, between open_results and close_results


def open_results(path):
    """Opens the results file for appending; `emit` writes to it."""
    global OUT
    OUT = open(path, "a")
    return OUT


def close_results():
    global OUT
    if OUT is not None:
        OUT.close()
        OUT = None


def emit(rec):
    """Appends one record (with a timestamp `t`) to the results file."""
    rec = {"t": round(time.time(), 3), **rec}
    OUT.write(json.dumps(rec, separators=(",", ":")) + "\n")
    OUT.flush()


def load(path):
    """The records of a results file."""
    return [json.loads(line) for line in open(path) if line.strip()]


# ---------------------------------------------------------------- /proc

def proc_stat_cpu():
    """(user+nice+system, steal, irq+softirq) ticks over all CPUs."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = f
    return user + nice + system, steal, irq + softirq


def ppid_map():
    m = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            rest = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        m.setdefault(int(rest[1]), []).append(int(d))
    return m


def proc_tree(pid):
    """`pid` and all its descendants."""
    m, out, todo = ppid_map(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(m.get(p, []))
    return out


def cpu_ticks(pids):
    """utime + stime of the processes, in clock ticks."""
    total = 0
    for p in pids:
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except OSError:
            pass
    return total


def status_kb(pids, key):
    """The sum of a /proc/PID/status field in kB (VmRSS, VmHWM) over the processes."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def proc_names():
    names = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                names.append((int(d), open(f"/proc/{d}/comm").read().strip()))
            except OSError:
                pass
    return names


def ksoftirqd_pids():
    """Kernel threads that finish loopback packet processing for the test traffic."""
    return [pid for pid, name in proc_names() if name.startswith("ksoftirqd")]


class RssSampler(threading.Thread):
    """Samples the VmRSS sum of `pids` every `every` seconds until `halt` is set; keeps the peak."""

    def __init__(self, pids, every=0.1):
        super().__init__(daemon=True)
        self.pids, self.every, self.peak_kb = pids, every, 0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            self.peak_kb = max(self.peak_kb, status_kb(self.pids, "VmRSS"))
            self.halt.wait(self.every)


# ---------------------------------------------------------------- a quiet machine

def busy_pct(seconds=1.0):
    b0 = proc_stat_cpu()[0]
    time.sleep(seconds)
    return 100.0 * (proc_stat_cpu()[0] - b0) / TCK / seconds  # % of one core


def wait_quiet(limit, thresh=10.0, need=3):
    """Bounded wait until the whole machine uses < thresh % of one core for `need` seconds."""
    t_end, ok = time.time() + limit, 0
    while time.time() < t_end:
        ok = ok + 1 if busy_pct() < thresh else 0
        if ok >= need:
            return True
    say(f"  machine not quiet after {limit}s; measuring anyway")
    return False


def wait_for_builds(limit):
    """Bounded wait for compilers (someone else's cargo build) to finish."""
    t0 = time.time()
    seen = set()
    while True:
        running = sorted({n for _, n in proc_names() if n in BUILD_TOOLS})
        if not running:
            return {"build_seen": sorted(seen), "waited_s": round(time.time() - t0, 1), "quiet": True}
        if not seen:
            say(f"  waiting (up to {limit}s) for build tools to finish: {running}")
        seen.update(running)
        if time.time() - t0 > limit:
            say(f"  build tools still running after {limit}s: {running}; measuring anyway")
            return {"build_seen": sorted(seen), "waited_s": round(time.time() - t0, 1), "quiet": False}
        time.sleep(10)


def busy_tools():
    """Names of running processes that mean "someone is building or testing" (not ours)."""
    me = os.getpid()
    found = set()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            comm = open(f"/proc/{d}/comm").read().strip()
            cmd = open(f"/proc/{d}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if comm in BUSY_TOOLS or comm.startswith("cargo"):
            found.add(comm)
        elif "pytest" in cmd and comm.startswith(("python", "pytest", "py.test")):
            found.add("pytest")
    return sorted(found)


class ToolWait:
    """Bounded wait (total budget) for compilers / test runners, polling every 20 s."""

    def __init__(self, budget):
        self.deadline = time.time() + budget
        self.seen = set()
        self.waited = 0.0

    def wait(self, settle=False):
        """settle: also require a second empty poll 20 s later (CI jobs run steps back to back)."""
        t0 = time.time()
        announced = False
        while True:
            running = busy_tools()
            if not running and settle and time.time() < self.deadline:
                time.sleep(20)
                running = busy_tools()
            if not running:
                self.waited += time.time() - t0
                return True
            self.seen.update(running)
            if time.time() >= self.deadline:
                say(f"  still running after the wait budget: {running}; measuring anyway")
                self.waited += time.time() - t0
                return False
            if not announced:
                say(f"  waiting for {running} to finish (poll every 20 s, until "
                    f"{datetime.datetime.fromtimestamp(self.deadline, datetime.timezone.utc):%H:%M:%S} UTC)")
                announced = True
            time.sleep(min(20, max(1, self.deadline - time.time())))


# ---------------------------------------------------------------- servers

def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def request(port, method, path, body=None, headers=None, timeout=10):
    """One request to 127.0.0.1:`port` on a fresh connection: (status, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def http_call(port, method, path, body=None, ctype="application/json", timeout=10):
    headers = {"Content-Type": ctype} if body is not None else {}
    return request(port, method, path, body, headers, timeout)


FOREIGN_MAX = 10.0  # % of one core used by processes outside the test -> run discarded


def repeat_runs(want, label, one_try, digits=2):
    """Runs `one_try(tries)` until `want` runs were kept, at most 3 * `want` tries. A run during
    which processes outside the test used more than FOREIGN_MAX % of a core is discarded, unless
    it is the last chance of keeping any. `one_try` returns (record, figures, cpu): what is
    emitted besides the figures and the verdict, the figures, the CPU part of the progress line."""
    kept = tries = 0
    while kept < want and tries < 3 * want:
        tries += 1
        record, r, cpu = one_try(tries)
        disturbed = r["foreign_pct"] > FOREIGN_MAX
        discarded = disturbed and not (tries >= 3 * want and kept == 0)
        emit({**record, "try": tries, "discarded": discarded, **r})
        say(f"  [{label}] try {tries}: {r['rps']:.0f} req/s p50 {r['p50_ms']:.{digits}f} ms "
            f"p99 {r['p99_ms']:.{digits}f} ms non-2xx {r['non2xx']} errs {r['socket_errors']} {cpu} "
            f"foreign {r['foreign_pct']}% rss {r['rss_peak_mb']} MB{' DISCARDED (other load)' if discarded else ''}")
        if not discarded:
            kept += 1
        time.sleep(1)


def start_run(results, scratch):
    """Opens the results file, makes this run's scratch folder (`<scratch>/run-<results' name>`)
    and stops every server on SIGTERM and SIGINT; the scratch folder."""
    os.makedirs(os.path.dirname(os.path.abspath(results)), exist_ok=True)
    open_results(results)
    work = os.path.join(scratch, "run-" + os.path.basename(results).split(".")[0])
    os.makedirs(work, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: (stop_all(), sys.exit(143)))
    signal.signal(signal.SIGINT, lambda *_: (stop_all(), sys.exit(130)))
    return work


def pf(ok):
    """A verdict cell: **PASS**, **FAIL** or n/a (not measured)."""
    return "n/a" if ok is None else ("**PASS**" if ok else "**FAIL**")


def cli(cmd_run, report=None, add_run_args=lambda r: None):
    """`bench.py run --results R [--docs D] [--gatehouse G] ...` (the bench's own arguments added
    by `add_run_args`) and, with `report`, `bench.py report RESULTS [--docs D]`."""
    import argparse
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--results", required=True)
    r.add_argument("--docs")
    r.add_argument("--gatehouse", default=os.path.join(ROOT, "target", "release", "gatehouse"))
    add_run_args(r)
    if report is not None:
        p = sub.add_parser("report")
        p.add_argument("results")
        p.add_argument("--docs")
    args = ap.parse_args()
    if args.cmd == "run":
        cmd_run(args)
    else:
        print(report(args.results, args.docs))


LIVE = []  # servers still running (stopped on exit, on error and on SIGINT/SIGTERM)


class Server:
    """A server process in its own process group, its output in `log_path`."""

    def __init__(self, name, argv, cwd, env, log_path, port, ready_path, extra_ports=()):
        self.name, self.argv, self.cwd, self.env = name, argv, cwd, env
        self.log_path, self.port, self.ready_path = log_path, port, ready_path
        self.extra_ports = extra_ports
        self.proc = None

    def start(self):
        for p in (self.port, *self.extra_ports):
            if port_open(p):
                raise SystemExit(f"port 127.0.0.1:{p} is already in use; not starting {self.name}")
        log = open(self.log_path, "ab")
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        LIVE.append(self)

    def wait_ready(self, timeout):
        """Seconds from exec until GET ready_path answers 200."""
        end = self.t0 + timeout
        while time.perf_counter() < end:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                status, _ = http_call(self.port, "GET", self.ready_path, timeout=2)
                if status == 200:
                    return time.perf_counter() - self.t0
            except OSError:
                pass
            time.sleep(0.005)
        raise SystemExit(f"{self.name} not ready after {timeout}s; see {self.log_path}")

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        # anything left in the group (children that ignored SIGTERM)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self in LIVE:
            LIVE.remove(self)
        self.proc = None


def stop_all(*_):
    for s in list(LIVE):
        s.stop()


# ---------------------------------------------------------------- wrk

def to_ms(s):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", s)
    if not m:
        return None
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]


def parse_wrk(text):
    """Requests/s, latency percentiles (ms), request count, non-2xx/3xx and socket errors."""
    r = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not m:
        raise ValueError("no Requests/sec in wrk output:\n" + text)
    r["rps"] = float(m.group(1))
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", text, re.M)
        r[f"p{pct}_ms"] = to_ms(m.group(1)) if m else None
    m = re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M)
    r["max_ms"] = to_ms(m.group(3)) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+\w+)", text)
    r["requests"] = int(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    r["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()))) if m else {}
    return r


# ---------------------------------------------------------------- metadata and docs

def command_output(cmd):
    """stdout (or stderr) of a command, stripped; "" when it cannot run."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return p.stdout.strip() or p.stderr.strip()


def utc_mtime(path):
    return datetime.datetime.fromtimestamp(
        os.path.getmtime(path), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def machine_meta():
    """The `meta` record's machine part: date, CPUs, memory, kernel, git revision, wrk."""
    cpu_model = ""
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1))
    rev = command_output(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    dirty = bool(command_output(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"]))
    wrk_v = command_output(["wrk", "-v"])
    return {
        "kind": "meta",
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(), "cpu_model": cpu_model, "mem_gib": round(mem_kb / 1048576, 1),
        "kernel": platform.release(), "git_rev": rev + ("-dirty" if dirty else ""),
        "wrk": wrk_v.splitlines()[0].split(" Copyright")[0] if wrk_v else "",
    }


def write_section(docs_path, heading, section):
    """Replaces the `heading` section of a Markdown doc (from that line up to the next "## "
    heading, or up to a "### " subsection that `section` does not write itself: another
    harness's or a hand-written one, kept) with `section`, or appends it."""
    old = open(docs_path).read() if os.path.exists(docs_path) else ""
    lines = old.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.rstrip("\n") == heading), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + section if old else section
    else:
        own = {ln for ln in section.splitlines() if ln.startswith("### ")}
        end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")
                    or (lines[j].startswith("### ") and lines[j].rstrip("\n") not in own)),
                   len(lines))
        rest = "".join(lines[end:])
        new = "".join(lines[:start]) + section + ("\n" + rest if rest else "")
    with open(docs_path, "w") as fh:
        fh.write(new)
