"""pytest fixtures for the Gatehouse Secret Manager compatibility suite.

One `gatehouse secrets serve` process (Secret Manager + IAM API on one listener) runs for the
whole session on a fresh data directory and master key; GATEHOUSE_BIN names the binary.
Accounts, keys and grants are made with the `gatehouse iam` CLI on the same database, the way
a project owner uses gcloud. A session-wide account holds roles/secretmanager.admin on
`demo-proj`; each test makes its own randomly named secrets (and accounts where it needs a
caller with other rights), so tests do not depend on each other. The master-key rotation
tests run their own server on their own data directory.
"""

import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import google.api_core  # noqa: E402
import google.auth  # noqa: E402
from google.cloud import secretmanager  # noqa: E402

import secrets_compat as sc  # noqa: E402

# The client's requests session honours proxy variables; loopback must never go through one.
for _var in ("NO_PROXY", "no_proxy"):
    _have = os.environ.get(_var, "")
    os.environ[_var] = ",".join(x for x in (_have, "127.0.0.1", "localhost") if x)


def pytest_report_header(config):
    return (
        f"gatehouse: {os.environ.get('GATEHOUSE_BIN', '(GATEHOUSE_BIN unset)')} "
        f"google-cloud-secret-manager={secretmanager.__version__} "
        f"google-api-core={google.api_core.__version__} google-auth={google.auth.__version__}"
    )


@pytest.fixture(scope="session")
def gatehouse_bin():
    return sc.gatehouse_bin("tests/compat/secrets/README.md")


@pytest.fixture
def tmp_data_dir():
    """A throw-away directory, removed after the test (for tests that run their own server)."""
    path = tempfile.mkdtemp(prefix="gatehouse-secrets-compat-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def new_master_key(gatehouse_bin, path):
    res = sc.generate_master_key(gatehouse_bin, path)
    if res.returncode != 0:
        pytest.fail(f"generate-master-key failed: {res.stderr[-2000:]!r}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def gh(gatehouse_bin):
    """The running server (`secrets_compat.Gatehouse`)."""
    data_dir = tempfile.mkdtemp(prefix="gatehouse-secrets-compat-")
    server = None
    try:
        master_key = new_master_key(gatehouse_bin, os.path.join(data_dir, "master.key"))
        server = sc.Gatehouse(gatehouse_bin, data_dir, master_key)
        try:
            server.start()
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield server
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def admin(gh):
    """(Account, key file, client) for an account with roles/secretmanager.admin on demo-proj."""
    account = gh.create_account("sm-admin")
    key_path = gh.create_key_file(account)
    gh.add_binding(account.member, sc.ADMIN, project=sc.PROJECT)
    client = gh.client(key_path)
    # The grant is on the database; the server sees it within its 1 s cache.
    sc.eventually(
        lambda: list(client.list_secrets(request={"parent": f"projects/{sc.PROJECT}"})),
        retry_on=(google.api_core.exceptions.Forbidden,),
    )
    return account, key_path, client


@pytest.fixture
def admin_client(admin):
    return admin[2]


@pytest.fixture
def keyed_account(gh):
    """Creates an account (no roles) with a key file: returns (Account, key path, client)."""

    def make(prefix, project=sc.PROJECT):
        account = gh.create_account(prefix, project=project)
        path = gh.create_key_file(account)
        return account, path, gh.client(path)

    return make


@pytest.fixture
def new_secret(admin_client):
    """Creates a secret (automatic replication) with a fresh id through the client."""

    def make(prefix="sec", labels=None, project=sc.PROJECT, client=None):
        secret = {"replication": {"automatic": {}}}
        if labels:
            secret["labels"] = labels
        return (client or admin_client).create_secret(request={
            "parent": f"projects/{project}",
            "secret_id": sc.unique_id(prefix),
            "secret": secret,
        })

    return make
