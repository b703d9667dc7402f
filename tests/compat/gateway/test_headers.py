"""What reaches the backend (spec §4, §5; conformance cases 19-26, 41, 42).

Module gateway: started with --service-account-key (JWT-bearer grant against the test's token
endpoint) and --backend pointing at a separate "local" echo backend, so local and remote
(x-google-backend) routes can be told apart.
"""

import re
import types

import pytest

import harness as h
import oas

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
CLOUD_TRACE = "105445aa7843bc8bf206b12000100000/1;o=1"
USERINFO_HEADERS = ("x-apigateway-api-userinfo", "x-endpoint-api-userinfo")
SPOOF = {"X-Apigateway-Api-Userinfo": "untrusted-payload",
         "X-Endpoint-API-UserInfo": "untrusted-payload"}
AUD_EXPLICIT = "https://aud.example.test/x"
AUD_OPEN = "https://aud-open.example.test"


@pytest.fixture(scope="module")
def env(mstack):
    remote = mstack.echo()
    local = mstack.echo()
    jw = mstack.jwks()
    ident = mstack.identity()
    p = jw.add("rs")
    R = remote.url
    paths = {
        "/disabled": {"get": oas.op("disabled", security=[{"rs": []}],
                                    backend=oas.backend(R + "/disabled", disable_auth=True))},
        "/withaud": {"get": oas.op("withAud", security=[{"rs": []}],
                                   backend=oas.backend(R + "/withaud", jwt_audience=AUD_EXPLICIT))},
        "/defaultaud": {"get": oas.op("defaultAud", security=[],
                                      backend=oas.backend(R + "/defaultaud"))},
        "/falseauth": {"get": oas.op("falseAuth", security=[],
                                     backend=oas.backend(R + "/falseauth", disable_auth=False))},
        "/openaud": {"get": oas.op("openAud", security=[],
                                   backend=oas.backend(R + "/openaud", jwt_audience=AUD_OPEN))},
        "/remote-open": {"get": oas.op("remoteOpen", security=[],
                                       backend=oas.backend(R + "/remote-open", disable_auth=True))},
        "/local": {"get": oas.op("local", security=[{"rs": []}])},
        "/local-open": {"get": oas.op("localOpen", security=[])},
    }
    doc = oas.document(paths, security_definitions={"rs": p.definition()})
    key = ident.write_key_file(mstack.workdir)
    gw = mstack.gateway(doc, backend=local.url, sa_key=key)
    return types.SimpleNamespace(gw=gw, remote=remote, local=local, p=p, ident=ident)


def userinfo_once(e, token):
    for name in USERINFO_HEADERS:
        values = [v for k, v in e["header_list"] if k == name]
        assert values == [h.payload_segment(token)], f"{name}: {values!r}"


def assert_id_token(env, e, audience):
    auth = e["headers"].get("authorization", "")
    assert auth.startswith("Bearer "), f"backend got Authorization {auth!r}"
    tok = auth[len("Bearer "):]
    assert h.jwt_payload(tok)["aud"] == audience
    assert tok in env.ident.issued.get(audience, []), "not the ID token our endpoint issued"
    return tok


# --------------------------------------------------------------------------- user info

def test_case19_disable_auth_keeps_authorization_and_sets_userinfo(env):
    tok = env.p.token()
    e = env.gw.get("/disabled", headers={"Authorization": f"Bearer {tok}", **SPOOF}).echo()
    assert e["RequestURI"] == "/disabled"
    assert e["headers"]["authorization"] == f"Bearer {tok}"
    assert "x-forwarded-authorization" not in e["headers"]
    userinfo_once(e, tok)


def test_userinfo_is_unpadded_payload_segment(env):
    for i in range(4):  # find a payload whose base64url form would need padding
        tok = env.p.token(extra={"pad": "x" * i})
        if len(h.payload_segment(tok)) % 4:
            break
    e = env.gw.get_bearer("/local", tok).echo()
    userinfo_once(e, tok)
    assert "=" not in e["headers"]["x-apigateway-api-userinfo"]


