"""pytest fixtures for the Gatehouse IAM compatibility suite.

One `gatehouse iam serve` process (API + one metadata server) runs for the whole session on a
fresh data directory; GATEHOUSE_BIN names the binary. Accounts, keys and grants are made with
the `gatehouse iam` CLI on the same database, the way a project owner uses gcloud; each test
makes its own randomly named accounts (and, for policy tests, its own project), so tests do
not depend on each other.
"""

import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import google.auth  # noqa: E402
import google.auth.transport.requests  # noqa: E402

import iam_compat as ic  # noqa: E402


def pytest_report_header(config):
    return (
        f"gatehouse: {os.environ.get('GATEHOUSE_BIN', '(GATEHOUSE_BIN unset)')} "
        f"google-auth={google.auth.__version__}"
    )


@pytest.fixture(scope="session")
def gatehouse_bin():
    return ic.gatehouse_bin("tests/compat/iam/README.md")


@pytest.fixture(scope="session")
def gh(gatehouse_bin):
    """The running server (`iam_compat.Gatehouse`), with a metadata server for `mds-runner`."""
    data_dir = tempfile.mkdtemp(prefix="gatehouse-iam-compat-")
    server = ic.Gatehouse(gatehouse_bin, data_dir)
    try:
        # The metadata server's account must exist before the server starts.
        mds_account = server.create_account("mds-runner")
        try:
            server.start(mds_account)
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def http_request():
    """google-auth's requests transport (what applications pass to refresh / verify)."""
    return google.auth.transport.requests.Request()


@pytest.fixture
def keyed_account(gh):
    """Creates an account with a key file: returns (Account, key file path, key id)."""

    def make(prefix, project=ic.PROJECT):
        account = gh.create_account(prefix, project=project)
        path, key_id = gh.create_key_file(account)
        return account, path, key_id

    return make

