"""IAM Credentials (generateIdToken, generateAccessToken, signBlob, signJwt) on the same server:
callers need roles/iam.serviceAccountTokenCreator on the target; results verify with the
published keys (google-auth and `cryptography`).
"""

import base64
import datetime
import json
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509 import load_pem_x509_certificate
from google.auth import exceptions as ga_exceptions
from google.auth import impersonated_credentials
from google.auth import jwt as ga_jwt
from google.oauth2 import id_token, service_account

import iam_compat as ic

TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"


@pytest.fixture
def caller_and_target(gh, keyed_account, http_request):
    """A caller (with a key file and access token) and a target account, no roles yet."""
    caller, caller_path, _ = keyed_account("ic-caller")
    target = gh.create_account("ic-target")
    token = ic.access_token_for(caller_path, http_request)
    return caller, caller_path, token, target


def verb_path(target, verb):
    return f"/v1/projects/-/serviceAccounts/{target.email}:{verb}"


def grant_token_creator(gh, caller, target):
    gh.add_binding(caller.member, TOKEN_CREATOR, resource=target.resource)


def call_when_granted(gh, target, verb, body, token):
    """POSTs the verb, polling while the grant made with the CLI reaches the server."""
    return ic.eventually(lambda: ic.assert_ok(gh.post(verb_path(target, verb), body, token), verb))


def test_generate_id_token_needs_token_creator(gh, caller_and_target, http_request):
    caller, _, token, target = caller_and_target
    body = {"audience": ic.AUDIENCE, "includeEmail": True}
    ic.assert_google_error(
        gh.post(verb_path(target, "generateIdToken"), body, token), 403, "PERMISSION_DENIED"
    )
    ic.assert_google_error(
        gh.post(verb_path(target, "generateIdToken"), body, None), 401, "UNAUTHENTICATED"
    )

    grant_token_creator(gh, caller, target)
    resp = call_when_granted(gh, target, "generateIdToken", body, token)
    for certs_url in (gh.x509_certs_url(), gh.jwks_certs_url()):
        claims = id_token.verify_token(
            resp["token"], http_request, audience=ic.AUDIENCE, certs_url=certs_url
        )
        assert claims["iss"] == "https://accounts.google.com"
        assert claims["aud"] == ic.AUDIENCE
        assert claims["email"] == target.email
        assert claims["email_verified"] is True
        assert claims["sub"] == target.unique_id
        assert claims["azp"] == target.unique_id
        assert claims["exp"] - claims["iat"] == 3600

    # Without includeEmail the token carries no email.
    plain = ic.assert_ok(gh.post(verb_path(target, "generateIdToken"), {"audience": ic.AUDIENCE}, token))
    claims = id_token.verify_token(
        plain["token"], http_request, audience=ic.AUDIENCE, certs_url=gh.x509_certs_url()
    )
    assert "email" not in claims and claims["sub"] == target.unique_id

    # The grant is on the target only: another account stays out of reach.
    other = gh.create_account("ic-other")
    ic.assert_google_error(
        gh.post(verb_path(other, "generateIdToken"), body, token), 403, "PERMISSION_DENIED"
    )


def _published_cert(gh, target, key_id):
    certs = ic.assert_ok(gh.get(f"/robot/v1/metadata/x509/{target.email}"))
    assert key_id in certs, (key_id, list(certs))
    return certs, load_pem_x509_certificate(certs[key_id].encode())


