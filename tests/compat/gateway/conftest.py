"""Fixtures for the Gatehouse API-gateway conformance suite.

`stack` (per test) and `mstack` (per module) own every local server and gateway a test starts:
    stack.echo()        EchoBackend         stack.jwks()      JwksServer (issuers, JWKS, OIDC)
    stack.identity()    IdentityServer      stack.h2_echo()   H2EchoBackend (cleartext h2)
    stack.gateway(doc, backend=..., sa_key=..., api_keys=[...], admin=True, metadata_host=...)
All of them bind 127.0.0.1:0 and are closed (gateways: process group killed) at teardown.

The gateway binary comes from $GATEHOUSE_BIN; a missing binary fails every gateway test with a
clear message (it never skips). test_harness_selftest.py needs no gateway.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402


def pytest_report_header(config):
    raw = os.environ.get("GATEHOUSE_BIN")
    if not raw:
        return "gatehouse gateway: GATEHOUSE_BIN is not set (every gateway test will fail)"
    return f"gatehouse gateway: GATEHOUSE_BIN={raw}"


@pytest.fixture(scope="session")
def gatehouse_bin():
    return harness.gatehouse_bin()


@pytest.fixture
def stack(tmp_path):
    s = harness.Stack(tmp_path)
    yield s
    s.close()


@pytest.fixture(scope="module")
def mstack(tmp_path_factory):
    s = harness.Stack(tmp_path_factory.mktemp("module"))
    yield s
    s.close()


@pytest.fixture
def echo(stack):
    return stack.echo()


@pytest.fixture
def jwks(stack):
    return stack.jwks()


@pytest.fixture
def identity(stack):
    return stack.identity()
