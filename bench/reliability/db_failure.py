#!/usr/bin/env python3
"""Issue 16 scenario 1, long form: database failure under write load.

  bench/reliability/db_failure.py [--seconds 60] [--kills 3] [--voters 4] [--docs docs/reliability.md]

`gatehouse up` (the release binary, GATEHOUSE_BIN to use another) runs the vote service on a
managed PostgreSQL instance, on 127.0.0.1 with ports chosen by the system, in a temporary data
directory. Voters (threads, one keep-alive connection and one signed-up user each) cast votes at
a steady rate for --seconds; the postmaster is killed with SIGKILL --kills times, evenly spaced.
At the end the rows are counted and compared with the acknowledged votes.

Per kill: how long the runner took to have the instance accepting connections again (from
`postmaster.pid` saying `ready`, polled every 10 ms), the votes that failed and the slowest
failure, and the time from "ready" to the first acknowledged vote. Pass: every acknowledged vote
is stored, unacknowledged stored votes <= votes in flight at the kills, every failure a 503 within
the app's deadline (3 s; 4 s allowed for the client's view), recovery <= 2 s after each return.

Results: one JSON line per run in bench/reliability/results/, a summary on stdout, and with
--docs the "## 1. Database failure under write load" section of that file rewritten.
Stops by itself; `up` is stopped with SIGTERM (its process group killed if it hangs).
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
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.dirname(HERE))
from common import emit, close_results, machine_meta, open_results, say, write_section  # noqa: E402

PG_BIN = os.environ.get("GATEHOUSE_PG_BIN", "/usr/lib/postgresql/15/bin")
INSTALL_HINT = "apt-get install -y postgresql-15"
API_KEY = "rel-api-key"
DEADLINE_S = 3.0  # the vote app's DB_DEADLINE
CLIENT_SLACK_S = 1.0
RECOVERY_S = 2.0
HEADING = "## 1. Database failure under write load"

MANIFEST = """\
project: {id: rel-project, mode: development, region: us-central1}
identity:
  port: 0
  api_keys: [rel-api-key]
  authorized_domains: [localhost, 127.0.0.1]
service_accounts:
  - {name: vote-identity, display_name: CATS v DOGS}
secrets:
  - {name: vote-db-password, generate: 24}
  - name: vote-db
    json:
      CLOUD_SQL_CONNECTION_NAME: ${sql.votes-db.connection_name}
      DB_NAME: votes
      DB_USER: vote
      DB_PASSWORD: ${secrets.vote-db-password}
bindings:
  - {resource: secrets/vote-db, role: roles/secretmanager.secretAccessor, member: "serviceAccount:vote-identity"}
  - {resource: project, role: roles/cloudsql.client, member: "serviceAccount:vote-identity"}
sql_instances:
  - name: votes-db
    databases: [votes]
    users: [{name: vote, password_secret: "vote-db-password:latest"}]
services:
  - name: vote
    command: [gatehouse, apps, vote]
    service_account: vote-identity
    allow_unauthenticated: true
    secrets: {CLOUD_SQL_CREDENTIALS_SECRET: "vote-db:latest"}
    cloudsql_instances: [votes-db]
    env:
      GOOGLE_CLOUD_PROJECT: ${project.id}
      GATEHOUSE_IDENTITY_URL: ${identity.url}
      API_KEY: ${identity.api_key}
"""


def lock_file(data):
    """(pid, status word) from the instance's postmaster.pid, or None."""
    try:
        lines = open(os.path.join(data, "sql", "votes-db", "postmaster.pid")).read().splitlines()
        return int(lines[0]), (lines[7].strip() if len(lines) > 7 else "")
    except (OSError, ValueError, IndexError):
        return None


def sign_up(identity_url, email):
    u = urllib.parse.urlparse(identity_url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    body = json.dumps({"email": email, "password": "correct-horse-9", "returnSecureToken": True})
    c.request("POST", f"/identitytoolkit.googleapis.com/v1/accounts:signUp?key={API_KEY}", body,
              {"content-type": "application/json"})
    r = c.getresponse()
    data = json.loads(r.read())
    if r.status != 200:
        sys.exit(f"sign-up failed: {r.status} {data}")
    return data["idToken"]


class Voter(threading.Thread):
    def __init__(self, url, token, stop, pause):
        super().__init__(daemon=True)
        self.url, self.token, self.stop, self.pause = urllib.parse.urlparse(url), token, stop, pause
        self.outcomes = []  # (sent, done, status); status 0: no HTTP answer

    def run(self):
        conn, n = None, 0
        while not self.stop.is_set():
            team = "CATS" if n % 2 == 0 else "DOGS"
            n += 1
            sent = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.url.hostname, self.url.port,
                                                      timeout=DEADLINE_S * 5)
                conn.request("POST", "/", f"team={team}", {
                    "authorization": f"Bearer {self.token}",
                    "content-type": "application/x-www-form-urlencoded"})
                r = conn.getresponse()
                r.read()
                status = r.status
            except (OSError, http.client.HTTPException):
                status, conn = 0, None
            self.outcomes.append((sent, time.monotonic(), status))
            time.sleep(self.pause)