def test_sign_blob_verifies_with_published_x509(gh, caller_and_target):
    caller, _, token, target = caller_and_target
    blob = b"\x00gatehouse signBlob \xff" + bytes(range(32))
    ic.assert_google_error(
        gh.post(verb_path(target, "signBlob"), {"payload": base64.b64encode(blob).decode()}, token),
        403,
        "PERMISSION_DENIED",
    )
    grant_token_creator(gh, caller, target)
    resp = call_when_granted(
        gh, target, "signBlob", {"payload": base64.b64encode(blob).decode()}, token
    )
    key_id, signature = resp["keyId"], base64.b64decode(resp["signedBlob"])
    _, cert = _published_cert(gh, target, key_id)
    cert.public_key().verify(signature, blob, padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(Exception):
        cert.public_key().verify(signature, blob + b"x", padding.PKCS1v15(), hashes.SHA256())
    jwks = ic.assert_ok(gh.get(f"/service_accounts/v1/metadata/jwk/{target.email}"))
    assert key_id in [k["kid"] for k in jwks["keys"]]


def test_sign_jwt_verifies_with_published_x509(gh, caller_and_target):
    caller, _, token, target = caller_and_target
    now = int(time.time())
    claims = {
        "iss": target.email,
        "sub": target.email,
        "aud": "https://example.com/api",
        "iat": now,
        "exp": now + 600,
        "custom": {"n": 1},
    }
    body = {"payload": json.dumps(claims)}
    ic.assert_google_error(gh.post(verb_path(target, "signJwt"), body, token), 403, "PERMISSION_DENIED")
    grant_token_creator(gh, caller, target)
    resp = call_when_granted(gh, target, "signJwt", body, token)
    signed, key_id = resp["signedJwt"], resp["keyId"]
    header = ic.jwt_header(signed)
    assert header["alg"] == "RS256" and header["kid"] == key_id, header
    certs, _ = _published_cert(gh, target, key_id)
    decoded = ga_jwt.decode(signed, certs=certs, audience="https://example.com/api")
    assert decoded == claims


def test_generate_access_token(gh, caller_and_target, http_request):
    caller, caller_path, token, target = caller_and_target
    body = {"scope": [ic.CLOUD_PLATFORM], "lifetime": "600s"}
    ic.assert_google_error(
        gh.post(verb_path(target, "generateAccessToken"), body, token), 403, "PERMISSION_DENIED"
    )
    grant_token_creator(gh, caller, target)
    gh.add_binding(target.member, "roles/viewer")
    before = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    resp = call_when_granted(gh, target, "generateAccessToken", body, token)
    expire = datetime.datetime.strptime(resp["expireTime"], "%Y-%m-%dT%H:%M:%SZ")
    lifetime = (expire - before).total_seconds()
    assert 590 <= lifetime <= 620, (resp["expireTime"], before)

    # The token acts as the target.
    listing = ic.eventually(lambda: ic.assert_ok(gh.list_accounts(resp["accessToken"])))
    assert target.email in [a["email"] for a in listing["accounts"]]
    granted = ic.assert_ok(
        gh.test_permissions(resp["accessToken"], f"projects/{ic.PROJECT}", ["iam.serviceAccounts.list"])
    )
    assert granted == {"permissions": ["iam.serviceAccounts.list"]}


def test_impersonated_credentials_generate_access_token(gh, caller_and_target, http_request):
    caller, caller_path, _, target = caller_and_target
    source = service_account.Credentials.from_service_account_file(
        caller_path, scopes=[ic.CLOUD_PLATFORM]
    )
    endpoint = f"{gh.url}{verb_path(target, 'generateAccessToken')}"

    def impersonate():
        return impersonated_credentials.Credentials(
            source_credentials=source,
            target_principal=target.email,
            target_scopes=[ic.CLOUD_PLATFORM],
            lifetime=600,
            iam_endpoint_override=endpoint,
        )

    with pytest.raises(ga_exceptions.RefreshError):
        impersonate().refresh(http_request)

    grant_token_creator(gh, caller, target)
    gh.add_binding(target.member, "roles/viewer")

    def refreshed():
        creds = impersonate()
        creds.refresh(http_request)
        return creds

    creds = ic.eventually(refreshed, retry_on=ga_exceptions.RefreshError)
    assert creds.valid and creds.token
    remaining = (creds.expiry - datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)).total_seconds()
    assert 540 <= remaining <= 620, creds.expiry
    ic.eventually(lambda: ic.assert_ok(gh.list_accounts(creds.token)))
