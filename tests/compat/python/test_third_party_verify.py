"""Third-party verification of Gatehouse ID tokens with google-auth (case 10).

The Auth emulator issues unsigned tokens and publishes no keys, so these fail there.
"""

import google.auth.transport.requests
import google.oauth2.id_token
import pytest
import requests
from cryptography import x509

import gatehouse_compat as gc


@pytest.fixture
def signed_in(make_user, rest):
    user, password = make_user()
    return user, rest.sign_in_ok(user.email, password)


def _request():
    return google.auth.transport.requests.Request(session=requests.Session())


def test_id_token_header_is_rs256_with_published_kid(signed_in, rest, cfg):
    _, body = signed_in
    header = gc.jwt_header(body["idToken"])
    assert header["alg"] == "RS256"
    assert header.get("typ", "JWT") == "JWT"
    certs = rest.get_json(gc.X509_PATH)
    assert isinstance(certs, dict) and certs
    assert header.get("kid") in certs, f"kid {header.get('kid')!r} not in {sorted(certs)}"
    for kid, pem in certs.items():
        cert = x509.load_pem_x509_certificate(pem.encode())
        assert cert.public_key().key_size >= 2048, kid


def test_x509_endpoint_has_cache_control(cfg):
    resp = requests.get(cfg.x509_url, timeout=gc.HTTP_TIMEOUT)
    assert resp.status_code == 200
    assert resp.headers.get("content-type", "").startswith("application/json")
    cache = resp.headers.get("cache-control", "")
    assert "max-age=" in cache, f"Cache-Control should carry max-age, got {cache!r}"


def test_google_auth_verify_token_x509(signed_in, cfg):
    user, body = signed_in
    claims = google.oauth2.id_token.verify_token(
        body["idToken"], _request(), audience=cfg.project, certs_url=cfg.x509_url
    )
    assert claims["iss"] == f"https://securetoken.google.com/{cfg.project}"
    assert claims["aud"] == cfg.project
    assert claims["sub"] == user.uid
    assert claims["email"] == user.email


def test_google_auth_verify_refreshed_token(signed_in, rest, cfg):
    user, body = signed_in
    refreshed = rest.refresh(body["refreshToken"])
    assert refreshed.status_code == 200, refreshed.text
    claims = google.oauth2.id_token.verify_token(
        refreshed.json()["id_token"], _request(), audience=cfg.project, certs_url=cfg.x509_url
    )
    assert claims["sub"] == user.uid


def test_google_auth_rejects_wrong_audience(signed_in, cfg):
    _, body = signed_in
    with pytest.raises(ValueError):
        google.oauth2.id_token.verify_token(
            body["idToken"], _request(), audience=cfg.project + "-nope", certs_url=cfg.x509_url
        )


def test_google_auth_verify_token_jwks(signed_in, cfg):
    """The JWK Set form of the same keys (what jose/Hasura-style verifiers use)."""
    user, body = signed_in
    jwks = requests.get(cfg.jwk_url, timeout=gc.HTTP_TIMEOUT)
    assert jwks.status_code == 200, jwks.text[:300]
    keys = jwks.json()["keys"]
    kid = gc.jwt_header(body["idToken"])["kid"]
    assert any(k.get("kid") == kid and k.get("kty") == "RSA" for k in keys), keys
    claims = google.oauth2.id_token.verify_token(
        body["idToken"], _request(), audience=cfg.project, certs_url=cfg.jwk_url
    )
    assert claims["sub"] == user.uid
