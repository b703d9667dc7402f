"""JWT authentication (spec §1.3, §1.4, §2, §3; conformance cases 1-18 and 43 of §8).

One module-wide gateway serves the static cases; JWKS fetching/caching/rotation/outage cases
start their own issuer server and gateway.
"""

import json
import threading
import time
import types

import pytest

import harness as h
import oas
from harness import (MSG_ALG_NOT_SUPPORTED, MSG_AUDIENCE, MSG_BAD_FORMAT, MSG_EXPIRED,
                     MSG_HEADER_BAD_JSON, MSG_JWKS_FETCH_FAILED, MSG_MISSING, MSG_NO_MATCHING_KEY,
                     MSG_NOT_YET_VALID, MSG_UNKNOWN_ISSUER, MSG_VERIFICATION_FAILS,
                     assert_jwt_error)

ALGS = ["RS384", "RS512", "PS256", "ES256", "ES384"]
NORM_AUDIENCES = "https://aud.norm.example.test/, norm2.example.test"


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def env(mstack):
    echo = mstack.echo()
    jw = mstack.jwks()
    P = {"rs": jw.add("rs")}
    for alg in ALGS:
        P[alg] = jw.add(alg.lower(), alg=alg)
    P["x509"] = jw.add("x509")
    P["oidc"] = jw.add_oidc("oidc")
    for name in ("a", "b", "c", "norm", "def", "cust", "multi"):
        P[name] = jw.add(name)
    P["multi"].audience = "admin.cloud.goog"
    defs = {
        "rs": P["rs"].definition(),
        "x509": P["x509"].definition("x509"),
        "oidc": P["oidc"].definition("discovery"),
        "a": P["a"].definition(),
        "b": P["b"].definition(),
        "norm": P["norm"].definition(audiences=NORM_AUDIENCES),
        "def": P["def"].definition(audiences=None),
        "multi": P["multi"].definition(),
        "cust": P["cust"].definition(locations=[
            {"header": "jwt-header-foo", "value_prefix": "jwt-prefix-foo"},
            {"query": "jwt-param-foo"},
        ]),
    }
    for alg in ALGS:
        defs[alg.lower()] = P[alg].definition()
    paths = {
        "/v1/shelves": {"get": oas.op("listShelves", security=[{"rs": []}])},
        "/x509": {"get": oas.op("x509", security=[{"x509": []}])},
        "/oidc": {"get": oas.op("oidc", security=[{"oidc": []}])},
        "/any": {"get": oas.op("any", security=[{"a": []}, {"b": []}])},
        "/norm": {"get": oas.op("norm", security=[{"norm": []}])},
        "/default-aud": {"get": oas.op("defaultAud", security=[{"def": []}])},
        "/multi": {"get": oas.op("multi", security=[{"multi": []}])},
        "/custom": {"get": oas.op("custom", security=[{"cust": []}])},
        "/items": {"get": oas.op("getItems", security=[]),
                   "delete": oas.op("deleteItems", security=[{"rs": []}])},
        "/inherits": {"get": oas.op("inherits")},
        "/open": {"get": oas.op("open", security=[])},
    }
    for alg in ALGS:
        paths[f"/alg/{alg.lower()}"] = {"get": oas.op(f"alg{alg}", security=[{alg.lower(): []}])}
    doc = oas.document(paths, security_definitions=defs, security=[{"rs": []}])
    gw = mstack.gateway(doc, backend=echo.url)
    return types.SimpleNamespace(gw=gw, echo=echo, jwks=jw, P=P)


def expect_rejected(env, target, status, message, headers=None):
    before = len(env.echo.requests)
    r = env.gw.get(target, headers=headers)
    assert_jwt_error(r, env.gw, target, status, message)
    assert len(env.echo.requests) == before, "a rejected request reached the backend"
    return r


def expect_ok(env, target, headers=None):
    r = env.gw.get(target, headers=headers)
    assert r.status == 200, r.describe()
    return r.echo()


# --------------------------------------------------------------------------- presence / format

