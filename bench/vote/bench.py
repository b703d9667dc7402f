#!/usr/bin/env python3
"""Benchmark driver for the CATS v DOGS vote app (`apps/vote`, binary `vote`); run.sh calls it.

  bench.py run --results FILE --work DIR --gatehouse BIN --vote BIN --pg-bin DIR [--docs FILE]

For each starting size (0, 10^4, 10^6 votes) and each page mode (`TALLY_MODE=tally`: the app's
sharded tally rows; `TALLY_MODE=count`: the sample's COUNT per candidate per request), on one
PostgreSQL cluster made for the run: drop and re-create `pet_votes` with the sample's DDL, fill it
with generate_series, VACUUM ANALYZE + CHECKPOINT, start `vote` (it adds its time_cast index and
the tally, counted from the rows), check the page shows the seeded counts, warm up, then
`GET /` and `POST /` (one vote per request) each `wrk -t1 -c16 -d10s --latency` x 3.

Only 127.0.0.1 is loaded and every load run is a bounded `wrk -d`. Servers run in their own
process group and are stopped by killing that group; the cluster is stopped (pg_ctl stop -m fast)
and deleted at the end, also on error and on SIGINT/SIGTERM. CPU comes from /proc (utime+stime
of the vote process, of the postmaster's tree including reaped parallel workers, of wrk), the
vote process's RSS is sampled every 100 ms.
"""

import http.client
import json
import os
import pwd
import re
import resource
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))

sys.path.insert(0, os.path.dirname(HERE))
from common import (  # noqa: E402
    TCK, RssSampler, Server, cli, close_results, cpu_ticks, emit, env_int, env_list,
    ksoftirqd_pids, machine_meta, open_results, parse_wrk, proc_stat_cpu, proc_tree, say, status_kb,
    repeat_runs, request as common_request, stop_all, utc_mtime, wait_for_builds, wait_quiet,
)

sys.path.insert(0, HERE)
import summarize  # noqa: E402

PROJECT = "bench-proj"
API_KEY = "bench-key"
TABLE = "pet_votes"
# The app's DDL for the sample's table (apps/vote/src/db.rs); the app adds the time_cast index
# and the tally table itself when it starts.
DDL = (f"CREATE TABLE {TABLE} (vote_id bigserial PRIMARY KEY NOT NULL, time_cast timestamptz NOT NULL, "
       "candidate CHAR(6) NOT NULL, uid VARCHAR(128) NOT NULL)")


CFG = {
    "runs": env_int("BENCH_RUNS", 3),
    "duration": os.environ.get("BENCH_DURATION", "10s"),
    "warmup": os.environ.get("BENCH_WARMUP", "2s"),
    "connections": env_int("BENCH_CONNECTIONS", 16),
    "threads": env_int("BENCH_THREADS", 1),
    "wrk_timeout": os.environ.get("BENCH_WRK_TIMEOUT", "30s"),
    "sizes": [int(float(x)) for x in env_list("BENCH_SIZES", "0,10000,1000000")],
    "modes": env_list("BENCH_MODES", "tally,count"),
    "quiet_timeout": env_int("BENCH_QUIET_TIMEOUT", 60),
    "build_wait": env_int("BENCH_BUILD_WAIT", 900),
}

