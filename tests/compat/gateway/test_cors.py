"""CORS with x-google-endpoints allowCors (spec §1.7, §7; case 35). With allowCors the OPTIONS
request of every configured template goes to the backend (path translation and backend ID
token included) without JWT or API-key checks; without it, OPTIONS is 405.
"""

import pytest

import harness as h
import oas
from harness import MSG_MISSING, MSG_NOT_DEFINED, assert_jwt_error, assert_local_error, msg_405

PREFLIGHT = {"Origin": "https://app.example.test",
             "Access-Control-Request-Method": "GET",
             "Access-Control-Request-Headers": "authorization"}
BACKEND_CORS = {"Access-Control-Allow-Origin": "https://app.example.test",
                "Access-Control-Allow-Methods": "GET, POST",
                "Access-Control-Allow-Headers": "authorization",
                "Access-Control-Max-Age": "600"}


def cors_doc(echo, p, allow_cors=True, endpoints_name=None, audience=None):
    be = {"jwt_audience": audience} if audience else {}
    return oas.document({
        "/auth/info/firebase": {"get": oas.op("authInfo", security=[{"fb": []}],
                                              backend=oas.backend(echo.url + "/auth/info/firebase",
                                                                  **be))},
        "/const/{id}": {"get": oas.op("constGet", security=[{"fb": []}],
                                      backend=oas.backend(echo.url + "/constpath",
                                                          path_translation="CONSTANT_ADDRESS"))},
        "/explicit": {"get": oas.op("explicitGet", security=[{"fb": []}]),
                      "options": oas.op("explicitOptions", security=[{"fb": []}])},
        "/local": {"get": oas.op("localGet", security=[{"fb": []}])},
    }, security_definitions={"fb": p.definition()}, allow_cors=allow_cors,
        endpoints_name=endpoints_name)


@pytest.fixture
def setup(stack, echo, jwks):
    echo.response_headers_by_method["OPTIONS"] = dict(BACKEND_CORS)
    return echo, jwks.add("fb")


def test_case35_preflight_proxied_without_jwt(stack, setup):
    echo, p = setup
    gw = stack.gateway(cors_doc(echo, p), backend=echo.url)
    r = gw.request("OPTIONS", "/auth/info/firebase", headers=PREFLIGHT)
    assert r.status == 200, r.describe()
    for k, v in BACKEND_CORS.items():
        assert r.header(k) == v, f"{k}: {r.describe()}"
    e = r.echo()
    assert e["method"] == "OPTIONS" and e["RequestURI"] == "/auth/info/firebase"
    assert e["headers"]["origin"] == PREFLIGHT["Origin"]
    assert e["headers"]["access-control-request-method"] == "GET"
    # the GET itself still needs the token
    assert_jwt_error(gw.get("/auth/info/firebase"), gw, "/auth/info/firebase", 401, MSG_MISSING)


def test_preflight_uses_path_translation_and_local_backend(stack, setup):
    echo, p = setup
    gw = stack.gateway(cors_doc(echo, p), backend=echo.url)
    e = gw.request("OPTIONS", "/const/7", headers=PREFLIGHT).echo()
    assert e["RequestURI"] == "/constpath?id=7"
    e = gw.request("OPTIONS", "/local", headers=PREFLIGHT).echo()
    assert e["RequestURI"] == "/local"


def test_explicit_options_operation_keeps_its_auth(stack, setup):
    echo, p = setup
    gw = stack.gateway(cors_doc(echo, p), backend=echo.url)
    assert_jwt_error(gw.request("OPTIONS", "/explicit", headers=PREFLIGHT), gw, "/explicit",
                     401, MSG_MISSING)
    r = gw.request("OPTIONS", "/explicit",
                   headers={**PREFLIGHT, "Authorization": f"Bearer {p.token()}"})
    assert r.status == 200 and r.echo()["method"] == "OPTIONS"


def test_preflight_on_unknown_path_404(stack, setup):
    echo, p = setup
    gw = stack.gateway(cors_doc(echo, p), backend=echo.url)
    assert_local_error(gw.request("OPTIONS", "/nope", headers=PREFLIGHT), 404, MSG_NOT_DEFINED)


def test_without_allow_cors_options_is_405(stack, setup):
    echo, p = setup
    before = len(echo.requests)
    gw = stack.gateway(cors_doc(echo, p, allow_cors=None), backend=echo.url)
    r = gw.request("OPTIONS", "/auth/info/firebase", headers=PREFLIGHT)
    assert_local_error(r, 405, msg_405("/auth/info/firebase"))
    assert len(echo.requests) == before


def test_allow_cors_false_options_is_405(stack, setup):
    echo, p = setup
    gw = stack.gateway(cors_doc(echo, p, allow_cors=False), backend=echo.url)
    assert_local_error(gw.request("OPTIONS", "/auth/info/firebase", headers=PREFLIGHT), 405,
                       msg_405("/auth/info/firebase"))


def test_allow_cors_ignored_when_endpoint_name_differs_from_host(stack, setup):
    echo, p = setup
    gw = stack.gateway(cors_doc(echo, p, endpoints_name="other.example.test"), backend=echo.url)
    assert_local_error(gw.request("OPTIONS", "/auth/info/firebase", headers=PREFLIGHT), 405,
                       msg_405("/auth/info/firebase"))


def test_preflight_gets_backend_id_token(stack, setup, identity):
    echo, p = setup
    aud = "https://cors-backend.example.test"
    gw = stack.gateway(cors_doc(echo, p, audience=aud), backend=echo.url,
                       sa_key=identity.write_key_file(stack.workdir))
    e = gw.request("OPTIONS", "/auth/info/firebase", headers=PREFLIGHT).echo()
    tok = e["headers"]["authorization"][len("Bearer "):]
    assert h.jwt_payload(tok)["aud"] == aud and tok in identity.issued[aud]