def test_case1_missing_token_401_with_realm(env):
    r = expect_rejected(env, "/v1/shelves?key=api-key", 401, MSG_MISSING)
    assert r.header("www-authenticate") == f'Bearer realm="http://{env.gw.addr}/v1/shelves?key=api-key"'


def test_valid_rs256_token_is_forwarded_untouched(env):
    tok = env.P["rs"].token()
    e = expect_ok(env, "/v1/shelves?key=api-key", bearer(tok))
    assert e["RequestURI"] == "/v1/shelves?key=api-key"
    assert e["headers"]["authorization"] == f"Bearer {tok}"  # forward: true, no backend auth
    assert e["headers"]["x-apigateway-api-userinfo"] == h.payload_segment(tok)
    assert e["headers"]["x-endpoint-api-userinfo"] == h.payload_segment(tok)


def test_realm_path_truncated_to_256_chars(env):
    target = "/v1/shelves?pad=" + "x" * 400
    r = expect_rejected(env, target, 401, MSG_MISSING)
    assert r.header("www-authenticate") == f'Bearer realm="http://{env.gw.addr}{target[:256]}"'


@pytest.mark.parametrize("token,message", [
    ("abc", MSG_BAD_FORMAT),
    ("a.b", MSG_BAD_FORMAT),
    ("a.b.c.d", MSG_BAD_FORMAT),
    (h.raw_token("not json", {"iss": "x"}), MSG_HEADER_BAD_JSON),
], ids=["no-dots", "one-dot", "three-dots", "header-not-json"])
def test_case12_malformed_token_401(env, token, message):
    expect_rejected(env, "/v1/shelves", 401, message, bearer(token))


def test_alg_none_is_rejected(env):
    p = env.P["rs"]
    tok = h.raw_token({"alg": "none", "typ": "JWT"}, h.claims(p.issuer, aud=p.audience), b"")
    expect_rejected(env, "/v1/shelves", 401, MSG_ALG_NOT_SUPPORTED, bearer(tok))


# --------------------------------------------------------------------------- time

def test_expired_token_401(env):
    now = int(time.time())
    tok = env.P["rs"].token(exp=now - 120, iat=now - 720)
    expect_rejected(env, "/v1/shelves", 401, MSG_EXPIRED, bearer(tok))


def test_expired_within_60s_skew_is_accepted(env):
    now = int(time.time())
    expect_ok(env, "/v1/shelves", bearer(env.P["rs"].token(exp=now - 30, iat=now - 600)))


def test_not_yet_valid_token_401(env):
    now = int(time.time())
    tok = env.P["rs"].token(nbf=now + 120, exp=now + 900)
    expect_rejected(env, "/v1/shelves", 401, MSG_NOT_YET_VALID, bearer(tok))


def test_nbf_within_60s_skew_is_accepted(env):
    now = int(time.time())
    expect_ok(env, "/v1/shelves", bearer(env.P["rs"].token(nbf=now + 30)))


def test_token_without_exp_never_expires(env):
    expect_ok(env, "/v1/shelves", bearer(env.P["rs"].token(exp=None)))


# --------------------------------------------------------------------------- issuer / audience

def test_wrong_issuer_401(env):
    tok = env.P["rs"].token(iss="https://evil.example.test")
    expect_rejected(env, "/v1/shelves", 401, MSG_UNKNOWN_ISSUER, bearer(tok))


def test_case9_wrong_audience_403(env):
    tok = env.P["multi"].token(aud="bookstore_test_client.cloud.goog")
    expect_rejected(env, "/multi", 403, MSG_AUDIENCE, bearer(tok))


def test_case10_missing_audience_403(env):
    tok = env.P["multi"].token(aud=None)
    expect_rejected(env, "/multi", 403, MSG_AUDIENCE, bearer(tok))


def test_case11_audience_list_accepted_and_userinfo_is_payload(env):
    tok = env.P["multi"].token(aud=["admin.cloud.goog", "bookstore_test_client.cloud.goog"])
    e = expect_ok(env, "/multi", bearer(tok))
    info = e["headers"]["x-apigateway-api-userinfo"]
    assert info == h.payload_segment(tok)
    assert h.jwt_payload(tok) == h.jwt_payload("x." + info + ".y")


