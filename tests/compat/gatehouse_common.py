"""Helpers shared by the Python compatibility suites (gateway, iam, python, secrets).

Each suite's own module (`harness.py`, `iam_compat.py`, `gatehouse_compat.py`,
`secrets_compat.py`) imports what it needs from here; nothing here knows a suite:

* the binary under test (`gatehouse_bin`), free ports, unique ids;
* JWT helpers (base64url, the header and payload of a compact JWT);
* Google's JSON error envelope (`assert_google_error`);
* a `gatehouse` server process: started in its own process group with its JSON log in a file,
  ready when a log line says so, stopped with SIGTERM then SIGKILL to the whole group;
* the `gatehouse iam` CLI's accounts, key files and grants (`IamCli`), shared by the IAM and
  Secret Manager suites;
* waiting for a condition (`eventually`, `wait_until`) instead of sleeping.

Only the standard library and pytest are imported: every suite's venv has them.
"""

import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_PROJECT = "demo-proj"


# ---------------------------------------------------------------- the binary, ports, ids

def gatehouse_bin(readme):
    """The binary under test from $GATEHOUSE_BIN (absolute, or relative to the working directory
    or the repository); fails the test (never skips) when unusable, pointing at `readme`."""
    import pytest

    hint = (f"point GATEHOUSE_BIN at the gatehouse binary, e.g. "
            f"GATEHOUSE_BIN=$PWD/target/debug/gatehouse (see {readme})")
    raw = os.environ.get("GATEHOUSE_BIN", "")
    if not raw:
        pytest.fail(f"GATEHOUSE_BIN is not set: {hint}", pytrace=False)
    candidates = [raw] if os.path.isabs(raw) else [raw, os.path.join(REPO, raw)]
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.abspath(c)
    pytest.fail(f"GATEHOUSE_BIN={raw!r} is not an executable file (looked at {candidates}); "
                f"build it first (cargo build -p gatehouse). {hint}", pytrace=False)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique_id(prefix):
    """A fresh id (6-30 chars of [a-z0-9-], starting with a letter): usable as an account id
    and as a secret id."""
    ident = f"{prefix}-{secrets.token_hex(3)}"
    assert 6 <= len(ident) <= 30, ident
    return ident


# ---------------------------------------------------------------- JWT helpers

def b64url_encode(data):
    """Unpadded base64url of bytes (or of a str's UTF-8)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment):
    """Bytes of an unpadded (or padded) base64url segment."""
    if isinstance(segment, bytes):
        segment = segment.decode("ascii")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def jwt_parts(token):
    """The three segments of a compact JWT (asserting that there are three)."""
    if isinstance(token, bytes):
        token = token.decode("ascii")
    parts = token.split(".")
    assert len(parts) == 3, f"not a 3-part JWT: {token[:60]!r}"
    return parts


def jwt_header(token):
    """The decoded JSON header of a compact JWT (no verification)."""
    return json.loads(b64url_decode(jwt_parts(token)[0]))


def jwt_payload(token):
    """The decoded JSON payload of a compact JWT (no verification)."""
    return json.loads(b64url_decode(jwt_parts(token)[1]))


def json_segment(obj):
    """A JWT segment holding `obj` as compact JSON."""
    return b64url_encode(json.dumps(obj, separators=(",", ":")).encode("utf-8"))


# ---------------------------------------------------------------- Google's error envelope

def error_object(resp, code, expected):
    """The `error` object of a raw `requests` response that must be HTTP `code` with a JSON
    body {"error": {...}}; `expected` describes the error in the failure message."""
    assert resp.status_code == code, (
        f"expected HTTP {code} {expected}, got {resp.status_code}: {resp.text[:500]}"
    )
    try:
        body = resp.json()
    except ValueError as exc:
        raise AssertionError(f"error body is not JSON: {resp.text[:300]!r}") from exc
    err = body.get("error") if isinstance(body, dict) else None
    assert isinstance(err, dict), body
    return err


def assert_google_error(resp, code, status):
    """A raw `requests` response carrying Google's JSON error: HTTP `code` and
    {"error": {"code", "message", "status"}}. Returns the `error` object."""
    err = error_object(resp, code, status)
    assert err.get("code") == code, err
    assert err.get("status") == status, err
    assert isinstance(err.get("message"), str) and err["message"], err
    return err


# ---------------------------------------------------------------- JSON logs

def log_field(rec, key):
    """`key` of a JSON log record, at the top level or under `fields`."""
    if key in rec:
        return rec[key]
    fields = rec.get("fields")
    if isinstance(fields, dict):
        return fields.get(key)
    return None


def log_records(path):
    """The JSON objects in a log file (other lines skipped); [] if there is no file yet."""
    out = []
    try:
        with open(path, "rb") as f:
            for raw in f:
                try:
                    rec = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(rec, dict):
                    out.append(rec)
    except (FileNotFoundError, TypeError):
        pass
    return out


def log_tail(path, n=40):
    """The last `n` lines of a log file, for error messages."""
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except (FileNotFoundError, TypeError):
        return "(no log)"


# ---------------------------------------------------------------- waiting

def eventually(check, timeout=6.0, interval=0.1, retry_on=(AssertionError,)):
    """Calls `check` until it returns without raising `retry_on`; returns its value.

    Servers cache accounts, keys and policies for 1 s, so changes made with the CLI (straight
    on the database) show up over HTTP within about that time.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except retry_on:
            if time.monotonic() >= deadline:
                raise
        time.sleep(interval)