def seconds(d):
    m = re.fullmatch(r"([\d.]+)(ms|s|m|h)?", d)
    if not m:
        raise SystemExit(f"bad duration {d!r} (e.g. 10s, 1m)")
    return float(m.group(1)) * {"ms": 1e-3, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def free_port():
    """A port free on every interface (vote binds 0.0.0.0:PORT; the load only uses 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def request(port, method, path, body=None, headers=None, timeout=120):
    return common_request(port, method, path, body, headers, timeout)


# ---------------------------------------------------------------- servers

class PidServer(Server):
    """A Server that leaves `<work>/<name>.pid` (its process group) while it runs, so run.sh's
    trap can stop it if this driver dies without cleaning up."""

    def __init__(self, work, *a, **kw):
        super().__init__(*a, **kw)
        self.pidfile = os.path.join(work, f"{self.name}.pid")

    def start(self):
        super().start()
        open(self.pidfile, "w").write(f"{self.proc.pid}\n")

    def stop(self):
        super().stop()
        if os.path.exists(self.pidfile):
            os.remove(self.pidfile)


APP_ENV_PREFIXES = ("GATEHOUSE_", "DB_", "CLOUD_SQL_", "GOOGLE_", "GCE_", "PG")
APP_ENV_NAMES = {"DATABASE_URL", "TABLE", "TALLY_MODE", "API_KEY", "PORT", "ID_TOKEN_ISSUER"}


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(APP_ENV_PREFIXES) and k not in APP_ENV_NAMES}
    env.update(extra or {})
    return env


# ---------------------------------------------------------------- PostgreSQL

class Postgres:
    """A throw-away cluster under <work>/pg: unix socket only (listen_addresses = ''), the
    superuser by peer authentication, the app's role `vote` by password (scram-sha-256)."""

    def __init__(self, pg_bin, work):
        self.bin, self.root = pg_bin, os.path.join(work, "pg")
        self.data, self.sock = os.path.join(self.root, "data"), os.path.join(self.root, "sock")
        self.log = os.path.join(self.root, "postgres.log")
        self.port = free_port()  # names the socket file; nothing listens on TCP
        self.password = secrets.token_hex(16)
        self.owner = "postgres" if os.getuid() == 0 else pwd.getpwuid(os.getuid()).pw_name
        # initdb refuses root: as root, the cluster belongs to the postgres user.
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        self.started = False

    def url(self):
        # The URL needs a host; the host parameter (a socket directory) takes its place.
        return f"postgres://vote:{self.password}@localhost/votes?host={self.sock}&port={self.port}"

    def _run(self, argv, env=None, input=None, as_owner=True, check=True):
        p = subprocess.run((self.as_owner if as_owner else []) + argv, cwd=self.root, env=env, input=input,
                           capture_output=True, text=True, timeout=600)
        if check and p.returncode != 0:
            raise SystemExit(f"{' '.join(argv[:2])} failed ({p.returncode}):\n{p.stdout}{p.stderr}")
        return p

    def init(self):
        os.makedirs(self.sock)
        if os.getuid() == 0:
            pw = pwd.getpwnam("postgres")
            for d in (self.root, self.sock):
                os.chown(d, pw.pw_uid, pw.pw_gid)
        os.chmod(self.root, 0o700)
        self._run([os.path.join(self.bin, "initdb"), "-D", self.data, "-U", self.owner, "-E", "UTF8",
                   "--locale=C", "--no-sync", "--auth-local=peer", "--auth-host=reject"])
        hba = os.path.join(self.data, "pg_hba.conf")
        self._run(["sh", "-c", f"cat > {shlex.quote(hba)}"], input=(
            "# bench/vote: unix socket only; the superuser by peer, the app's role by password\n"
            f"local all {self.owner} peer\n"
            "local votes vote scram-sha-256\n"))
        conf = os.path.join(self.data, "postgresql.conf")
        self._run(["sh", "-c", f"cat >> {shlex.quote(conf)}"], input=(
            "\n# bench/vote\n"
            "listen_addresses = ''\n"
            f"port = {self.port}\n"
            f"unix_socket_directories = '{self.sock}'\n"))
        self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-l", self.log, "-w", "-t", "60", "start"])
        self.started = True
        self.su(f"CREATE ROLE vote LOGIN PASSWORD '{self.password}'")
        self.su("CREATE DATABASE votes OWNER vote")

    def postmaster_pid(self):
        return int(open(os.path.join(self.data, "postmaster.pid")).readline())

    def _psql(self, user, db):
        return [os.path.join(self.bin, "psql"), "-X", "-q", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1",
                "-h", self.sock, "-p", str(self.port), "-U", user, "-d", db]

    def su(self, sql):
        """Runs sql as the superuser (peer authentication: as the cluster's owner)."""
        return self._run(self._psql(self.owner, "postgres") + ["-c", sql]).stdout.strip()

    def app(self, script):
        """Runs a script as the app's role, statement by statement (VACUUM is allowed)."""
        env = clean_env({"PGPASSWORD": self.password})
        return self._run(self._psql("vote", "votes") + ["-f", "-"], env=env, input=script,
                         as_owner=False).stdout.strip()

    def version(self):
        return self.su("SELECT version()")

    def settings(self):
        names = ["shared_buffers", "work_mem", "max_connections", "max_parallel_workers_per_gather", "fsync",
                 "synchronous_commit", "wal_level", "max_wal_size", "jit", "autovacuum"]
        rows = self.su("SELECT name, current_setting(name) FROM pg_settings WHERE name IN ("
                       + ",".join(f"'{n}'" for n in names) + ") ORDER BY name")
        return dict(line.split("|", 1) for line in rows.splitlines())

    def stop(self):
        if self.started:
            self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", "fast", "-w", "-t", "60", "stop"],
                      check=False)
            self.started = False