@pytest.mark.parametrize("aud,ok", [
    ("aud.norm.example.test", True),
    ("https://aud.norm.example.test", True),
    ("http://aud.norm.example.test/", True),
    ("https://aud.norm.example.test/", True),
    ("norm2.example.test", True),
    ("https://norm2.example.test/", True),
    ("aud.norm.example.test/extra", False),
    ("https://other.example.test", False),
    ("NORM2.example.test", False),
])
def test_audience_normalisation(env, aud, ok):
    tok = env.P["norm"].token(aud=aud)
    if ok:
        expect_ok(env, "/norm", bearer(tok))
    else:
        expect_rejected(env, "/norm", 403, MSG_AUDIENCE, bearer(tok))


@pytest.mark.parametrize("aud,ok", [
    (f"https://{oas.HOST}", True),
    (oas.HOST, True),
    (f"https://{oas.HOST}/", True),
    ("aud-def", False),
])
def test_default_audience_is_https_service_name(env, aud, ok):
    tok = env.P["def"].token(aud=aud)
    if ok:
        expect_ok(env, "/default-aud", bearer(tok))
    else:
        expect_rejected(env, "/default-aud", 403, MSG_AUDIENCE, bearer(tok))


# --------------------------------------------------------------------------- keys and algs

@pytest.mark.parametrize("alg", ALGS)
def test_case2_supported_algs(env, alg):
    tok = env.P[alg].token()
    e = expect_ok(env, f"/alg/{alg.lower()}", bearer(tok))
    assert e["headers"]["x-apigateway-api-userinfo"] == h.payload_segment(tok)


def test_case6_x509_certificate_map(env):
    expect_ok(env, "/x509", bearer(env.P["x509"].token()))


def test_case5_openid_discovery_when_jwks_uri_absent(env):
    expect_ok(env, "/oidc", bearer(env.P["oidc"].token()))
    assert env.jwks.count(env.jwks.discovery_path("oidc")) >= 1
    assert env.P["oidc"].fetches() >= 1


def test_bad_signature_same_kid_401(env):
    p = env.P["rs"]
    impostor = h.SigningKey("RS256", kid=p.signing.kid)
    expect_rejected(env, "/v1/shelves", 401, MSG_VERIFICATION_FAILS, bearer(p.token(key=impostor)))


def test_tampered_payload_401(env):
    p = env.P["rs"]
    hdr, _, sig = p.token().split(".")
    forged = h.b64u(json.dumps(h.claims(p.issuer, aud=p.audience, sub="admin")))
    expect_rejected(env, "/v1/shelves", 401, MSG_VERIFICATION_FAILS,
                    bearer(f"{hdr}.{forged}.{sig}"))


def test_unknown_kid_401(env):
    p = env.P["rs"]
    tok = p.token(key=h.SigningKey("RS256", kid="never-published"))
    expect_rejected(env, "/v1/shelves", 401, MSG_NO_MATCHING_KEY, bearer(tok))


def test_hmac_with_public_key_as_secret_is_rejected(env):
    """ESPv2 parses HS256 and then finds no key (published keys carry "alg": "RS256"):
    "Jwks doesn't have key to match kid or alg from Jwt". Gatehouse implements no HS* alg, so
    rejecting it at parse time with jwt_verify_lib's "Jwt header [alg] is not supported" is
    equally acceptable; anything else is not."""
    p = env.P["rs"]
    tok = h.hmac_token(h.claims(p.issuer, aud=p.audience), p.signing.public_pem().encode(),
                       kid=p.signing.kid)
    r = env.gw.get_bearer("/v1/shelves", tok)
    msg = r.json().get("message") if r.status == 401 else None
    allowed = (MSG_NO_MATCHING_KEY, MSG_ALG_NOT_SUPPORTED)
    assert_jwt_error(r, env.gw, "/v1/shelves", 401, msg if msg in allowed else allowed[0])