@pytest.mark.parametrize("route", ["/local-open", "/remote-open"])
def test_spoofed_userinfo_stripped_on_routes_without_auth(env, route):
    e = env.gw.get(route, headers=SPOOF).echo()
    for name in USERINFO_HEADERS:
        assert name not in e["headers"], f"client-supplied {name} reached the backend on {route}"


def test_spoofed_userinfo_replaced_on_auth_route(env):
    tok = env.p.token()
    e = env.gw.get("/local", headers={"Authorization": f"Bearer {tok}", **SPOOF}).echo()
    userinfo_once(e, tok)


# --------------------------------------------------------------------------- backend identity

def test_case20_backend_auth_replaces_authorization(env):
    tok = env.p.token()
    e = env.gw.get_bearer("/withaud", tok).echo()
    assert_id_token(env, e, AUD_EXPLICIT)
    assert e["header_list"].count(["x-forwarded-authorization", f"Bearer {tok}"]) == 1
    assert [k for k, _ in e["header_list"]].count("x-forwarded-authorization") == 1
    userinfo_once(e, tok)


@pytest.mark.parametrize("route", ["/defaultaud", "/falseauth"])
def test_case25_default_audience_is_the_address(env, route):
    e = env.gw.get(route).echo()
    assert_id_token(env, e, env.remote.url + route)
    assert "x-forwarded-authorization" not in e["headers"]


def test_case26_client_x_forwarded_authorization_is_replaced(env):
    e = env.gw.get("/openaud", headers={
        "Authorization": "Bearer origin-token",
        "X-Forwarded-Authorization": "Bearer untrusted-token"}).echo()
    assert_id_token(env, e, AUD_OPEN)
    xfa = [v for k, v in e["header_list"] if k == "x-forwarded-authorization"]
    assert xfa == ["Bearer origin-token"]


def test_client_x_forwarded_authorization_dropped_when_no_authorization(env):
    """Stricter than ESPv2 (which keeps it): a client's own X-Forwarded-Authorization never
    reaches a backend, so a backend can trust that header to be the gateway's (issue #14, 8)."""
    e = env.gw.get("/openaud", headers={"X-Forwarded-Authorization": "Bearer untrusted"}).echo()
    assert_id_token(env, e, AUD_OPEN)
    assert "x-forwarded-authorization" not in e["headers"]


@pytest.mark.parametrize("route", ["/remote-open", "/local-open"])
def test_client_x_forwarded_authorization_dropped_without_backend_auth(env, route):
    e = env.gw.get(route, headers={"X-Forwarded-Authorization": "Bearer forged"}).echo()
    assert "x-forwarded-authorization" not in e["headers"], e["headers"]


def test_case24_disable_auth_no_id_token_no_forwarded_header(env):
    e = env.gw.get("/remote-open", headers={"Authorization": "Bearer origin-token"}).echo()
    assert e["headers"]["authorization"] == "Bearer origin-token"
    assert "x-forwarded-authorization" not in e["headers"]


def test_local_backend_gets_no_id_token(env):
    tok = env.p.token()
    e = env.gw.get_bearer("/local", tok).echo()
    assert e["headers"]["authorization"] == f"Bearer {tok}"
    assert "x-forwarded-authorization" not in e["headers"]
    assert env.local.requests and env.local.requests[-1]["path"] == "/local"


def test_id_tokens_cached_per_audience_and_grant_is_well_formed(env):
    for _ in range(3):
        env.gw.get_bearer("/withaud", env.p.token()).echo()
        env.gw.get("/openaud").echo()
    assert len(env.ident.requests_for(AUD_EXPLICIT)) == 1
    assert len(env.ident.requests_for(AUD_OPEN)) == 1
    allowed = {AUD_EXPLICIT, AUD_OPEN, env.remote.url + "/defaultaud",
               env.remote.url + "/falseauth"}
    asked = set(env.ident.audiences_requested())
    assert asked <= allowed, f"ID tokens requested for unexpected audiences: {asked - allowed}"
    for rec in env.ident.token_requests:
        assert rec["error"] is None, rec["error"]
        assert (rec["content_type"] or "").startswith("application/x-www-form-urlencoded")
        c = rec["claims"]
        assert c["iss"] == env.ident.email and c.get("sub") == env.ident.email
        assert c["aud"] == env.ident.token_uri
        assert 0 < c["exp"] - c["iat"] <= 3600
    assert env.ident.metadata_requests == []


