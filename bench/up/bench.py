#!/usr/bin/env python3
"""Time from `gatehouse up` to every component ready, and the whole stack's memory at rest.

Runs the demo manifest (ports chosen by the system) several times: cold (a fresh data dir) and
warm (the same data dir again), with the SQLite fallback for the SQL instance (PostgreSQL
hidden) and, when installed, with managed PostgreSQL. "Ready" is the moment `up` prints its
URL table ("Ready in N ms"); wall time is measured from exec. Memory at rest is the summed RSS
of `up` and every process it started, 5 s after ready, with no load.
"""
import json, os, shutil, signal, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("GATEHOUSE_BIN", ROOT / "target/release/gatehouse"))
RUNS = int(os.environ.get("BENCH_RUNS", "5"))


def tree_rss_kb(pid):
    """RSS of pid and all its descendants, in kB."""
    children = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(p.name))
        except (OSError, IndexError, ValueError):
            pass
    total, todo = 0, [pid]
    while todo:
        q = todo.pop()
        try:
            for line in Path(f"/proc/{q}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
        todo.extend(children.get(q, []))
    return total


def demo(dir_):
    src = ROOT / "examples/demo"
    text = (src / "gatehouse.yaml").read_text().replace("port: 9099", "port: 0").replace("port: 8080", "port: 0")
    (dir_ / "gatehouse.yaml").write_text(text)
    shutil.copy(src / "openapi.yaml", dir_ / "openapi.yaml")
    return dir_ / "gatehouse.yaml"


def one(manifest, data, env):
    t0 = time.monotonic()
    p = subprocess.Popen([str(BIN), "up", "-f", str(manifest), "--data-dir", str(data)],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    ready_ms = None
    for line in p.stdout:
        if line.startswith("Ready in"):
            ready_ms = int(line.split()[2])
            break
    wall = (time.monotonic() - t0) * 1000
    time.sleep(5)
    rss = tree_rss_kb(p.pid)
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
    return {"wall_ms": round(wall), "reported_ms": ready_ms, "rss_mb": round(rss / 1024, 1)}


def main():
    if not BIN.is_file():
        sys.exit(f"{BIN} is missing: cargo build --release -p gatehouse")
    results = []
    variants = [("sqlite", {"GATEHOUSE_PG_BIN": "/nonexistent"})]
    if Path("/usr/lib/postgresql/15/bin/initdb").is_file():
        variants.append(("postgres", {}))
    for name, extra in variants:
        env = {**os.environ, **extra}
        for kind in ("cold", "warm"):
            for i in range(RUNS):
                with tempfile.TemporaryDirectory(prefix="gh-up-bench-") as d:
                    d = Path(d)
                    # The managed PostgreSQL runs as the postgres user, which must reach the
                    # data dir (TemporaryDirectory makes it 0700).
                    os.chmod(d, 0o755)
                    m = demo(d)
                    if kind == "warm":
                        one(m, d / "data", env)
                    r = one(m, d / "data", env)
                r.update(variant=name, kind=kind, run=i)
                print(json.dumps(r), flush=True)
                results.append(r)
    out = ROOT / "bench/up/results" / time.strftime("%Y%m%dT%H%M%SZ.jsonl", time.gmtime())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in results))
    print(f"results: {out}")
    med = lambda xs: sorted(xs)[len(xs) // 2]
    print("| state store / SQL instance | start | ready, median of %d (wall from exec) | memory at rest (RSS, all processes) |" % RUNS)
    print("|---|---|---:|---:|")
    for name, _ in variants:
        for kind in ("cold", "warm"):
            rs = [r for r in results if r["variant"] == name and r["kind"] == kind]
            print(f"| SQLite / {'SQLite fallback' if name == 'sqlite' else 'managed PostgreSQL'} | {kind} | {med([r['wall_ms'] for r in rs])} ms | {med([r['rss_mb'] for r in rs])} MB |")


if __name__ == "__main__":
    main()