def test_alg_must_match_published_key_alg(env):
    p = env.P["rs"]  # key published with "alg": "RS256"
    tok = p.token(alg="PS256")
    expect_rejected(env, "/v1/shelves", 401, MSG_NO_MATCHING_KEY, bearer(tok))


@pytest.mark.parametrize("case", [
    "expired+wrong_issuer", "expired+wrong_aud", "wrong_aud+bad_signature",
    "expired+bad_signature", "unknown_kid+wrong_aud"])
def test_check_order(env, case):
    """Spec §2.3: parse, issuer, time, audience, then signature."""
    p = env.P["rs"]
    now = int(time.time())
    old = dict(exp=now - 300, iat=now - 900)
    impostor = h.SigningKey("RS256", kid=p.signing.kid)
    stranger = h.SigningKey("RS256", kid="not-published")
    tok, status, msg = {
        "expired+wrong_issuer": (p.token(iss="https://evil.example.test", **old), 401,
                                 MSG_UNKNOWN_ISSUER),
        "expired+wrong_aud": (p.token(aud="nope", **old), 401, MSG_EXPIRED),
        "wrong_aud+bad_signature": (p.token(aud="nope", key=impostor), 403, MSG_AUDIENCE),
        "expired+bad_signature": (p.token(key=impostor, **old), 401, MSG_EXPIRED),
        "unknown_kid+wrong_aud": (p.token(aud="nope", key=stranger), 403, MSG_AUDIENCE),
    }[case]
    expect_rejected(env, "/v1/shelves", status, msg, bearer(tok))


# --------------------------------------------------------------------------- requirements

def test_case18_or_of_providers(env):
    P = env.P
    expect_ok(env, "/any", bearer(P["b"].token()))
    expect_ok(env, "/any", bearer(P["a"].token()))
    expect_rejected(env, "/any", 403, MSG_AUDIENCE, bearer(P["a"].token(aud="nope")))


def test_or_error_preference(env):
    """Spec §3: first error that is neither missing nor unknown issuer; else unknown issuer."""
    P = env.P
    now = int(time.time())
    expect_rejected(env, "/any", 401, MSG_MISSING)
    expect_rejected(env, "/any", 401, MSG_UNKNOWN_ISSUER, bearer(P["c"].token()))
    expect_rejected(env, "/any", 401, MSG_EXPIRED,
                    bearer(P["b"].token(exp=now - 300, iat=now - 900)))


def test_top_level_security_inherited_and_empty_security_opens(env):
    expect_rejected(env, "/inherits", 401, MSG_MISSING)
    expect_ok(env, "/inherits", bearer(env.P["rs"].token()))
    e = expect_ok(env, "/open")
    assert "x-apigateway-api-userinfo" not in e["headers"]


def test_case17_method_override_selects_protected_operation(env):
    expect_ok(env, "/items")
    expect_rejected(env, "/items", 401, MSG_MISSING, {"X-HTTP-Method-Override": "DELETE"})
    e = expect_ok(env, "/items", {"X-HTTP-Method-Override": "DELETE",
                                  "Authorization": f"Bearer {env.P['rs'].token()}"})
    assert e["method"] == "DELETE"
    assert "x-http-method-override" not in e["headers"]


# --------------------------------------------------------------------------- token locations

def test_case14_default_locations_iap_header_and_access_token(env):
    tok = env.P["rs"].token()
    e = expect_ok(env, "/v1/shelves", {"X-Goog-Iap-Jwt-Assertion": tok})
    assert e["headers"]["x-apigateway-api-userinfo"] == h.payload_segment(tok)
    e = expect_ok(env, f"/v1/shelves?access_token={tok}&x=1")
    assert e["RequestURI"] == f"/v1/shelves?access_token={tok}&x=1"  # query tokens stay


@pytest.mark.parametrize("value", ["{t}", "bearer {t}", "Basic {t}"],
                         ids=["no-prefix", "lowercase-bearer", "basic"])
