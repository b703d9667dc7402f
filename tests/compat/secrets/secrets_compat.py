"""Helpers for the Gatehouse Secret Manager compatibility suite.

`Gatehouse` drives the real `gatehouse` binary: `gatehouse secrets serve` (Secret Manager and
the IAM API on one listener), the `gatehouse iam` CLI for accounts, keys and grants (as a project
owner uses `gcloud iam`), and the `gatehouse secrets` CLI (the local administrator, as
`gcloud secrets`). Everything the tests check over HTTP goes through the real, unmodified
`google-cloud-secret-manager` client (REST transport) or, for wire details, plain `requests`.
"""

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent.parent))
from gatehouse_common import (  # noqa: E402,F401
    Account, IamCli, ServerProcess, assert_google_error, eventually, free_port, gatehouse_bin,
    last_json_line, listening, unique_id,
)
import os  # noqa: E402
import subprocess  # noqa: E402

import requests  # noqa: E402
from google.api_core import exceptions as api_exceptions  # noqa: E402
from google.cloud import secretmanager  # noqa: E402
from google.oauth2 import service_account  # noqa: E402

HTTP_TIMEOUT = 15  # seconds, for every raw request
CLI_TIMEOUT = 60
START_TIMEOUT = 30
PROJECT = "demo-proj"
# The audience the GAPIC client puts in its self-signed JWTs, whatever api_endpoint says.
SECRET_MANAGER_AUDIENCE = "https://secretmanager.googleapis.com/"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
MAX_PAYLOAD = 64 * 1024  # Secret Manager's payload limit (65536 bytes)

ADMIN = "roles/secretmanager.admin"
ACCESSOR = "roles/secretmanager.secretAccessor"

State = secretmanager.SecretVersion.State


# ---------------------------------------------------------------- small helpers





def project_number_of(name):
    """`projects/NUMBER/...` -> NUMBER (asserting that it is a number, as Google returns)."""
    parts = name.split("/")
    assert len(parts) >= 2 and parts[0] == "projects", name
    assert parts[1].isdigit(), f"resource names must carry the project NUMBER, got {name!r}"
    return parts[1]


def error_body(exc):
    """The JSON `error` object of the HTTP response behind an api-core exception."""
    resp = getattr(exc, "response", None)
    assert resp is not None, f"{type(exc).__name__} carries no HTTP response: {exc!r}"
    try:
        body = resp.json()
    except ValueError as err:
        raise AssertionError(f"error body is not JSON: {resp.text[:300]!r}") from err
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    return body["error"]


def assert_api_error(exc, cls, code, status, message_contains=None):
    """`exc` is what api-core raises over REST for Google's error `code`/`status`.

    Over REST api-core picks the class from the HTTP status (400 BadRequest, 401 Unauthorized,
    403 Forbidden, 404 NotFound, 409 Conflict), never from the rpc status string, so the
    status (FAILED_PRECONDITION, ALREADY_EXISTS, ...) is checked in the response body.
    """
    assert isinstance(exc, cls), (
        f"expected {cls.__name__} (HTTP {code} {status}), got {type(exc).__name__}: {exc}"
    )
    assert exc.code == code, f"expected HTTP {code}, got {exc.code}: {exc}"
    err = error_body(exc)
    assert err.get("code") == code, err
    assert err.get("status") == status, f"expected status {status}, got {err}"
    assert isinstance(err.get("message"), str) and err["message"], err
    if message_contains is not None:
        assert message_contains in err["message"], err
    return err


def call_error(fn, *args, **kwargs):
    """Runs a client call that must fail; returns the api-core exception."""
    try:
        result = fn(*args, **kwargs)
    except api_exceptions.GoogleAPICallError as exc:
        return exc
    raise AssertionError(f"expected an API error, the call succeeded: {result!r}"[:800])


def expect_error(cls, code, status, fn, *args, message_contains=None, **kwargs):
    exc = call_error(fn, *args, **kwargs)
    assert_api_error(exc, cls, code, status, message_contains=message_contains)
    return exc


def client_for(credentials, url):
    """The real client, exactly as an application points it at a custom endpoint."""
    return secretmanager.SecretManagerServiceClient(
        credentials=credentials,
        transport="rest",
        client_options={"api_endpoint": url},
    )


def key_file_client(key_path, url):
    creds = service_account.Credentials.from_service_account_file(key_path)
    return client_for(creds, url)