def seed(pg, size):
    """The sample's table with `size` votes (60 % CATS), oldest first, one second apart; no tally,
    no time_cast index: the app adds both when it starts."""
    t0 = time.time()
    pg.app(f"""DROP TABLE IF EXISTS {TABLE}_tally, {TABLE};
{DDL};
INSERT INTO {TABLE} (time_cast, candidate, uid)
  SELECT now() - (({size} - n) * interval '1 second'), CASE WHEN n % 5 < 3 THEN 'CATS' ELSE 'DOGS' END,
         substr(md5(n::text), 1, 28)
  FROM generate_series(1, {size}) AS n;
VACUUM (ANALYZE) {TABLE};
""")
    pg.su("CHECKPOINT")
    counts = dict(line.split("|") for line in pg.app(
        f"SELECT trim(candidate), count(*) FROM {TABLE} GROUP BY 1;").splitlines())
    return {"seconds": round(time.time() - t0, 2), "cats": int(counts.get("CATS", 0)),
            "dogs": int(counts.get("DOGS", 0))}


def table_state(pg):
    out = pg.app(f"""SELECT (SELECT count(*) FROM {TABLE}),
       (SELECT coalesce(sum(votes), 0) FROM {TABLE}_tally),
       pg_total_relation_size('{TABLE}'),
       (SELECT count(*) FROM pg_indexes WHERE tablename = '{TABLE}');""")
    rows, tally, size, idx = (int(x) for x in out.split("|"))
    return {"rows": rows, "tally_sum": tally, "table_mb": round(size / 1048576, 1), "indexes": idx}


# ---------------------------------------------------------------- identity

class Identity:
    def __init__(self, server):
        self.server, self.refresh_token, self.id_token, self.at = server, None, None, 0.0

    def sign_up(self):
        body = json.dumps({"email": f"voter-{int(time.time())}@bench.test", "password": "bench-secret-1",
                           "returnSecureToken": True})
        st, raw = request(self.server.port, "POST", f"/identitytoolkit.googleapis.com/v1/accounts:signUp?key={API_KEY}",
                          body, {"Content-Type": "application/json"})
        if st != 200:
            raise SystemExit(f"accounts:signUp failed: {st} {raw[:300]!r}")
        j = json.loads(raw)
        self.id_token, self.refresh_token, self.at = j["idToken"], j["refreshToken"], time.time()

    def token(self):
        """An ID token with at least 15 minutes left (they last an hour): refreshed when older."""
        if time.time() - self.at > 45 * 60:
            form = "grant_type=refresh_token&refresh_token=" + urllib.parse.quote(self.refresh_token, safe="")
            st, raw = request(self.server.port, "POST", f"/securetoken.googleapis.com/v1/token?key={API_KEY}", form,
                              {"Content-Type": "application/x-www-form-urlencoded"})
            if st != 200:
                raise SystemExit(f"token refresh failed: {st} {raw[:300]!r}")
            self.id_token, self.at = json.loads(raw)["id_token"], time.time()
        return self.id_token


# ---------------------------------------------------------------- wrk

def pg_ticks(pg):
    """CPU ticks of the postmaster's tree, plus what its reaped children (parallel workers,
    autovacuum workers) used: they come and go during a run."""
    root = pg.postmaster_pid()
    tree = proc_tree(root)
    t = cpu_ticks(tree)
    try:
        f = open(f"/proc/{root}/stat").read().rsplit(")", 1)[1].split()
        t += int(f[13]) + int(f[14])  # cutime + cstime
    except OSError:
        pass
    return t


