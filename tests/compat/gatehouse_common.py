"""Helpers shared by the Python compatibility suites (imported from each suite's helper module):
free ports, unique ids, and reading a `gatehouse` process's JSON log file."""

import json
import secrets
import socket
import time


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
