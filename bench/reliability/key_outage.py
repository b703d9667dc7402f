#!/usr/bin/env python3
"""Issue 16 scenario 3, long form: JWKS / identity outage and key rotation.

  bench/reliability/key_outage.py [--outage 600] [--rotation-secs 60] [--workers 4]
                                  [--after 30] [--docs docs/reliability.md]

Real `gatehouse` processes (the release binary; GATEHOUSE_BIN for another) on 127.0.0.1:
`gatehouse identity --key-rotation-secs R` (SQLite), the vote app (`gatehouse apps vote`, its
token check is `gatehouse-verify`) and `gatehouse gateway` in front of it (its default JWKS
cache: 300 s, the identity server's max-age R/8 wins). Workers (threads, one user each, 20
rounds a second at most) send each round the same valid ID token to the three verifiers:
GET / through the gateway, a vote (POST /) to the vote app, accounts:lookup to the identity
server; they refresh their token every 2 s (so tokens of every new key are used at once).

Phases:
1. rotation: 2.2 rotation periods of load (at least two key changes under load);
2. revocation: the current signing key is revoked with
   `gatehouse identity signing-keys revoke`; a token it signed is sent to the three verifiers
   every 50 ms until each refuses it (the load goes on; workers whose token the revoked key
   signed refresh it: their refusals are counted apart, they are not valid requests);
3. outage: the identity server is killed (SIGKILL) for --outage seconds; the workers keep
   sending their (still valid) tokens to the gateway and the vote app;
4. recovery: the identity server is started again on the same port and data; --after seconds
   of load on all three.

Pass: 0 valid requests fail in any phase; each verifier refuses the revoked key's token within
the servers' key reload (min(5 s, R/8)) plus the max-age (R/8) plus 1 s; the gateway and the
vote app log the failing fetches at most once a minute (plus one line at the start and end).

Results: one JSON line per run in bench/reliability/results/, a summary on stdout, and with
--docs the "## 3. JWKS / identity outage and key rotation" section of that file rewritten.
Stops by itself.
"""

import argparse
import base64
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.dirname(HERE))
from common import emit, close_results, machine_meta, open_results, say, write_section  # noqa: E402
import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location("relcommon", os.path.join(HERE, "common.py"))
rel = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rel)

PROJECT = "rel-keys"
HEADING = "## 3. JWKS / identity outage and key rotation"
X509 = "/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com"
GATEWAY_CONFIG = """swagger: "2.0"
info: {{title: vote, version: 1.0.0}}
host: vote.example
x-google-backend:
  address: {backend}
securityDefinitions:
  firebase:
    type: oauth2
    flow: implicit
    authorizationUrl: ""
    x-google-issuer: "https://securetoken.google.com/{project}"
    x-google-jwks_uri: "{identity}{x509}"
    x-google-audiences: "{project}"
security:
  - firebase: []
paths:
  /:
    get:
      operationId: page
"""


def kid(token):
    head = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["kid"]


class Conn:
    """One keep-alive connection to 127.0.0.1:port, reopened after a transport error."""

    def __init__(self, port):
        self.port, self.c = port, None

    def send(self, method, path, body=None, headers=None):
        try:
            if self.c is None:
                self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
            self.c.request(method, path, body, headers or {})
            r = self.c.getresponse()
            data = r.read()
            return r.status, data
        except (OSError, http.client.HTTPException):
            self.c = None
            return 0, b""


def sign_up(port, email):
    st, data = Conn(port).send(
        "POST", "/identitytoolkit.googleapis.com/v1/accounts:signUp?key=k",
        json.dumps({"email": email, "password": "correct-horse-9", "returnSecureToken": True}),
        {"content-type": "application/json"})
    if st != 200:
        rel.die(f"sign-up failed: {st} {data[:200]!r}")
    d = json.loads(data)
    return d["idToken"], d["refreshToken"]