def wrk_once(vote, pg, idp, op, token, duration):
    argv = ["wrk", f"-t{CFG['threads']}", f"-c{CFG['connections']}", f"-d{duration}", "--latency",
            "--timeout", CFG["wrk_timeout"]]
    env = dict(os.environ)
    if op == "vote":
        argv += ["-s", os.path.join(HERE, "lua", "vote.lua")]
        env["BENCH_ID_TOKEN"] = token
    argv.append(f"http://127.0.0.1:{vote.port}/")
    tree, itree, ksoft = proc_tree(vote.proc.pid), proc_tree(idp.proc.pid), ksoftirqd_pids()
    sampler = RssSampler(tree)
    c0, p0, i0, k0, s0 = cpu_ticks(tree), pg_ticks(pg), cpu_ticks(itree), cpu_ticks(ksoft), proc_stat_cpu()
    self0, kids0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler.start()
    t0 = time.time()
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds(duration) + 90)
    dt = time.time() - t0
    sampler.halt.set()
    sampler.join()
    c1, p1, i1, k1, s1 = cpu_ticks(tree), pg_ticks(pg), cpu_ticks(itree), cpu_ticks(ksoft), proc_stat_cpu()
    self1, kids1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"wrk failed ({p.returncode}): {p.stderr}")
    r = parse_wrk(p.stdout)
    app_s, pg_s, idp_s, ksoft_s = (c1 - c0) / TCK, (p1 - p0) / TCK, (i1 - i0) / TCK, (k1 - k0) / TCK
    wrk_s = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    self_s = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
    # Machine busy time includes irq + softirq (loopback TCP; see bench/gateway/README.md).
    busy_s = ((s1[0] + s1[2]) - (s0[0] + s0[2])) / TCK
    n = max(1, r["requests"])
    r.update({
        "wall_s": round(dt, 2),
        "app_cpu_pct": round(100 * app_s / dt, 1),  # of one core
        "app_cpu_us_per_req": round(1e6 * app_s / n, 1),
        "pg_cpu_pct": round(100 * pg_s / dt, 1),
        "pg_cpu_us_per_req": round(1e6 * pg_s / n, 1),
        "identity_cpu_pct": round(100 * idp_s / dt, 1),
        "wrk_cpu_pct": round(100 * wrk_s / dt, 1),
        "machine_busy_pct": round(100 * busy_s / dt, 1),  # out of 100 x cores
        "foreign_pct": round(100 * (busy_s - app_s - pg_s - idp_s - wrk_s - self_s - ksoft_s) / dt, 1),
        "rss_peak_mb": round(sampler.peak_kb / 1024, 1),
        "hwm_mb": round(status_kb(tree, "VmHWM") / 1024, 1),
    })
    return r, p.stdout


def series(size, mode, op, vote, pg, idp, identity, work):
    def one_try(tries):
        r, text = wrk_once(vote, pg, idp, op, identity.token(), CFG["duration"])
        if tries == 1:
            open(os.path.join(work, f"wrk-{size}-{mode}-{op}.txt"), "w").write(text)
        record = {"kind": "wrk", "size": size, "mode": mode, "op": op}
        cpu = f"vote {r['app_cpu_pct']}% pg {r['pg_cpu_pct']}% wrk {r['wrk_cpu_pct']}%"
        return record, r, cpu

    repeat_runs(CFG["runs"], f"{size} {mode} {op}", one_try)


# ---------------------------------------------------------------- one block: size x mode

PAGE_COUNT = r'id="{}Card">\s*<i[^>]*>[^<]*</i>\s*<h3>(\d+) votes</h3>'


def page_counts(html):
    out = {}
    for team in ("cats", "dogs"):
        m = re.search(PAGE_COUNT.format(team), html)
        out[team] = int(m.group(1)) if m else None
    return out