def wait_until(predicate, timeout=5.0, interval=0.05, message="condition"):
    """Calls `predicate` until it returns something true; returns that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    last = predicate()
    if last:
        return last
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


# ---------------------------------------------------------------- server processes

def stop_process_group(proc, timeout=10.0):
    """SIGTERM to `proc`'s process group (it was started with start_new_session=True), SIGKILL
    to whatever is left after `timeout` seconds; waits for `proc`."""
    if proc is None:
        return
    steps = [signal.SIGTERM, signal.SIGKILL] if proc.poll() is None else [signal.SIGKILL]
    for sig in steps:  # SIGKILL also reaps whatever is left of the group
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass


class ServerProcess:
    """A `gatehouse` server: its own process group, stdout and stderr in a log file.

    `start(cmd, ready)` returns once `ready(records)` is true for the JSON log records so far;
    `ready` may raise RuntimeError to fail at once (a component reported failure). An exit
    before that, or `timeout` seconds without it, raise RuntimeError with the log's tail.
    """

    def __init__(self, name, log_path):
        self.name = name
        self.log_path = log_path
        self.proc = None
        self._log = None

    def start(self, cmd, ready, timeout=30.0, env=None):
        assert self.proc is None, f"{self.name} already running"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                tail = self.log_tail()
                self._reap()
                raise RuntimeError(f"{self.name} exited with {code}:\n{tail}")
            try:
                if ready(self.log_records()):
                    return
            except RuntimeError as exc:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"{self.name}: {exc}:\n{tail}") from exc
            time.sleep(0.05)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"{self.name} did not come up in {timeout:g} s:\n{tail}")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_records(self):
        return log_records(self.log_path)

    def log_tail(self, n=40):
        return log_tail(self.log_path, n)

    def _reap(self):
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self, timeout=10.0):
        """Stops the server (SIGTERM to its process group, SIGKILL after `timeout`)."""
        if self.proc is None:
            return
        stop_process_group(self.proc, timeout)
        self._reap()


def listening(records, addr=None):
    """Whether a record says "listening" (on `addr`, when given)."""
    return any(
        log_field(r, "message") == "listening" and (addr is None or log_field(r, "addr") == addr)
        for r in records
    )


# ---------------------------------------------------------------- IAM accounts, keys, grants

class Account:
    """A service account as the `gatehouse iam` CLI reports it."""

    def __init__(self, email, unique_id, project):
        self.email = email
        self.unique_id = unique_id
        self.project = project
        self.member = f"serviceAccount:{email}"

    @property
    def resource(self):
        return f"projects/{self.project}/serviceAccounts/{self.email}"

    def __repr__(self):
        return f"Account({self.email})"


class IamCli:
    """Accounts, key files and grants through the `gatehouse iam` CLI on the database, as a
    project owner uses `gcloud iam`. Subclasses provide `iam_json(*args)` (the CLI's last JSON
    line) and `data_dir`."""

    def iam_json(self, *args):  # pragma: no cover - provided by the subclass
        raise NotImplementedError

    def create_account(self, prefix, project=DEFAULT_PROJECT):
        out = self.iam_json("service-accounts", "create", unique_id(prefix), "--project", project)
        assert out["projectId"] == project, out
        return Account(out["email"], out["uniqueId"], out["projectId"])

    def new_key_file(self, account, name=None):
        """Writes a key file for the account under <data dir>/keys; returns (path, key id)."""
        name = name or f"{account.email.split('@')[0]}-{secrets.token_hex(3)}.json"
        path = os.path.join(self.data_dir, "keys", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        out = self.iam_json(
            "service-accounts", "keys", "create", path, "--iam-account", account.email,
        )
        return path, out["keyId"]

    def _binding(self, verb, member, role, project, resource):
        target = ["--resource", resource] if resource else ["--project", project or DEFAULT_PROJECT]
        return self.iam_json(verb, *target, "--member", member, "--role", role)

    def add_binding(self, member, role, project=None, resource=None):
        return self._binding("add-binding", member, role, project, resource)

    def remove_binding(self, member, role, project=None, resource=None):
        return self._binding("remove-binding", member, role, project, resource)


def last_json_line(stdout):
    """The last non-empty line of a CLI's output (str or bytes), parsed as JSON."""
    if isinstance(stdout, bytes):
        stdout = stdout.decode("utf-8", "replace")
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert lines, "no output from the gatehouse CLI"
    return json.loads(lines[-1])