# --------------------------------------------------------------------------- other headers

def test_host_rewritten_for_remote_backend_only(env):
    e = env.gw.get("/remote-open", headers={"Host": "api.example.test"}).echo()
    assert e["headers"]["host"] == "127.0.0.1"
    e = env.gw.get("/local-open", headers={"Host": "api.example.test"}).echo()
    assert e["headers"]["host"] == "api.example.test"


def test_case42_trace_context_passed_on(env):
    e = env.gw.get("/remote-open", headers={"traceparent": TRACEPARENT,
                                            "X-Cloud-Trace-Context": CLOUD_TRACE}).echo()
    tp = e["headers"].get("traceparent", "")
    assert re.fullmatch(r"00-0af7651916cd43dd8448eb211c80319c-[0-9a-f]{16}-0[01]", tp), tp
    ctc = e["headers"].get("x-cloud-trace-context", "")
    assert ctc.startswith("105445aa7843bc8bf206b12000100000/"), ctc


def test_x_forwarded_for_appended(env):
    """The peer is appended as Envoy does, so the last entry cannot be forged (issue #14, 9)."""
    e = env.gw.get("/remote-open", headers={"X-Forwarded-For": "203.0.113.7"}).echo()
    assert e["headers"].get("x-forwarded-for") == "203.0.113.7, 127.0.0.1", e["headers"]
    e = env.gw.get("/remote-open").echo()
    assert e["headers"].get("x-forwarded-for") == "127.0.0.1", e["headers"]


def test_no_envoy_headers_in_response(env):
    r = env.gw.get("/remote-open")
    assert r.status == 200
    assert not [k for k, _ in r.headers if k.lower().startswith("x-envoy-")], r.headers


def test_case41_underscore_in_header_name_rejected(env):
    before = len(env.remote.requests)
    r = env.gw.get("/remote-open", headers={"X_INTERNAL": "v"})
    assert r.status == 400, r.describe()  # spec §3: Envoy codec error, body not specified
    assert len(env.remote.requests) == before


# --------------------------------------------------------------------------- other identity modes

def test_case23_metadata_server_identity_and_constant_address(stack, echo, identity):
    aud = "https://backend.example.test/bearertoken/constant"
    doc = oas.document({"/bearertoken/constant/{foo}": {"get": oas.op(
        "bearerConstant", security=[],
        backend=oas.backend(echo.url + "/bearertoken/constant",
                            path_translation="CONSTANT_ADDRESS", jwt_audience=aud))},
        "/plain": {"get": oas.op("plain", security=[], backend=oas.backend(echo.url + "/plain"))}})
    gw = stack.gateway(doc, metadata_host=identity.addr)
    e = gw.get("/bearertoken/constant/42").echo()
    assert e["RequestURI"] == "/bearertoken/constant?foo=42"
    tok = e["headers"]["authorization"][len("Bearer "):]
    assert h.jwt_payload(tok)["aud"] == aud and tok in identity.issued[aud]
    e = gw.get("/plain").echo()
    assert h.jwt_payload(e["headers"]["authorization"][7:])["aud"] == echo.url + "/plain"
    for rec in identity.metadata_requests:
        assert rec["error"] is None and rec["flavor"] == "Google"
        assert rec["format"] == "full"
    assert sorted(r["audience"] for r in identity.metadata_requests) == sorted(
        [aud, echo.url + "/plain"])
    assert identity.token_requests == []


def test_backend_auth_off_without_key_or_metadata(stack, echo, jwks):
    p = jwks.add("rs")
    doc = oas.document({"/withaud": {"get": oas.op(
        "withAud", security=[{"rs": []}],
        backend=oas.backend(echo.url + "/withaud", jwt_audience=AUD_EXPLICIT))}},
        security_definitions={"rs": p.definition()})
    gw = stack.gateway(doc)
    tok = p.token()
    e = gw.get_bearer("/withaud", tok).echo()
    assert e["headers"]["authorization"] == f"Bearer {tok}"
    assert "x-forwarded-authorization" not in e["headers"]
    assert e["headers"]["x-apigateway-api-userinfo"] == h.payload_segment(tok)
