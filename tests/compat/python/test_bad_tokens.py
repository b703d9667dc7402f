"""The server must refuse forged or foreign ID tokens (cases 11, 12).

Every refusal is HTTP 400 {"error":{"code":400,"message":"INVALID_ID_TOKEN...","errors":[...]}}.
The Auth emulator accepts unsigned and arbitrarily signed tokens, so most of these fail there.
"""

import hashlib
import hmac
import json
import time

import jwt as pyjwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import gatehouse_compat as gc


@pytest.fixture
def real(make_user, rest):
    """A genuine ID token of the default project: (token, header, payload)."""
    user, password = make_user()
    token = rest.sign_in_ok(user.email, password)["idToken"]
    # Positive control: the unmodified token is accepted.
    resp = rest.lookup(token)
    assert resp.status_code == 200, resp.text
    return token, gc.jwt_header(token), gc.jwt_payload(token)


def _fresh_private_pem():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _assert_invalid(rest, token):
    gc.assert_error(rest.lookup(token), "INVALID_ID_TOKEN")


# ------------------------------------------------------------------ (a) alg:none

def test_alg_none_copy_rejected(real, rest):
    token, _, payload = real
    forged = ".".join([gc.json_segment({"alg": "none", "typ": "JWT"}), gc.json_segment(payload), ""])
    _assert_invalid(rest, forged)


def test_alg_none_header_with_original_signature_rejected(real, rest):
    token, header, _ = real
    parts = gc.jwt_parts(token)
    forged_header = dict(header, alg="none")
    _assert_invalid(rest, ".".join([gc.json_segment(forged_header), parts[1], parts[2]]))


def test_tampered_payload_rejected(real, rest):
    token, _, payload = real
    parts = gc.jwt_parts(token)
    tampered = dict(payload, admin=True, exp=payload["exp"] + 3600)
    _assert_invalid(rest, ".".join([parts[0], gc.json_segment(tampered), parts[2]]))


# ------------------------------------------------------------------ (b) foreign RS256 keys

def test_rs256_foreign_key_same_kid_rejected(real, rest):
    _, header, payload = real
    forged = pyjwt.encode(
        payload, _fresh_private_pem(), algorithm="RS256", headers={"kid": header.get("kid", "")}
    )
    _assert_invalid(rest, forged)


def test_rs256_foreign_key_unknown_kid_rejected(real, rest):
    _, _, payload = real
    forged = pyjwt.encode(
        payload, _fresh_private_pem(), algorithm="RS256",
        headers={"kid": "compat-unknown-" + gc.rand_suffix(12)},
    )
    _assert_invalid(rest, forged)


def test_rs256_foreign_key_no_kid_rejected(real, rest):
    _, _, payload = real
    _assert_invalid(rest, pyjwt.encode(payload, _fresh_private_pem(), algorithm="RS256"))


# ------------------------------------------------------------------ (c) HS256 key confusion

def _hs256(header, payload, secret):
    signing_input = (gc.json_segment(header) + "." + gc.json_segment(payload)).encode("ascii")
    sig = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return signing_input.decode("ascii") + "." + gc.b64url_encode(sig)


def test_hs256_with_public_key_as_secret_rejected(real, rest, cfg):
    _, header, payload = real
    certs = requests.get(cfg.x509_url, timeout=gc.HTTP_TIMEOUT)
    assert certs.status_code == 200, "needs the published x509 certificates"
    certs = certs.json()
    kid = header.get("kid")
    cert_pem = certs[kid] if kid in certs else next(iter(certs.values()))
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    pub_pem = cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pub_pkcs1 = cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
    )
    pub_der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs_header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    for secret in (pub_pem, pub_pem.strip(), pub_pkcs1, pub_der, cert_pem.encode()):
        _assert_invalid(rest, _hs256(hs_header, payload, secret))
    # Same, without a kid.
    _assert_invalid(rest, _hs256({"alg": "HS256", "typ": "JWT"}, payload, pub_pem))


# ------------------------------------------------------------------ (d) other project