def refresh(conn, rt):
    st, data = conn.send("POST", "/securetoken.googleapis.com/v1/token?key=k",
                         f"grant_type=refresh_token&refresh_token={rt}",
                         {"content-type": "application/x-www-form-urlencoded"})
    return json.loads(data)["id_token"] if st == 200 else None


class Ports:
    def __init__(self):
        self.identity = self.vote = self.gateway = None


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.phase = "rotation"
        self.counts = {}  # (phase, verifier) -> [requests, failures]
        self.revoked_refusals = 0
        self.failures = []  # first few failures: (phase, verifier, status, kid)
        self.kids = {}  # phase -> set of kids used

    def add(self, verifier, ok, status, k):
        with self.lock:
            c = self.counts.setdefault((self.phase, verifier), [0, 0])
            c[0] += 1
            self.kids.setdefault(self.phase, set()).add(k)
            if not ok:
                c[1] += 1
                if len(self.failures) < 20:
                    self.failures.append((self.phase, verifier, status, k))


class Worker(threading.Thread):
    def __init__(self, n, ports, tally, stop, identity_up, revoked):
        super().__init__(daemon=True)
        self.n, self.ports, self.tally, self.stop = n, ports, tally, stop
        self.identity_up, self.revoked = identity_up, revoked

    def run(self):
        p = self.ports
        token, rt = sign_up(p.identity, f"worker{self.n}@example.com")
        gw, vote, idp = Conn(p.gateway), Conn(p.vote), Conn(p.identity)
        refreshed = time.monotonic()
        while not self.stop.is_set():
            up = self.identity_up.is_set()
            k = kid(token)
            if up and (time.monotonic() - refreshed > 2 or k in self.revoked):
                fresh = refresh(idp, rt)
                if fresh:
                    token, refreshed, k = fresh, time.monotonic(), kid(fresh)
            auth = {"authorization": f"Bearer {token}"}
            checks = [("gateway", lambda: gw.send("GET", "/", None, auth)),
                      ("vote", lambda: vote.send("POST", "/", "team=DOGS", dict(
                          auth, **{"content-type": "application/x-www-form-urlencoded"})))]
            if up:
                checks.append(("identity", lambda: idp.send(
                    "POST", "/identitytoolkit.googleapis.com/v1/accounts:lookup?key=k",
                    json.dumps({"idToken": token}), {"content-type": "application/json"})))
            for name, do in checks:
                st, _ = do()
                if k in self.revoked:
                    with self.tally.lock:
                        self.tally.revoked_refusals += st != 200
                    continue
                self.tally.add(name, st == 200, st, k)
            time.sleep(0.05)