def wait_page(vote, timeout):
    """Seconds from exec to the first answer to GET /, which must be 200: `vote` listens only
    once its database is open (or failed to open, then it answers 500 to everything)."""
    end = vote.t0 + timeout
    while time.perf_counter() < end:
        if vote.proc.poll() is not None:
            raise SystemExit(f"{vote.name} exited with {vote.proc.returncode}; see {vote.log_path}")
        try:
            status, _ = request(vote.port, "GET", "/", timeout=timeout)
        except OSError:
            time.sleep(0.01)
            continue
        if status != 200:
            tail = open(vote.log_path, errors="replace").read()[-1500:]
            raise SystemExit(f"{vote.name}: GET / answered {status}; its log ends with:\n{tail}")
        return time.perf_counter() - vote.t0
    raise SystemExit(f"{vote.name} not serving after {timeout}s; see {vote.log_path}")


def thin_log(path):
    """Counts the app's log entries, then drops the `vote_inserted` lines (one per vote, tens of
    MB per run) from the file, keeping everything else (start, errors)."""
    counts, kept = {"lines": 0, "vote_inserted": 0, "errors": 0, "not_json": 0}, []
    with open(path, errors="replace") as fh:
        for line in fh:
            counts["lines"] += 1
            try:
                e = json.loads(line)
            except ValueError:
                counts["not_json"] += 1
                kept.append(line)
                continue
            if e.get("message") == "vote_inserted":
                counts["vote_inserted"] += 1
                continue
            counts["errors"] += e.get("severity") == "ERROR"
            kept.append(line)
    with open(path, "w") as fh:
        fh.writelines(kept)
    return counts


def block(size, mode, args, pg, idp, identity, work):
    say(f"{size:,} votes, TALLY_MODE={mode}: seeding")
    s = seed(pg, size)
    emit({"kind": "seed", "size": size, "mode": mode, **s})
    say(f"  seeded in {s['seconds']} s (CATS {s['cats']:,}, DOGS {s['dogs']:,})")
    port = free_port()
    env = clean_env({"PORT": str(port), "DATABASE_URL": pg.url(), "GOOGLE_CLOUD_PROJECT": PROJECT,
                     "GATEHOUSE_IDENTITY_URL": f"http://127.0.0.1:{idp.port}", "API_KEY": API_KEY,
                     "TALLY_MODE": mode})
    vote = PidServer(work, f"vote-{size}-{mode}", [args.vote], work, env,
                     os.path.join(work, f"vote-{size}-{mode}.log"), port, "/")
    vote.start()
    try:
        # Listening only after the schema is there: the time includes the time_cast index and
        # the tally counted from the seeded rows.
        ready = wait_page(vote, 300)
        st = table_state(pg)
        emit({"kind": "ready", "size": size, "mode": mode, "seconds": round(ready, 3), **st})
        say(f"  vote ready in {ready:.2f} s; table {st['table_mb']} MB with {st['indexes']} indexes")
        status, body = request(port, "GET", "/")
        shown = page_counts(body.decode(errors="replace"))
        ok = status == 200 and shown == {"cats": s["cats"], "dogs": s["dogs"]}
        emit({"kind": "check", "size": size, "mode": mode, "what": "page shows the seeded counts", "ok": ok,
              "status": status, "shown": shown})
        if not ok:
            raise SystemExit(f"GET / shows {shown} (HTTP {status}), expected CATS {s['cats']} DOGS {s['dogs']}")
        wait_quiet(CFG["quiet_timeout"], need=2)
        wrk_once(vote, pg, idp, "get", None, CFG["warmup"])  # not recorded
        series(size, mode, "get", vote, pg, idp, identity, work)
        status, body = request(port, "POST", "/", "team=CATS",
                               {"Authorization": "Bearer " + identity.token(),
                                "Content-Type": "application/x-www-form-urlencoded"})
        text = body.decode(errors="replace")
        ok = status == 200 and text.startswith("Successfully voted for CATS")
        emit({"kind": "check", "size": size, "mode": mode, "what": "one vote (POST /)", "ok": ok, "status": status,
              "body": text[:80]})
        if not ok:
            raise SystemExit(f"POST / answered {status}: {text[:300]}")
        series(size, mode, "vote", vote, pg, idp, identity, work)
        tree = proc_tree(vote.proc.pid)
        hwm = round(status_kb(tree, "VmHWM") / 1024, 1)
    finally:
        vote.stop()
    emit({"kind": "log", "size": size, "mode": mode, **thin_log(vote.log_path)})
    st = table_state(pg)
    emit({"kind": "end", "size": size, "mode": mode, "hwm_mb": hwm, **st,
          "tally_matches_rows": st["rows"] == st["tally_sum"]})
    say(f"  after the load: {st['rows']:,} rows, tally sum {st['tally_sum']:,}, vote VmHWM {hwm} MB")