def test_token_of_other_project_rejected(rest, cfg):
    resp = rest.post("signUp", {"returnSecureToken": True}, key=cfg.other_api_key)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    other_token = body["idToken"]
    try:
        claims = gc.jwt_payload(other_token)
        assert claims["aud"] == cfg.other_project
        assert claims["iss"] == f"https://securetoken.google.com/{cfg.other_project}"
        assert claims["provider_id"] == "anonymous"
        assert claims["firebase"]["sign_in_provider"] == "anonymous"

        # Positive control: valid in its own project.
        ok = rest.lookup(other_token, key=cfg.other_api_key)
        assert ok.status_code == 200, ok.text
        assert ok.json()["users"][0]["localId"] == body["localId"]

        _assert_invalid(rest, other_token)
        # Its refresh token does not work in the default project either.
        gc.assert_error(rest.refresh(body["refreshToken"]), "INVALID_REFRESH_TOKEN")
    finally:
        rest.post("delete", {"idToken": other_token}, key=cfg.other_api_key)


# ------------------------------------------------------------------ (e) garbage

@pytest.mark.parametrize("garbage", ["abc", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "...", "a" * 600])
def test_garbage_id_tokens_rejected(rest, garbage):
    _assert_invalid(rest, garbage)


def test_empty_id_token_rejected(rest):
    # The emulator answers MISSING_ID_TOKEN for an empty idToken; accept either.
    gc.assert_error(rest.lookup(""), "INVALID_ID_TOKEN", "MISSING_ID_TOKEN")


def test_expired_looking_forgery_rejected(real, rest):
    # An old, unsigned token: must be refused whatever the server thinks of exp.
    _, _, payload = real
    old = dict(payload, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)
    _assert_invalid(rest, ".".join([gc.json_segment({"alg": "none", "typ": "JWT"}),
                                    gc.json_segment(old), ""]))


# ------------------------------------------------------------------ secure token API

def test_garbage_refresh_token_rejected(rest):
    gc.assert_error(rest.refresh("not-a-refresh-token"), "INVALID_REFRESH_TOKEN")
    gc.assert_error(rest.refresh("A" * 300), "INVALID_REFRESH_TOKEN")


@pytest.fixture
def refresh_token(make_user, rest):
    user, password = make_user()
    return rest.sign_in_ok(user.email, password)["refreshToken"]


# A real refresh token is used below: servers (the emulator among them) may parse the
# refresh token before looking at grant_type, which would turn these into
# INVALID_REFRESH_TOKEN.
def test_missing_grant_type(rest, refresh_token):
    gc.assert_error(rest.token({"refresh_token": refresh_token}), "MISSING_GRANT_TYPE")


def test_invalid_grant_type(rest, refresh_token):
    gc.assert_error(
        rest.token({"grant_type": "password", "refresh_token": refresh_token}),
        "INVALID_GRANT_TYPE",
    )


def test_missing_refresh_token(rest):
    gc.assert_error(rest.token({"grant_type": "refresh_token"}), "MISSING_REFRESH_TOKEN")


def test_refresh_token_of_deleted_user(make_user, rest, app):
    from firebase_admin import auth

    user, password = make_user()
    rt = rest.sign_in_ok(user.email, password)["refreshToken"]
    auth.delete_user(user.uid, app=app)
    gc.assert_error(rest.refresh(rt), "INVALID_REFRESH_TOKEN", "USER_NOT_FOUND")


def test_json_body_refresh_accepted(make_user, rest, cfg):
    user, password = make_user()
    rt = rest.sign_in_ok(user.email, password)["refreshToken"]
    url = f"{cfg.url}/securetoken.googleapis.com/v1/token?key={cfg.api_key}"
    resp = requests.post(
        url, data=json.dumps({"grant_type": "refresh_token", "refresh_token": rt}),
        headers={"content-type": "application/json"}, timeout=gc.HTTP_TIMEOUT,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["user_id"] == user.uid


# ------------------------------------------------------------------ error envelope

def test_error_envelope_shape(rest):
    resp = rest.post("signInWithPassword", {"email": "bad", "password": "x"})
    assert resp.status_code == 400
    body = resp.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert err["code"] == 400
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["errors"], list) and err["errors"]
    assert err["errors"][0]["message"] == err["message"]
    assert err["errors"][0].get("reason") == "invalid"
    assert err["errors"][0].get("domain") == "global"


def test_no_api_key_is_forbidden(cfg):
    resp = requests.post(
        f"{cfg.url}/identitytoolkit.googleapis.com/v1/accounts:signUp",
        json={"returnSecureToken": True}, timeout=gc.HTTP_TIMEOUT,
    )
    gc.assert_error(resp, status=403)
    assert resp.json()["error"].get("status") == "PERMISSION_DENIED"
