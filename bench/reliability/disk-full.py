#!/usr/bin/env python3
"""Issue 16, scenario 7, long form: disk full under load.

The identity server keeps its SQLite state on a tmpfs of MIB MiB mounted (in a private mount
namespace: `unshare -m`) for this run. Writers sign up new accounts at a steady rate and readers
look an account up and refresh its token, for DURATION seconds; at FULL_AT the file system is
filled to the last byte, at FULL_AT+FULL_FOR the filler is removed. Reported: writes
acknowledged / refused with the documented 503 / failed otherwise, the slowest refusal, reads
served and failed while full, the time from freeing space to the next acknowledged write, the
acknowledged accounts against the rows, `PRAGMA integrity_check`, and whether the log carries
a password or token. Needs root (mount), sqlite3; 127.0.0.1 only; stops by itself.

    sudo bench/reliability/disk-full.sh        # DURATION=60 FULL_AT=15 FULL_FOR=20 WRITERS=4

DB=postgres: the identity server's state in a throw-away PostgreSQL 15 cluster (run as the
`postgres` user) instead. PG_ON=data (default) puts the whole data directory, WAL included, on
the tmpfs; PG_ON=tablespace keeps the cluster (and its WAL) on the ordinary disk and only the
identity database in a tablespace on the tmpfs; PG_ON=wal keeps the data on the ordinary disk and
only the WAL (`initdb --waldir`, 1 MiB segments, `wal_recycle=off` and `archive_command=/bin/false`
so that segments are kept and a new file is soon needed) on the tmpfs. PostgreSQL is not restarted by this harness
while the run lasts (what it does by itself is the figure); afterwards it is restarted if it is
down, then every acknowledged account is looked up and `pg_amcheck --heapallindexed` runs.
MIB defaults to 64 for PostgreSQL (a cluster takes ~40 MiB with its first WAL segment).

    sudo DB=postgres PG_ON=data bench/reliability/disk-full.sh
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import Server, binary, call, die, require  # noqa: E402

DURATION = int(os.environ.get("DURATION", "60"))
FULL_AT = int(os.environ.get("FULL_AT", "15"))
FULL_FOR = int(os.environ.get("FULL_FOR", "20"))
WRITERS = int(os.environ.get("WRITERS", "4"))
READERS = int(os.environ.get("READERS", "2"))
DB = os.environ.get("DB", "sqlite")
PG_ON = os.environ.get("PG_ON", "data")
MIB = int(os.environ.get("MIB", "64" if DB == "postgres" else "16"))
PG_BIN = os.environ.get("GATEHOUSE_PG_BIN", "/usr/lib/postgresql/15/bin")
PASSWORD = "pw-reliability-7-a1f3"


def main():
    if os.environ.get("GATEHOUSE_IN_NS") != "1":
        require("unshare", "apt-get install -y util-linux")
        os.environ["GATEHOUSE_IN_NS"] = "1"
        os.execvp("unshare", ["unshare", "-m", "--propagation", "private", sys.executable] + sys.argv)
    if DB == "postgres":
        if not os.path.isfile(os.path.join(PG_BIN, "pg_ctl")):
            die(f"no PostgreSQL in {PG_BIN}: apt-get install -y postgresql-15")
    else:
        require("sqlite3", "apt-get install -y sqlite3")
    if os.geteuid() != 0:
        die("needs root to mount a tmpfs (run with sudo)")
    scratch = tempfile.mkdtemp(prefix="gh-disk-full-")
    mnt = os.path.join(scratch, "data")
    os.makedirs(mnt)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={MIB}m", "tmpfs", mnt], check=True)
    try:
        if DB == "postgres":
            pg = Postgres(scratch, mnt)
            try:
                run(scratch, mnt, pg)
            finally:
                pg.stop()
        else:
            run(scratch, mnt, None)
    finally:
        subprocess.run(["umount", "-l", mnt])


class Postgres:
    """A throw-away cluster run by the `postgres` user: its data directory on the tmpfs
    (PG_ON=data) or in `scratch` with the identity database in a tablespace on the tmpfs."""

    def __init__(self, scratch, mnt):
        self.scratch, self.log = scratch, os.path.join(scratch, "postgres.log")
        subprocess.run(["chown", "postgres:postgres", scratch, mnt], check=True)
        self.data = os.path.join(mnt if PG_ON == "data" else scratch, "pgdata")
        wal = ["--waldir", os.path.join(mnt, "wal"), "--wal-segsize", "1"] if PG_ON == "wal" else []
        self.pg(["initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync",
                 "-E", "UTF8", "--locale=C"] + wal)
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.start()
        if PG_ON == "tablespace":
            space = os.path.join(mnt, "space")
            os.makedirs(space)
            subprocess.run(["chown", "postgres:postgres", space], check=True)
            self.psql("postgres", f"CREATE TABLESPACE full_space LOCATION '{space}'")
            self.psql("postgres", "CREATE DATABASE id TABLESPACE full_space")
        else:
            self.psql("postgres", "CREATE DATABASE id")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/id"

    def pg(self, argv, check=True):
        return subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(PG_BIN, argv[0])]
                              + argv[1:], capture_output=True, text=True, check=check)

    def start(self):
        opts = f"-p {self.port} -k {self.scratch} -c listen_addresses=127.0.0.1"
        if PG_ON == "wal":
            # WAL that cannot be archived is kept (the classic way pg_wal fills up): once the
            # disk is full, the next segment cannot be made.
            opts += (" -c min_wal_size=2MB -c max_wal_size=3MB -c wal_recycle=off"
                     " -c archive_mode=on -c archive_command=/bin/false")
        return self.pg(["pg_ctl", "-D", self.data, "-o", opts, "-w", "-t", "60", "-l", self.log,
                        "start"], check=False).returncode == 0

    def running(self):
        return self.pg(["pg_ctl", "-D", self.data, "status"], check=False).returncode == 0

    def psql(self, db, sql):
        return subprocess.run([os.path.join(PG_BIN, "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                               "-U", "postgres", "-d", db, "-qtA", "-v", "ON_ERROR_STOP=1", "-c", sql],
                              capture_output=True, text=True)

    def stop(self):
        """Stops the cluster and deletes its data (the logs stay in the scratch directory)."""
        self.pg(["pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"], check=False)
        shutil.rmtree(self.data, ignore_errors=True)

    def check(self, acknowledged):
        """After the run: restarted if down; (stored, acknowledged missing, amcheck output)."""
        up_by_itself = self.running()
        if not up_by_itself:
            self.start()
        out = self.psql("id", "SELECT email FROM users").stdout.split()
        missing = [e for e in acknowledged if e not in set(out)]
        am = subprocess.run([os.path.join(PG_BIN, "pg_amcheck"), "-h", "127.0.0.1", "-p",
                             str(self.port), "-U", "postgres", "--install-missing",
                             "--heapallindexed", "--parent-check", "-d", "id"],
                            capture_output=True, text=True)
        amcheck = "ok" if am.returncode == 0 and not am.stdout.strip() else (am.stdout + am.stderr)[:500]
        return up_by_itself, len(out), missing, amcheck

    def events(self):
        log = open(self.log).read()
        return {k: log.count(k) for k in ("could not extend file", "PANIC:", "No space left on device",
                                          "terminating any other active server processes",
                                          "database system is ready to accept connections",
                                          "startup process", "shutting down because restart_after_crash")}


def run(scratch, mnt, pg):
    args = ["identity", "--project", "rel-proj", "--listen", "127.0.0.1:0",
            "--rate-limits", "off", "--data-dir", mnt if pg is None else scratch]
    if pg is not None:
        key = os.path.join(scratch, "master.key")
        subprocess.run([binary(), "secrets", "generate-master-key", key], check=True,
                       capture_output=True)
        args += ["--database-url", pg.url, "--master-key-file", key]
    server = Server(args, os.path.join(scratch, "identity.log"))
    base = f"http://{server.addr()}/identitytoolkit.googleapis.com/v1/accounts"
    status, reader, _ = call(f"{base}:signUp?key=k", {"email": "reader@example.com",
                                                       "password": PASSWORD, "returnSecureToken": True})
    if status != 200:
        die(f"seed sign-up answered {status}")
    tokens = [reader["idToken"], reader["refreshToken"]]
    start = time.time()
    phase = {"full": None, "freed": None}
    writes, reads, lock, stop = [], [], threading.Lock(), threading.Event()
    emails = ["reader@example.com"]

    def writer(n):
        i = 0
        while not stop.is_set():
            i += 1
            email = f"w{n}-{i}@example.com"
            s, body, took = call(f"{base}:signUp?key=k", {"email": email,
                                                          "password": PASSWORD, "returnSecureToken": True})
            msg = ((body or {}).get("error") or {}).get("message", "") if s != 200 else ""
            with lock:
                writes.append((time.time(), s, took, msg))
                if s == 200:
                    emails.append(email)
                    tokens.extend([body["idToken"], body["refreshToken"]])
            time.sleep(0.05)

    def reader_loop():
        while not stop.is_set():
            s1, _, t1 = call(f"{base}:lookup?key=k", {"idToken": tokens[0]})
            s2, _, t2 = call(f"http://{server.addr()}/securetoken.googleapis.com/v1/token?key=k",
                             form={"grant_type": "refresh_token", "refresh_token": tokens[1]})
            with lock:
                reads.append((time.time(), s1, t1))
                reads.append((time.time(), s2, t2))
            time.sleep(0.02)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    threads += [threading.Thread(target=reader_loop) for _ in range(READERS)]
    for t in threads:
        t.start()
    filler = os.path.join(mnt, "filler")
    time.sleep(FULL_AT)
    if pg is not None and PG_ON == "wal":
        # Checkpoints drop the spare segments initdb left (beyond min_wal_size).
        for _ in range(2):
            pg.psql("postgres", "CHECKPOINT")
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    phase["full"] = time.time()
    time.sleep(FULL_FOR)
    os.remove(filler)
    phase["freed"] = time.time()
    # A cluster that stopped while full is started again once space is back (what an operator,
    # or the runner's supervisor for a managed instance, does).
    restarted = None
    if pg is not None and not pg.running():
        pg.start()
        restarted = time.time() - phase["freed"]
    time.sleep(max(0, DURATION - FULL_AT - FULL_FOR))
    stop.set()
    for t in threads:
        t.join()
    exit_s = server.stop()

    full, freed = phase["full"], phase["freed"]
    acked = sum(1 for w in writes if w[1] == 200)
    refused = [w for w in writes if w[1] == 503 and "storage is full" in w[3]]
    # PostgreSQL down (a PANIC when the WAL cannot grow, then a failed crash recovery): the
    # documented 503 saying the database cannot be reached.
    unreachable = [w for w in writes if w[1] == 503 and "cannot be reached" in w[3]]
    other = [w for w in writes if w[1] not in (200,) and w not in refused and w not in unreachable]
    during = [r for r in reads if full <= r[0] <= freed]
    after_free = [w for w in writes if w[0] >= freed and w[1] == 200]
    recovery = min(w[0] - w[2] for w in after_free) - freed if after_free else None
    if pg is None:
        db = os.path.join(mnt, "gatehouse.db")
        out = subprocess.run(["sqlite3", db, "PRAGMA integrity_check; SELECT count(*) FROM users;"],
                             capture_output=True, text=True).stdout.split()
        consistent = out[:1] == ["ok"] and len(out) > 1 and int(out[1]) == acked + 1
        check = (f"integrity_check: {out[0] if out else '?'}; accounts stored "
                 f"{out[1] if len(out) > 1 else '?'} vs acknowledged {acked + 1} (incl. the seed)")
    else:
        up_by_itself, stored, missing, amcheck = pg.check(emails)
        consistent = not missing and amcheck == "ok"
        check = (f"PostgreSQL ({PG_ON} on the tmpfs) up at the end by itself: {up_by_itself}; "
                 f"restarted by the harness {restarted if restarted is None else f'{restarted:.2f} s'} "
                 f"after space was freed; accounts stored {stored}, acknowledged {len(emails)} "
                 f"(incl. the seed), acknowledged but missing {len(missing)}; pg_amcheck: {amcheck}\n"
                 f"  postgres log: {pg.events()}")
    log = open(os.path.join(scratch, "identity.log")).read()
    leaks = sum(1 for s in [PASSWORD] + tokens if s in log)
    print(f"disk full ({DB}): {DURATION} s, {WRITERS} writers, {READERS} readers, tmpfs {MIB} MiB, "
          f"full for {FULL_FOR} s from t={FULL_AT} s")
    print(f"  writes: {len(writes)} sent, {acked} acknowledged, {len(refused)} refused with "
          f"503 'storage is full', {len(unreachable)} with 503 'cannot be reached', {len(other)} other failures "
          f"{sorted(set((w[1], w[3][:60]) for w in other))}")
    if refused:
        print(f"  slowest refusal: {max(w[2] for w in refused) * 1000:.1f} ms")
    if unreachable:
        print(f"  slowest 'cannot be reached': {max(w[2] for w in unreachable) * 1000:.1f} ms")
    if other:
        print(f"  slowest other failure: {max(w[2] for w in other) * 1000:.1f} ms")
    print(f"  reads while full (lookup + refresh): {sum(1 for r in during if r[1] == 200)} served, "
          f"{sum(1 for r in during if r[1] != 200)} failed {sorted(set(r[1] for r in during if r[1] != 200))}; "
          f"slowest {max((r[2] for r in during), default=0) * 1000:.1f} ms")
    if recovery is None:
        print("  recovery: no write acknowledged after space was freed")
    elif recovery < 0:
        print(f"  recovery: a write sent {-recovery * 1000:.0f} ms before space was freed was acknowledged")
    else:
        print(f"  recovery: first acknowledged write sent {recovery * 1000:.0f} ms after space was freed")
    print(f"  {check}")
    print(f"  exit after SIGTERM: {exit_s:.2f} s; secrets found in the log: {leaks}")
    # Reads are served while the database is; while PostgreSQL is down they get the 503.
    ok = (not other and (refused or unreachable) and recovery is not None and consistent
          and leaks == 0 and all(r[1] == 200 or (unreachable and r[1] == 503) for r in during))
    print("PASS" if ok else "FAIL")
    print(f"scratch: {scratch}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