# ---------------------------------------------------------------- run

def profile(path):
    parts = os.path.realpath(path).split(os.sep)
    return "release" if "release" in parts else "debug" if "debug" in parts else "unknown"


def meta(args, pg):
    def rel(p):
        p = os.path.abspath(p)
        return os.path.relpath(p, ROOT) if p.startswith(ROOT + os.sep) else p

    return {
        **machine_meta(),
        "vote_bin": rel(args.vote), "vote_bin_mtime": utc_mtime(args.vote),
        "gatehouse_bin": rel(args.gatehouse), "gatehouse_bin_mtime": utc_mtime(args.gatehouse),
        "profile": "release" if profile(args.vote) == profile(args.gatehouse) == "release" else
                   f"vote {profile(args.vote)}, gatehouse {profile(args.gatehouse)}",
        "postgres": pg.version(), "pg_settings": pg.settings(),
        "pg_auth": "unix socket only; the app's role by password (scram-sha-256)",
        "config": CFG, "command": "bench/vote/run.sh",
    }


def cmd_run(args):
    for b in (args.vote, args.gatehouse):
        if not os.access(b, os.X_OK):
            raise SystemExit(f"missing {b}")
    os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
    os.makedirs(args.work, exist_ok=True)
    os.chmod(args.work, 0o755)  # the postgres user reaches its cluster below it
    open_results(args.results)
    pg = Postgres(args.pg_bin, args.work)

    def cleanup():
        stop_all()
        pg.stop()

    signal.signal(signal.SIGTERM, lambda *_: (cleanup(), sys.exit(143)))
    signal.signal(signal.SIGINT, lambda *_: (cleanup(), sys.exit(130)))
    try:
        say(f"results: {args.results}\nscratch: {args.work}")
        say("waiting for a machine without compilers")
        builds = wait_for_builds(CFG["build_wait"])
        t0 = time.time()
        pg.init()
        say(f"PostgreSQL ready in {time.time() - t0:.1f} s (socket {pg.sock}, port {pg.port})")
        emit(meta(args, pg))
        emit({"kind": "builds", **builds})
        idp_port = free_port()
        idp = PidServer(args.work, "identity",
                        [args.gatehouse, "identity", "--project", PROJECT, "--api-key", f"{API_KEY}={PROJECT}",
                         "--listen", f"127.0.0.1:{idp_port}", "--data-dir", os.path.join(args.work, "identity"),
                         "--rate-limits", "off"],
                        args.work, clean_env(), os.path.join(args.work, "identity.log"), idp_port, "/healthz")
        idp.start()
        emit({"kind": "ready", "target": "identity", "seconds": round(idp.wait_ready(120), 3)})
        identity = Identity(idp)
        identity.sign_up()
        for size in CFG["sizes"]:
            for mode in CFG["modes"]:
                block(size, mode, args, pg, idp, identity, args.work)
        emit({"kind": "done"})
    finally:
        cleanup()
        close_results()
        shutil.rmtree(pg.root, ignore_errors=True)
        shutil.rmtree(os.path.join(args.work, "identity"), ignore_errors=True)
    text = summarize.report(args.results)
    print(text)
    if args.docs:
        summarize.write_docs(args.results, args.docs)


def main():
    def run_args(r):
        r.add_argument("--work", required=True, help="scratch folder for this run (outside the repository)")
        r.add_argument("--vote", default=os.path.join(ROOT, "target", "release", "vote"))
        r.add_argument("--pg-bin", default="/usr/lib/postgresql/15/bin")
    cli(cmd_run, add_run_args=run_args)


if __name__ == "__main__":
    main()
