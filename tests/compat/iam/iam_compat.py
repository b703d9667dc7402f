"""Helpers for the Gatehouse IAM compatibility suite.

`Gatehouse` drives the real `gatehouse` binary: the `iam` CLI on the database (as a project
owner uses `gcloud`) and one `gatehouse iam serve` process with a metadata server. Everything
the tests check goes over HTTP, through the real google-auth library or plain `requests`.
"""

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent.parent))
from gatehouse_common import (  # noqa: E402,F401
    Account, IamCli, ServerProcess, assert_google_error, eventually, free_port, gatehouse_bin,
    jwt_header, jwt_payload, log_field, unique_id,
)
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import requests  # noqa: E402
from google.oauth2 import service_account  # noqa: E402

HTTP_TIMEOUT = 15  # seconds, for every raw request
PROJECT = "demo-proj"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
# What a service's ingress (Cloud Run, IAP) would put in `aud`.
AUDIENCE = "https://vote-app-abc123-uc.a.run.app"
# The audience GAPIC clients put in self-signed JWTs for the IAM API.
IAM_API_AUDIENCE = "https://iam.googleapis.com/"
HERE = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------- small helpers

def unique_project(prefix="pol"):
    return unique_id(prefix)


def assert_ok(resp, what=""):
    assert resp.status_code == 200, f"{what}: HTTP {resp.status_code}: {resp.text[:500]}"
    return resp.json()


def access_token_for(key_path, http_request, scopes=(CLOUD_PLATFORM,)):
    """An access token from our /token endpoint, obtained by google-auth from a key file."""
    creds = service_account.Credentials.from_service_account_file(key_path, scopes=list(scopes))
    creds.refresh(http_request)
    assert creds.token, "google-auth got no access token"
    return creds.token


# ---------------------------------------------------------------- the server under test

class Gatehouse(IamCli):
    """One data directory, the `gatehouse iam` CLI on it, and one `serve` process."""

    def __init__(self, binary, data_dir):
        self.binary = binary
        self.data_dir = data_dir
        self.port = free_port()
        self.mds_port = free_port()
        while self.mds_port == self.port:
            self.mds_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.mds_url = f"http://127.0.0.1:{self.mds_port}"
        self.log_path = os.path.join(data_dir, "server.log")
        self.server = ServerProcess("gatehouse iam serve", self.log_path)
        self.session = requests.Session()
        self.session.trust_env = False  # never send loopback traffic through a proxy
        self.mds_account = None

    # -- CLI ---------------------------------------------------------------
    def cli(self, *args):
        """Runs `gatehouse iam --data-dir D --public-url URL ARGS`; returns stdout lines."""
        cmd = [
            self.binary, "iam", "--data-dir", self.data_dir, "--public-url", self.url, *args,
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            raise AssertionError(
                f"gatehouse CLI failed ({res.returncode}): {' '.join(args)}\n"
                f"stdout: {res.stdout[-2000:]}\nstderr: {res.stderr[-2000:]}"
            )
        return [line for line in res.stdout.splitlines() if line.strip()]

    def cli_json(self, *args):
        lines = self.cli(*args)
        assert lines, f"no output from gatehouse iam {' '.join(args)}"
        return json.loads(lines[-1])

    iam_json = cli_json

    def create_key_file(self, account, name=None):
        """Writes a key file for the account; returns (path, key id)."""
        return self.new_key_file(account, name)

    def delete_key(self, account, key_id):
        self.cli("service-accounts", "keys", "delete", key_id, "--iam-account", account.email)

    def disable(self, account):
        self.cli("service-accounts", "disable", account.email)

    def enable(self, account):
        self.cli("service-accounts", "enable", account.email)

    # -- server ------------------------------------------------------------
    def start(self, mds_account):
        self.mds_account = mds_account
        cmd = [
            self.binary, "iam", "--data-dir", self.data_dir, "--public-url", self.url,
            "serve", "--listen", f"127.0.0.1:{self.port}",
            "--metadata", f"{mds_account.email}=127.0.0.1:{self.mds_port}",
        ]

        def ready(records):
            messages = {log_field(r, "message") for r in records}
            if "metadata server failed" in messages:
                raise RuntimeError("metadata server failed")
            return {"listening", "metadata listening"} <= messages

        self.server.start(cmd, ready)

    def log_records(self):
        return self.server.log_records()

    def log_tail(self, n=40):
        return self.server.log_tail(n)

    def stop(self):
        self.server.stop()
        self.session.close()

    # -- HTTP --------------------------------------------------------------
    def request(self, method, path, token=None, json_body=None, headers=None):
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        return self.session.request(
            method, self.url + path, headers=h, json=json_body, timeout=HTTP_TIMEOUT,
        )

    def get(self, path, token=None):
        return self.request("GET", path, token=token)

    def post(self, path, body=None, token=None):
        return self.request("POST", path, token=token, json_body={} if body is None else body)

    def list_accounts(self, token, project=PROJECT):
        return self.get(f"/v1/projects/{project}/serviceAccounts", token=token)

    def test_permissions(self, token, resource, permissions):
        return self.post(f"/v1/{resource}:testIamPermissions", {"permissions": permissions}, token)

    def x509_certs_url(self):
        return self.url + "/oauth2/v1/certs"

    def jwks_certs_url(self):
        return self.url + "/oauth2/v3/certs"

    def mds_get(self, path, flavor=True, **kwargs):
        headers = {"Metadata-Flavor": "Google"} if flavor else {}
        return self.session.get(
            self.mds_url + path, headers=headers, timeout=HTTP_TIMEOUT, **kwargs,
        )

    # -- google-auth against the metadata server, in a child process -----------
    def run_mds_probe(self, audiences, timeout=60):
        """Runs mds_probe.py with GCE_METADATA_HOST/IP pointing at our metadata server.

        google-auth reads those variables when it is imported, so this must be a new process;
        the test process itself never sets them.
        """
        env = {
            k: v for k, v in os.environ.items()
            if not k.startswith(("GOOGLE_", "GCE_", "CLOUDSDK_", "GCLOUD_"))
            and k not in ("NO_GCE_CHECK", "CLOUD_RUN_JOB", "K_SERVICE")
        }
        gcloud_dir = os.path.join(self.data_dir, "empty-gcloud-config")
        os.makedirs(gcloud_dir, exist_ok=True)
        env.update({
            "GCE_METADATA_HOST": f"127.0.0.1:{self.mds_port}",
            "GCE_METADATA_IP": f"127.0.0.1:{self.mds_port}",
            # No gcloud application-default credentials may be found instead.
            "CLOUDSDK_CONFIG": gcloud_dir,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        })
        for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
            env.pop(k, None)
        res = subprocess.run(
            [sys.executable, os.path.join(HERE, "mds_probe.py"), json.dumps({"audiences": audiences})],
            capture_output=True, text=True, timeout=timeout, env=env,
        )
        if res.returncode != 0:
            raise AssertionError(
                f"mds_probe.py failed ({res.returncode}):\nstdout: {res.stdout[-3000:]}\n"
                f"stderr: {res.stderr[-3000:]}"
            )
        return json.loads(res.stdout.strip().splitlines()[-1])