def test_authorization_without_bearer_prefix_is_missing(env, value):
    tok = env.P["rs"].token()
    expect_rejected(env, "/v1/shelves", 401, MSG_MISSING, {"Authorization": value.format(t=tok)})


def test_case15_custom_locations(env):
    tok = env.P["cust"].token()
    e = expect_ok(env, "/custom", {"jwt-header-foo": f"jwt-prefix-foo {tok}"})
    assert e["headers"]["x-apigateway-api-userinfo"] == h.payload_segment(tok)
    expect_ok(env, f"/custom?jwt-param-foo={tok}")


@pytest.mark.parametrize("where", ["authorization", "iap", "access_token"])
def test_case16_custom_locations_replace_defaults(env, where):
    tok = env.P["cust"].token()
    target, headers = "/custom", None
    if where == "authorization":
        headers = bearer(tok)
    elif where == "iap":
        headers = {"X-Goog-Iap-Jwt-Assertion": tok}
    else:
        target = f"/custom?access_token={tok}"
    expect_rejected(env, target, 401, MSG_MISSING, headers)


def test_every_token_found_must_verify(env):
    P = env.P
    good = P["rs"].token()
    expect_rejected(env, "/v1/shelves", 401, MSG_UNKNOWN_ISSUER,
                    {**bearer(good), "X-Goog-Iap-Jwt-Assertion": P["c"].token()})
    now = int(time.time())
    expired = P["rs"].token(exp=now - 300, iat=now - 900)
    expect_rejected(env, f"/v1/shelves?access_token={expired}", 401, MSG_EXPIRED, bearer(good))
    expect_ok(env, f"/v1/shelves?access_token={P['rs'].token()}", bearer(good))


# --------------------------------------------------------------------------- JWKS lifecycle

def _single_provider_gateway(stack, provider, fmt="jwk", **kw):
    echo = stack.echo()
    doc = oas.document({"/hello": {"get": oas.op("hello", security=[{"p": []}])}},
                       security_definitions={"p": provider.definition(fmt, **kw)})
    return stack.gateway(doc, backend=echo.url), echo


def test_case3_invalid_jwks_body_401(stack, jwks):
    p = jwks.add("bad")
    p.mode = "invalid"
    gw, _ = _single_provider_gateway(stack, p)
    r = gw.get_bearer("/hello", p.token())
    assert_jwt_error(r, gw, "/hello", 401, MSG_JWKS_FETCH_FAILED)


def test_case4_unreachable_jwks_401(stack, jwks):
    p = jwks.add("gone")
    gw, _ = _single_provider_gateway(
        stack, p, jwks_uri=f"http://127.0.0.1:{h.dead_port()}/jwks/gone")
    r = gw.get_bearer("/hello", p.token())
    assert_jwt_error(r, gw, "/hello", 401, MSG_JWKS_FETCH_FAILED)


def test_openid_discovery_failure_refuses_to_start(stack, jwks):
    p = jwks.add("nodisc", issuer=f"http://127.0.0.1:{h.dead_port()}/nodisc")
    doc = oas.document({"/hello": {"get": oas.op("hello", security=[{"p": []}])}},
                       security_definitions={"p": p.definition("discovery")})
    stack.gateway_process(doc).expect_start_failure()


def test_case43_jwks_fetched_once_at_start_and_cached(stack, jwks):
    p = jwks.add("cached")  # no Cache-Control: default 300 s
    gw, _ = _single_provider_gateway(stack, p)
    h.wait_until(lambda: p.fetches() >= 1, 5, message="JWKS fetched at start")
    for i in range(5):
        assert gw.get_bearer("/hello", p.token()).status == 200
    assert gw.get_bearer("/hello", p.token()).status == 200
    assert p.fetches() == 1


def test_cache_control_max_age_is_honoured(stack, jwks):
    p = jwks.add("short", cache_control="public, max-age=1")
    gw, _ = _single_provider_gateway(stack, p)
    assert gw.get_bearer("/hello", p.token()).status == 200
    first = p.fetches()
    time.sleep(2.2)
    assert gw.get_bearer("/hello", p.token()).status == 200
    h.wait_until(lambda: p.fetches() > first, 3, message="JWKS refetched after max-age expiry")


