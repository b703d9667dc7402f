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
"""

import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import Server, call, die, require  # noqa: E402

DURATION = int(os.environ.get("DURATION", "60"))
FULL_AT = int(os.environ.get("FULL_AT", "15"))
FULL_FOR = int(os.environ.get("FULL_FOR", "20"))
WRITERS = int(os.environ.get("WRITERS", "4"))
READERS = int(os.environ.get("READERS", "2"))
MIB = int(os.environ.get("MIB", "16"))
PASSWORD = "pw-reliability-7-a1f3"


def main():
    if os.environ.get("GATEHOUSE_IN_NS") != "1":
        require("unshare", "apt-get install -y util-linux")
        os.environ["GATEHOUSE_IN_NS"] = "1"
        os.execvp("unshare", ["unshare", "-m", "--propagation", "private", sys.executable] + sys.argv)
    require("sqlite3", "apt-get install -y sqlite3")
    if os.geteuid() != 0:
        die("needs root to mount a tmpfs (run with sudo)")
    scratch = tempfile.mkdtemp(prefix="gh-disk-full-")
    mnt = os.path.join(scratch, "data")
    os.makedirs(mnt)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={MIB}m", "tmpfs", mnt], check=True)
    try:
        run(scratch, mnt)
    finally:
        subprocess.run(["umount", "-l", mnt])


def run(scratch, mnt):
    server = Server(["identity", "--project", "rel-proj", "--listen", "127.0.0.1:0",
                     "--rate-limits", "off", "--data-dir", mnt], os.path.join(scratch, "identity.log"))
    base = f"http://{server.addr()}/identitytoolkit.googleapis.com/v1/accounts"
    status, reader, _ = call(f"{base}:signUp?key=k", {"email": "reader@example.com",
                                                       "password": PASSWORD, "returnSecureToken": True})
    if status != 200:
        die(f"seed sign-up answered {status}")
    tokens = [reader["idToken"], reader["refreshToken"]]
    start = time.time()
    phase = {"full": None, "freed": None}
    writes, reads, lock, stop = [], [], threading.Lock(), threading.Event()

    def writer(n):
        i = 0
        while not stop.is_set():
            i += 1
            s, body, took = call(f"{base}:signUp?key=k", {"email": f"w{n}-{i}@example.com",
                                                          "password": PASSWORD, "returnSecureToken": True})
            msg = ((body or {}).get("error") or {}).get("message", "") if s != 200 else ""
            with lock:
                writes.append((time.time(), s, took, msg))
                if s == 200:
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
    time.sleep(max(0, DURATION - FULL_AT - FULL_FOR))
    stop.set()
    for t in threads:
        t.join()
    exit_s = server.stop()

    full, freed = phase["full"], phase["freed"]
    acked = sum(1 for w in writes if w[1] == 200)
    refused = [w for w in writes if w[1] == 503 and "storage is full" in w[3]]
    other = [w for w in writes if w[1] not in (200,) and w not in refused]
    during = [r for r in reads if full <= r[0] <= freed]
    after_free = [w for w in writes if w[0] >= freed and w[1] == 200]
    recovery = min(w[0] - w[2] for w in after_free) - freed if after_free else None
    db = os.path.join(mnt, "gatehouse.db")
    out = subprocess.run(["sqlite3", db, "PRAGMA integrity_check; SELECT count(*) FROM users;"],
                         capture_output=True, text=True).stdout.split()
    log = open(os.path.join(scratch, "identity.log")).read()
    leaks = sum(1 for s in [PASSWORD] + tokens if s in log)
    print(f"disk full: {DURATION} s, {WRITERS} writers, {READERS} readers, tmpfs {MIB} MiB, "
          f"full for {FULL_FOR} s from t={FULL_AT} s")
    print(f"  writes: {len(writes)} sent, {acked} acknowledged, {len(refused)} refused with "
          f"503 'storage is full', {len(other)} other failures "
          f"{sorted(set((w[1], w[3][:60]) for w in other))}")
    if refused:
        print(f"  slowest refusal: {max(w[2] for w in refused) * 1000:.1f} ms")
    print(f"  reads while full (lookup + refresh): {sum(1 for r in during if r[1] == 200)} served, "
          f"{sum(1 for r in during if r[1] != 200)} failed; slowest "
          f"{max((r[2] for r in during), default=0) * 1000:.1f} ms")
    print(f"  recovery: first acknowledged write sent {recovery * 1000:.0f} ms after space was freed"
          if recovery is not None else "  recovery: no write acknowledged after space was freed")
    print(f"  integrity_check: {out[0] if out else '?'}; accounts stored {out[1] if len(out) > 1 else '?'}"
          f" vs acknowledged {acked + 1} (incl. the seed)")
    print(f"  exit after SIGTERM: {exit_s:.2f} s; secrets found in the log: {leaks}")
    ok = (not other and refused and recovery is not None and out[:1] == ["ok"]
          and len(out) > 1 and int(out[1]) == acked + 1 and leaks == 0
          and all(r[1] == 200 for r in during))
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