def generate_master_key(binary, path):
    """`gatehouse secrets generate-master-key PATH` (unchecked CompletedProcess)."""
    return subprocess.run(
        [binary, "secrets", "generate-master-key", path],
        capture_output=True, stdin=subprocess.DEVNULL, timeout=CLI_TIMEOUT,
    )


# ---------------------------------------------------------------- the server under test

class Gatehouse(IamCli):
    """One data directory and master key, the CLIs on them, and a `secrets serve` process."""

    def __init__(self, binary, data_dir, master_key_file):
        self.binary = binary
        self.data_dir = data_dir
        self.master_key_file = master_key_file
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = None
        self._starts = 0
        self.session = requests.Session()
        self.session.trust_env = False  # never send loopback traffic through a proxy

    # -- CLI ---------------------------------------------------------------
    def run(self, *args, input_bytes=None, timeout=CLI_TIMEOUT):
        """Runs the binary with ARGS; returns the CompletedProcess (bytes)."""
        return subprocess.run(
            [self.binary, *args], input=input_bytes, capture_output=True, timeout=timeout,
            stdin=None if input_bytes is not None else subprocess.DEVNULL,
        )

    @staticmethod
    def _check(res, args):
        if res.returncode != 0:
            raise AssertionError(
                f"gatehouse CLI failed ({res.returncode}): {' '.join(map(str, args))}\n"
                f"stdout: {res.stdout[-2000:]!r}\nstderr: {res.stderr[-2000:]!r}"
            )
        return res

    last_json = staticmethod(last_json_line)

    def iam(self, *args):
        """`gatehouse iam --data-dir D --master-key-file MK --public-url URL ARGS`; returns the
        last JSON line. (IAM's signing keys are wrapped with the same master key.)"""
        full = ("iam", "--data-dir", self.data_dir, "--master-key-file", self.master_key_file,
                "--public-url", self.url, *args)
        return self.last_json(self._check(self.run(*full), full).stdout)

    iam_json = iam

    def secrets_cmd(self, *args, project=PROJECT, master_key_file=None, input_bytes=None):
        """`gatehouse secrets --data-dir D --master-key-file MK --project P ARGS` (unchecked)."""
        full = [
            "secrets", "--data-dir", self.data_dir,
            "--master-key-file", master_key_file or self.master_key_file,
        ]
        if project:
            full += ["--project", project]
        return self.run(*full, *args, input_bytes=input_bytes)

    def secrets_cli(self, *args, **kwargs):
        """Runs `gatehouse secrets ...`, which must succeed; returns the CompletedProcess."""
        return self._check(self.secrets_cmd(*args, **kwargs), args)

    def secrets_json(self, *args, **kwargs):
        return self.last_json(self.secrets_cli(*args, **kwargs).stdout)

    def write_file(self, name, data):
        path = os.path.join(self.data_dir, "files", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def create_key_file(self, account):
        """Writes a key file for the account; returns its path."""
        return self.new_key_file(account)[0]

    # -- server ------------------------------------------------------------
    def serve_args(self, master_key_file=None):
        return [
            "secrets", "--data-dir", self.data_dir,
            "--master-key-file", master_key_file or self.master_key_file,
            "--public-url", self.url, "serve", "--listen", f"127.0.0.1:{self.port}",
        ]

    @property
    def proc(self):
        return self.server.proc if self.server is not None else None

    @property
    def log_path(self):
        return self.server.log_path if self.server is not None else None

    def start(self):
        assert self.proc is None, "server already running"
        self._starts += 1
        self.server = ServerProcess(
            "gatehouse secrets serve", os.path.join(self.data_dir, f"server-{self._starts}.log"),
        )
        addr = f"127.0.0.1:{self.port}"
        self.server.start([self.binary, *self.serve_args()], lambda records: listening(records, addr),
                          timeout=START_TIMEOUT)

    def log_records(self):
        return self.server.log_records()

    def log_tail(self, n=40):
        return self.server.log_tail(n)

    def stop(self):
        """Stops the server (SIGTERM to its process group, SIGKILL after 10 s)."""
        if self.server is not None:
            self.server.stop()

    def close(self):
        self.stop()
        self.session.close()

    # -- clients -----------------------------------------------------------
    def client(self, key_path):
        """The real client with credentials from a key file we issued."""
        return key_file_client(key_path, self.url)

    def raw(self, method, path, token=None, headers=None, **kwargs):
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        return self.session.request(
            method, self.url + path, headers=h, timeout=HTTP_TIMEOUT, **kwargs,
        )
