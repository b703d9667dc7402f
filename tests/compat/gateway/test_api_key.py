"""API keys (spec §1.4, §1.5, §3; case 34). The standalone gateway validates keys against the
file given with --api-keys (one key per line).
"""

import types

import pytest

import harness as h
import oas
from harness import (MSG_API_KEY_INVALID, MSG_API_KEY_MISSING, MSG_MISSING, assert_jwt_error,
                     assert_local_error)

KEYS = ["key-good-1", "key-good-2"]


@pytest.fixture(scope="module")
def env(mstack):
    echo = mstack.echo()
    jw = mstack.jwks()
    p = jw.add("auth0")
    doc = oas.document({
        "/q": {"get": oas.op("queryKey", security=[{"api_key": []}])},
        "/hdr": {"get": oas.op("headerKey", security=[{"api_key_header": []}])},
        "/both": {"get": oas.op("jwtAndKey", security=[{"auth0": [], "api_key": []}])},
        "/open": {"get": oas.op("open", security=[])},
    }, security_definitions={
        "api_key": oas.api_key("key", "query"),
        "api_key_header": oas.api_key("x-api-key", "header"),
        "auth0": p.definition(),
    })
    gw = mstack.gateway(doc, backend=echo.url, api_keys=KEYS)
    return types.SimpleNamespace(gw=gw, echo=echo, p=p)


def not_forwarded(env, fn):
    before = len(env.echo.requests)
    r = fn()
    assert len(env.echo.requests) == before, "a rejected request reached the backend"
    return r


def test_query_key_accepted_and_forwarded(env):
    e = env.gw.get("/q?key=key-good-1&x=1").echo()
    assert e["RequestURI"] == "/q?key=key-good-1&x=1"


def test_second_key_in_file_accepted(env):
    assert env.gw.get("/q?key=key-good-2").status == 200


def test_header_key_accepted(env):
    e = env.gw.get("/hdr", headers={"x-api-key": "key-good-2"}).echo()
    assert e["path"] == "/hdr"


@pytest.mark.parametrize("target,headers", [("/q", None), ("/q?other=key-good-1", None),
                                            ("/hdr", None), ("/hdr", {"x-other": "key-good-1"})])
def test_case34_missing_key_401(env, target, headers):
    r = not_forwarded(env, lambda: env.gw.get(target, headers=headers))
    assert_local_error(r, 401, MSG_API_KEY_MISSING)


@pytest.mark.parametrize("target,headers", [("/q?key=nope", None),
                                            ("/hdr", {"x-api-key": "nope"}),
                                            ("/q?key=key-good-1x", None)])
def test_unknown_key_400(env, target, headers):
    r = not_forwarded(env, lambda: env.gw.get(target, headers=headers))
    assert_local_error(r, 400, MSG_API_KEY_INVALID)


def test_open_operation_needs_no_key(env):
    assert env.gw.get("/open").status == 200


def test_jwt_and_key_both_present(env):
    tok = env.p.token()
    e = env.gw.get_bearer("/both?key=key-good-1", tok).echo()
    assert e["headers"]["x-apigateway-api-userinfo"] == h.payload_segment(tok)


def test_jwt_and_key_token_missing_is_jwt_error_first(env):
    r = not_forwarded(env, lambda: env.gw.get("/both?key=key-good-1"))
    assert_jwt_error(r, env.gw, "/both?key=key-good-1", 401, MSG_MISSING)


def test_jwt_and_key_bad_token_and_bad_key_is_jwt_error_first(env):
    r = not_forwarded(env, lambda: env.gw.get_bearer("/both?key=nope", "abc"))
    assert_jwt_error(r, env.gw, "/both?key=nope", 401, h.MSG_BAD_FORMAT)


def test_jwt_and_key_key_missing_401(env):
    r = not_forwarded(env, lambda: env.gw.get_bearer("/both", env.p.token()))
    assert_local_error(r, 401, MSG_API_KEY_MISSING)


def test_jwt_and_key_key_invalid_400(env):
    r = not_forwarded(env, lambda: env.gw.get_bearer("/both?key=nope", env.p.token()))
    assert_local_error(r, 400, MSG_API_KEY_INVALID)