def psql_count(socket_dir, sql):
    cmd = [os.path.join(PG_BIN, "psql"), "-h", socket_dir, "-d", "votes", "-X", "-tAc", sql]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    return int(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--voters", type=int, default=4)
    ap.add_argument("--pause-ms", type=float, default=40)
    ap.add_argument("--docs", help="rewrite this doc's section with the figures")
    args = ap.parse_args()
    binary = os.environ.get("GATEHOUSE_BIN", os.path.join(ROOT, "target/release/gatehouse"))
    if not os.path.isfile(binary):
        sys.exit(f"{binary} is missing: cargo build --release -p gatehouse")
    if not os.path.isfile(os.path.join(PG_BIN, "postgres")):
        sys.exit(f"PostgreSQL 15 server binaries not found in {PG_BIN}: {INSTALL_HINT}")

    work = tempfile.mkdtemp(prefix="gh-rel-db-")
    os.chmod(work, 0o755)  # the postgres user must reach the data directory
    data = os.path.join(work, "data")
    manifest = os.path.join(work, "gatehouse.yaml")
    with open(manifest, "w") as fh:
        fh.write(MANIFEST)
    up_log = open(os.path.join(work, "up.log"), "w")
    env = {**os.environ, "PATH": os.path.dirname(os.path.abspath(binary)) + ":" + os.environ["PATH"]}
    up = subprocess.Popen([binary, "up", "-f", manifest, "--data-dir", data, "--output", "json"],
                          stdout=subprocess.PIPE, stderr=up_log, text=True, env=env,
                          start_new_session=True)
    try:
        result = scenario(args, up, data)
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
        up_log.close()
    # `up` logs to <data-dir>/logs/ (and its stderr): count the runner's restart lines.
    restarts_logged = 0
    for base, _, files in os.walk(os.path.join(data, "logs")):
        for f in files:
            with open(os.path.join(base, f), errors="replace") as fh:
                restarts_logged += fh.read().count("sql instance restarted")
    if restarts_logged == 0:
        restarts_logged = open(os.path.join(work, "up.log"), errors="replace").read().count(
            "sql instance restarted")
    result["restarts_logged"] = restarts_logged
    shutil.rmtree(work, ignore_errors=True)
    report(result, args)


def scenario(args, up, data):
    ready = None
    deadline = time.monotonic() + 180
    for line in up.stdout:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if "ready_ms" in rec:
            ready = rec
            break
        if time.monotonic() > deadline:
            break
    if ready is None:
        sys.exit("gatehouse up did not become ready (see its log)")
    comps = ready["components"]
    vote_url, identity_url = comps["service:vote"]["url"], comps["identity"]["url"]
    socket_dir = os.path.dirname(comps["sql:votes-db"]["url"])
    say(f"up: vote {vote_url}, identity {identity_url}, socket {socket_dir}")
    # Drain up's stdout so it never blocks.
    threading.Thread(target=lambda: [None for _ in up.stdout], daemon=True).start()

    tokens = [sign_up(identity_url, f"voter{i}@example.com") for i in range(args.voters)]
    stop = threading.Event()
    voters = [Voter(vote_url, t, stop, args.pause_ms / 1000) for t in tokens]
    t0 = time.monotonic()
    for v in voters:
        v.start()
    kills = []
    for k in range(args.kills):
        at = t0 + args.seconds * (k + 1) / (args.kills + 1)
        time.sleep(max(0.0, at - time.monotonic()))
        pid, _ = lock_file(data)
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        back = None
        while time.monotonic() - killed < 120:
            lf = lock_file(data)
            if lf and lf[0] != pid and lf[1] == "ready":
                back = time.monotonic()
                break
            time.sleep(0.01)
        if back is None:
            sys.exit(f"kill {k + 1}: the instance did not come back within 120 s")
        say(f"kill {k + 1}: pid {pid}, back after {back - killed:.3f} s")
        kills.append({"killed": killed, "ready": back})
    time.sleep(max(0.0, t0 + args.seconds - time.monotonic()))
    stop.set()
    for v in voters:
        v.join(timeout=DEADLINE_S * 6)
    outcomes = sorted(o for v in voters for o in v.outcomes)
    rows = psql_count(socket_dir, "SELECT count(*) FROM pet_votes")
    tally = psql_count(socket_dir, "SELECT coalesce(sum(votes), 0)::int8 FROM pet_votes_tally")

    per_kill = []
    for k in kills:
        first_ok = min((d for s, d, st in outcomes if st == 200 and d > k["ready"]), default=None)
        window = [(s, d, st) for s, d, st in outcomes
                  if d >= k["killed"] and (first_ok is None or s < first_ok) and st != 200]
        per_kill.append({
            "restart_s": round(k["ready"] - k["killed"], 3),
            "recovery_s": None if first_ok is None else round(first_ok - k["ready"], 3),
            "failed": len(window),
            "max_failure_s": round(max((d - s for s, d, _ in window), default=0.0), 3),
            "in_flight": sum(1 for s, d, _ in outcomes if s <= k["killed"] <= d),
        })
    statuses = {}
    for _, _, st in outcomes:
        statuses[st] = statuses.get(st, 0) + 1
    acked = statuses.get(200, 0)
    failed = [(s, d, st) for s, d, st in outcomes if st != 200]
    return {
        "seconds": args.seconds, "voters": args.voters, "kills": per_kill,
        "sent": len(outcomes), "acked": acked, "rows": rows, "tally": tally,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "max_failure_s": round(max((d - s for s, d, _ in failed), default=0.0), 3),
        "in_flight_at_kills": sum(k["in_flight"] for k in per_kill),
    }


def report(r, args):
    checks = {
        "every acknowledged vote stored": r["rows"] >= r["acked"],
        "unacknowledged stored <= in flight at the kills": r["rows"] - r["acked"] <= r["in_flight_at_kills"],
        "tally = rows": r["tally"] == r["rows"],
        "every failure a 503": set(r["statuses"]) <= {"200", "503"},
        f"failures within {DEADLINE_S:g} s (+{CLIENT_SLACK_S:g} s)": r["max_failure_s"] < DEADLINE_S + CLIENT_SLACK_S,
        f"recovered within {RECOVERY_S:g} s of each return": all(
            k["recovery_s"] is not None and k["recovery_s"] <= RECOVERY_S for k in r["kills"]),
        "each restart logged": r["restarts_logged"] == len(r["kills"]),
    }
    r["pass"] = all(checks.values())
    meta = machine_meta()
    r["date_utc"], r["git_rev"] = meta["date_utc"], meta["git_rev"]
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", time.strftime("db_failure-%Y%m%dT%H%M%SZ.jsonl", time.gmtime()))
    open_results(path)
    emit({"kind": "db_failure", **r})
    close_results()
    print(json.dumps(r, indent=1))
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    if args.docs:
        write_section(args.docs, HEADING, section(r, args, meta))
        say(f"wrote {args.docs}")
    sys.exit(0 if r["pass"] else 1)


def section(r, args, meta):
    def secs(x):
        return "-" if x is None else f"{x:.2f} s"
    rows = "\n".join(
        f"| {i + 1} | {secs(k['restart_s'])} | {k['failed']} | {secs(k['max_failure_s'])} | "
        f"{k['in_flight']} | {secs(k['recovery_s'])} |"
        for i, k in enumerate(r["kills"]))
    fails = ", ".join(f"{v} x {k}" for k, v in r["statuses"].items() if k != "200") or "none"
    return f"""{HEADING}

The vote app on a managed PostgreSQL instance under `gatehouse up`, {args.voters} voters at a
steady rate for {args.seconds:g} s; the postmaster is killed with SIGKILL {len(r['kills'])} times.
Pass: every acknowledged vote (a 200, sent only after the commit) is a row; at most the votes
in flight at the kills are rows without an acknowledgement; every failure is a fast 503 (the
app's deadline is 3 s: a connection within 2 s, the statement within the rest); votes succeed
again within 2 s of the restarted server accepting connections.

How: the runner starts `postgres -D …` as its own child and waits on it; an unexpected exit is
logged and the server started again at once on the same data directory and socket (PostgreSQL
replays its WAL), with a growing delay (0.1 s doubling to 5 s) while restarts fail. The app waits
at most 2 s for a connection, checks pooled connections before use, and answers 503 with
`Retry-After: 1` when the database is unreachable.

Result ({r['date_utc']}, {meta['nproc']} CPUs, `{meta['git_rev']}`): **{'pass' if r['pass'] else 'FAIL'}**.
{r['sent']} votes sent, **{r['acked']} acknowledged, {r['rows']} stored** (tally {r['tally']}),
{r['in_flight_at_kills']} in flight at the kills; failures: {fails}, the slowest
{r['max_failure_s']:.2f} s; restarts logged by the runner: {r['restarts_logged']}.

| kill | instance back after | failed votes | slowest failure | in flight at the kill | first vote after the return |
|---:|---:|---:|---:|---:|---:|
{rows}

Command: `python3 bench/reliability/db_failure.py --seconds {args.seconds:g} --kills {args.kills} --voters {args.voters} --docs docs/reliability.md`
(release build: `cargo build --release -p gatehouse`). Short form in CI:
`apps/vote/tests/db_failure.rs` (one kill) and `crates/run/tests/sql.rs`
(`a_killed_postmaster_is_restarted_on_the_same_socket`).
"""


if __name__ == "__main__":
    main()