def start_identity(data, listen, log):
    return rel.Server(["identity", "--project", PROJECT, "--listen", listen, "--rate-limits", "off",
                       "--key-rotation-secs", str(ARGS.rotation_secs), "--data-dir", data], log)


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--outage", type=float, default=600, help="seconds the identity server is down")
    ap.add_argument("--rotation-secs", type=int, default=60)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--after", type=float, default=30)
    ap.add_argument("--docs")
    ARGS = args = ap.parse_args()
    binary = rel.binary()
    work = tempfile.mkdtemp(prefix="gh-rel-keys-")
    data = os.path.join(work, "identity")
    logs = {n: os.path.join(work, f"{n}.log") for n in ("identity", "identity2", "vote", "gateway")}
    ttl = max(1, min(3600, args.rotation_secs // 8))
    reload_s = min(5.0, max(1.0, args.rotation_secs / 8))
    results_path = os.path.join(HERE, "results", time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-keys.jsonl")
    open_results(results_path)
    meta = machine_meta()
    meta["binary"] = binary
    emit(meta)
    ports, tally = Ports(), Tally()
    stop, identity_up, revoked = threading.Event(), threading.Event(), set()
    servers = []
    try:
        identity = start_identity(data, "127.0.0.1:0", logs["identity"])
        servers.append(identity)
        ports.identity = int(identity.addr().rsplit(":", 1)[1])
        identity_up.set()
        iurl = f"http://127.0.0.1:{ports.identity}"
        vport = rel_free_port()
        env = dict(os.environ, PORT=str(vport), GOOGLE_CLOUD_PROJECT=PROJECT,
                   GATEHOUSE_IDENTITY_URL=iurl, DATABASE_URL=f"sqlite://{work}/votes.db")
        vote = rel.Server(["apps", "vote"], logs["vote"], env=env,
                          ready=lambda line: "listening on port" in line)
        servers.append(vote)
        ports.vote = vport
        cfg = os.path.join(work, "openapi.yaml")
        with open(cfg, "w") as f:
            f.write(GATEWAY_CONFIG.format(backend=f"http://127.0.0.1:{vport}", project=PROJECT,
                                          identity=iurl, x509=X509))
        gateway = rel.Server(["gateway", "--config", cfg, "--listen", "127.0.0.1:0", "--threads", "1",
                              "--watch-secs", "0"], logs["gateway"])
        servers.append(gateway)
        ports.gateway = int(gateway.addr().rsplit(":", 1)[1])
        workers = [Worker(i, ports, tally, stop, identity_up, revoked) for i in range(args.workers)]
        for w in workers:
            w.start()
        t0 = time.monotonic()
        phases = {}

        # 1. rotation under load
        rot_s = 2.2 * args.rotation_secs
        say(f"rotation: {rot_s:.0f} s of load, key period {args.rotation_secs} s")
        time.sleep(rot_s)
        phases["rotation"] = rot_s

        # 2. revocation
        tally.phase = "revocation"
        probe, _ = sign_up(ports.identity, "probe@example.com")
        target = kid(probe)
        t = time.monotonic()
        out = subprocess.run([binary, "identity", "--data-dir", data, "signing-keys", "revoke", target],
                             capture_output=True, text=True)
        if out.returncode != 0:
            rel.die(f"revoke failed: {out.stderr}")
        revoked.add(target)
        revoked_at = time.monotonic()
        say(f"revoked {target} ({revoked_at - t:.2f} s for the command)")
        refused = {}
        conns = {"gateway": Conn(ports.gateway), "vote": Conn(ports.vote), "identity": Conn(ports.identity)}
        auth = {"authorization": f"Bearer {probe}"}
        while len(refused) < 3 and time.monotonic() - revoked_at < 60:
            for name, c in conns.items():
                if name in refused:
                    continue
                if name == "gateway":
                    st, _ = c.send("GET", "/", None, auth)
                elif name == "vote":
                    st, _ = c.send("POST", "/", "team=CATS", dict(auth, **{"content-type": "application/x-www-form-urlencoded"}))
                else:
                    st, _ = c.send("POST", "/identitytoolkit.googleapis.com/v1/accounts:lookup?key=k",
                                   json.dumps({"idToken": probe}), {"content-type": "application/json"})
                if st != 200:
                    refused[name] = (round(time.monotonic() - revoked_at, 3), st)
            time.sleep(0.05)
        time.sleep(3)
        phases["revocation"] = time.monotonic() - revoked_at

        # 3. outage
        tally.phase = "outage"
        identity_up.clear()
        time.sleep(0.5)  # workers finish their identity calls
        identity.proc.kill()
        identity.proc.wait()
        down_at = time.monotonic()
        warn_before = {n: count_warn(logs[n]) for n in ("gateway", "vote")}
        say(f"identity killed; outage {args.outage:.0f} s")
        time.sleep(args.outage)
        warn_outage = {n: count_warn(logs[n]) - warn_before[n] for n in ("gateway", "vote")}
        phases["outage"] = time.monotonic() - down_at

        # 4. recovery
        identity2 = start_identity(data, f"127.0.0.1:{ports.identity}", logs["identity2"])
        servers.append(identity2)
        tally.phase = "recovery"
        identity_up.set()
        back_at = time.monotonic()
        time.sleep(args.after)
        phases["recovery"] = time.monotonic() - back_at
        stop.set()
        for w in workers:
            w.join(30)
        total = time.monotonic() - t0
    finally:
        stop.set()
        for s in servers:
            if s.proc.poll() is None:
                s.stop(30)
    r = {
        "kind": "run", "outage_s": args.outage, "rotation_secs": args.rotation_secs, "ttl_s": ttl,
        "reload_s": reload_s, "workers": args.workers, "phases": {k: round(v, 1) for k, v in phases.items()},
        "counts": {f"{p}/{v}": c for (p, v), c in sorted(tally.counts.items())},
        "kids": {p: len(k) for p, k in tally.kids.items()}, "failures": tally.failures,
        "revoked_refusals": tally.revoked_refusals, "refused": refused,
        "warn_outage": warn_outage, "total_s": round(total, 1),
        "keys_created": count_lines([logs["identity"], logs["identity2"]], "created signing key"),
        "results": os.path.relpath(results_path, ROOT),
    }
    emit(r)
    close_results()
    shutil.rmtree(work, ignore_errors=True)
    report(r, meta, args)


def rel_free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def count_warn(path):
    return count_lines([path], "fetch failed")


def count_lines(paths, needle):
    n = 0
    for p in paths:
        try:
            n += sum(needle in line for line in open(p))
        except OSError:
            pass
    return n


def report(r, meta, args):
    bound = r["reload_s"] + r["ttl_s"] + 1
    valid_failures = sum(c[1] for c in r["counts"].values())
    revoked_ok = len(r["refused"]) == 3 and all(t <= bound for t, _ in r["refused"].values())
    logs_ok = all(n <= 2 + r["outage_s"] / 60 for n in r["warn_outage"].values())
    ok = valid_failures == 0 and revoked_ok and logs_ok
    r["pass"] = ok
    say(json.dumps(r, indent=1))
    say("PASS" if ok else "FAIL")
    if args.docs:
        write_section(args.docs, HEADING, section(r, meta, args, bound))
    sys.exit(0 if ok else 1)


def section(r, meta, args, bound):
    def n(x):
        return f"{x:,}"
    rows = []
    for phase in ("rotation", "revocation", "outage", "recovery"):
        for v in ("gateway", "vote", "identity"):
            c = r["counts"].get(f"{phase}/{v}")
            if c:
                rows.append(f"| {phase} ({r['phases'].get(phase, 0):.0f} s) | {v} | {n(c[0])} | **{c[1]}** |")
    refused = ", ".join(f"{v} {t:.2f} s ({st})" for v, (t, st) in sorted(r["refused"].items()))
    cmd = "python3 bench/reliability/key_outage.py"
    if args.outage != 600 or args.rotation_secs != 60 or args.workers != 4 or args.after != 30:
        cmd += f" --outage {args.outage:g} --rotation-secs {args.rotation_secs} --workers {args.workers} --after {args.after:g}"
    cmd += " --docs docs/reliability.md"
    load = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else []
    full = "" if args.outage >= 600 else (
        f" **This run's outage was {args.outage:g} s, shorter than the scenario's 10 minutes** "
        "(the session's time budget); the full run is the command without `--outage`.")
    return f"""{HEADING}

**Criterion.** The gateway keeps verifying with cached keys through a 10-minute identity outage;
a key rotation during load causes zero failed valid requests at the gateway, the vote app and
identity; a revoked key stops validating within its cache TTL.

**What happens.** The identity server publishes its keys (JWKS and x509 map) with
`Cache-Control: max-age` = an eighth of the rotation period (1 s to 1 h; 45 min at the default
6 h). The next key is created and published a quarter period before it signs, every server
re-reads the keys every min(5 s, period/8), and a retired key stays published until every token
it signed has expired, so tokens of the old and the new key verify across a rotation at every
verifier, the identity server included. The verifiers' key cache (`gatehouse-verify`'s
`RemoteKeys`, used by the gateway and the vote app) keeps keys for the max-age (the gateway: at
most `--jwks-cache-duration-secs`, default 300 s, ESPv2's), refreshes them in the background
in the last quarter of that time, and refetches at once for a token whose `kid` it does not
know: one fetch at a time shared by every waiting request, at most one a second (forged `kid`s
cannot make it fetch more; a request waits at most one interval and one fetch). When fetches
fail it keeps verifying with the last keys for up to an hour past their TTL
(`--jwks-max-stale-secs` at the gateway), retrying in the background (1 s doubling to 10 s) and
logging one line a minute; a fetch times out after 5 s, and only the first fetch after a
success can hold requests, for at most that long. A key is revoked with
`gatehouse identity --data-dir DIR signing-keys revoke KID` (`signing-keys list` shows them):
it leaves the published set at the servers' next key reload and stops verifying at each
verifier within the max-age after that. While the identity server is down a verifier cannot
learn of a revocation: the staleness bound is also how long a key revoked during an outage can
keep verifying.

**Found and fixed.** The gateway's verified-token cache answered from memory without looking
at the key set: a token whose key was rotated out or revoked kept passing until the token
expired (up to an hour); the identity server's own cache of verified tokens had the same flaw.
Entries are now tied to the key set they were verified with. Stale keys were kept forever
through an outage (no bound) and each retry reset the keys' age; concurrent requests after the
TTL each made their own fetch in turn (30 s timeout each) instead of sharing one; a failed first
fetch was retried and logged on every request; an unknown-`kid` refetch refused a valid token
for the rest of the second after a forged one. Found by this harness (a shorter run): while
fetches were failing an unknown `kid` did not refetch, so after the identity server came back,
signing with a key made at its restart, the vote app refused that key's tokens until its next
background retry (17 votes refused, up to 10 s); an unknown `kid` now refetches in that state
too (`a_key_made_during_an_outage_verifies_as_soon_as_the_issuer_is_back`). Key rotation
periods under 8 minutes gave a max-age (60 s minimum) longer than the pre-publication window,
and the 30 s reload could create the next key after the current one retired; under
`gatehouse up` the identity server never re-read or rotated its keys (no housekeeping ran).

**Short form** (CI): `crates/gateway/tests/jwks_cache.rs` (outage bridged up to the staleness
bound then refused, back after the issuer returns; a key made during an outage verifies as
soon as the issuer answers; a hanging issuer holds no request longer than the fetch timeout; a removed key, cached token included, refused within the cache
duration; forged `kid`s: at most one fetch a second while a freshly rotated key verifies at
once) and `crates/gatehouse/tests/key_rotation.rs` (the real binaries with
`--key-rotation-secs 8`: rotation under load with zero failures at the three verifiers; a
revoked key refused everywhere within 3 s; identity killed, the gateway and the vote app keep
verifying for 8 s, one warning line).

**Long form.** Result ({meta['date_utc']}, {meta['nproc']} CPUs ({meta['cpu_model']}), shared with
other sessions building and testing (load average at the end {' / '.join(load)}), `{meta['git_rev']}`,
release binary): **{'pass' if r.get('pass') else 'FAIL'}**. {args.workers} workers (one user each, at most
20 rounds a second, a token refreshed every 2 s), key period {args.rotation_secs} s (max-age
{r['ttl_s']} s, key reload {r['reload_s']:g} s); {r['keys_created']} signing keys created during
the run, tokens of {r['kids'].get('rotation', 0)} keys used in the rotation phase. Valid
requests failed: **{sum(c[1] for c in r['counts'].values())}**.{full}

| phase | verifier | valid requests | failed |
|---|---|---:|---:|
{chr(10).join(rows)}

Revocation: the revoked key's token was refused after {refused} (bound: key reload
{r['reload_s']:g} s + max-age {r['ttl_s']} s + 1 s = {bound:g} s); {n(r['revoked_refusals'])}
refusals of workers' tokens of that key before they refreshed them. During the outage the
gateway logged {r['warn_outage'].get('gateway', 0)} and the vote app
{r['warn_outage'].get('vote', 0)} fetch-failure lines.

Command: `{cmd}` (release build: `cargo build --release -p gatehouse`; raw figures:
`{r['results']}`).
"""


if __name__ == "__main__":
    main()