def test_unknown_kid_triggers_refetch_then_rotated_key_is_accepted(stack, jwks):
    p = jwks.add("rot")
    gw, _ = _single_provider_gateway(stack, p)
    assert gw.get_bearer("/hello", p.token()).status == 200
    h.wait_until(lambda: p.fetches() >= 1, 5)
    before = p.fetches()
    new = p.rotate(keep_old=False)
    time.sleep(1.1)  # outside the 1 s refetch rate limit
    r = gw.get_bearer("/hello", p.token())
    assert r.status == 200, f"token with rotated kid {new.kid} not accepted: {r.describe()}"
    assert p.fetches() == before + 1


def test_unknown_kid_refetch_is_rate_limited(stack, jwks):
    p = jwks.add("rl")
    gw, _ = _single_provider_gateway(stack, p)
    assert gw.get_bearer("/hello", p.token()).status == 200
    time.sleep(1.1)
    before = p.fetches()
    t0 = time.monotonic()
    for i in range(12):
        tok = p.token(key=h.SigningKey("RS256", kid=f"unknown-{i}"))
        r = gw.get_bearer("/hello", tok)
        assert_jwt_error(r, gw, "/hello", 401, MSG_NO_MATCHING_KEY)
    elapsed = time.monotonic() - t0
    extra = p.fetches() - before
    assert 1 <= extra <= int(elapsed) + 1, (
        f"{extra} JWKS fetches for 12 unknown-kid requests in {elapsed:.2f}s "
        "(expected at least 1, at most one per second)")


def test_key_rotation_under_load_has_zero_failures(stack, jwks):
    p = jwks.add("live")
    gw, _ = _single_provider_gateway(stack, p)
    old_tok = p.token()
    assert gw.get_bearer("/hello", old_tok).status == 200
    time.sleep(1.1)
    failures, count = [], [0]
    stop = time.monotonic() + 2.0
    state = {"tokens": [old_tok]}

    def worker():
        i = 0
        while time.monotonic() < stop:
            toks = state["tokens"]
            tok = toks[i % len(toks)]
            i += 1
            try:
                r = gw.get_bearer("/hello", tok, timeout=5)
                if r.status != 200:
                    failures.append(r.describe())
            except Exception as exc:
                failures.append(repr(exc))
            count[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.4)
    p.rotate(keep_old=True)           # the issuer publishes the new key and signs with it
    state["tokens"] = [old_tok, p.token()]
    time.sleep(0.8)
    state["tokens"] = [p.token()]     # clients only hold new tokens now
    for t in threads:
        t.join()
    assert count[0] > 10
    assert not failures, f"{len(failures)} of {count[0]} requests failed: {failures[:3]}"


def test_jwks_outage_keeps_cached_keys(stack, jwks):
    p = jwks.add("outage", cache_control="public, max-age=1")
    gw, _ = _single_provider_gateway(stack, p)
    tok = p.token()
    assert gw.get_bearer("/hello", tok).status == 200
    jwks.stop()
    try:
        end = time.monotonic() + 2.5  # past the 1 s max-age: refreshes fail, old keys stay
        while time.monotonic() < end:
            r = gw.get_bearer("/hello", p.token())
            assert r.status == 200, f"cached keys not used during JWKS outage: {r.describe()}"
            time.sleep(0.2)
        stranger = p.token(key=h.SigningKey("RS256", kid="during-outage"))
        r = gw.get_bearer("/hello", stranger)
        assert_jwt_error(r, gw, "/hello", 401, MSG_NO_MATCHING_KEY)
        assert gw.get_bearer("/hello", tok).status == 200
    finally:
        jwks.start()
    p.rotate(keep_old=False)
    time.sleep(1.1)
    r = gw.get_bearer("/hello", p.token())
    assert r.status == 200, f"new key not picked up after the JWKS came back: {r.describe()}"
