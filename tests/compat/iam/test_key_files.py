"""Key files issued by Gatehouse, used by google-auth unchanged: the JWT-bearer grant at the
key file's token_uri (access tokens and ID tokens), AuthorizedSession, and self-signed JWTs.
"""

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import load_pem_x509_certificate
from google.auth import exceptions as ga_exceptions
from google.auth import jwt as ga_jwt
from google.auth.transport.requests import AuthorizedSession
from google.oauth2 import id_token, service_account

import iam_compat as ic


def test_key_file_shape(gh, keyed_account):
    account, path, key_id = keyed_account("kf-shape")
    with open(path) as f:
        info = json.load(f)
    assert info["type"] == "service_account"
    assert info["project_id"] == ic.PROJECT
    assert info["private_key_id"] == key_id
    assert info["client_email"] == account.email
    assert info["client_id"] == account.unique_id
    assert info["token_uri"] == gh.url + "/token"
    assert info["private_key"].startswith("-----BEGIN PRIVATE KEY-----")
    # google-auth accepts it as is.
    creds = service_account.Credentials.from_service_account_info(info)
    assert creds.service_account_email == account.email
    assert creds.project_id == ic.PROJECT


def test_id_token_credentials_refresh_through_token_uri(gh, keyed_account, http_request):
    account, path, _ = keyed_account("kf-idtok")
    creds = service_account.IDTokenCredentials.from_service_account_file(
        path, target_audience=ic.AUDIENCE
    )
    creds.refresh(http_request)
    assert creds.token and creds.expiry
    for certs_url in (gh.x509_certs_url(), gh.jwks_certs_url()):
        claims = id_token.verify_token(
            creds.token, http_request, audience=ic.AUDIENCE, certs_url=certs_url
        )
        assert claims["iss"] == "https://accounts.google.com"
        assert claims["aud"] == ic.AUDIENCE
        assert claims["email"] == account.email
        assert claims["email_verified"] is True
        assert claims["sub"] == account.unique_id
        assert claims["exp"] - claims["iat"] == 3600
    with pytest.raises(ValueError, match="audience"):
        id_token.verify_token(
            creds.token, http_request, audience="https://other.example.com",
            certs_url=gh.x509_certs_url(),
        )


def test_id_token_from_token_endpoint_has_email_azp(gh, keyed_account, http_request):
    # Google's token endpoint (JWT-bearer grant with target_audience) puts the account's
    # email in azp; the metadata server and IAM generateIdToken put its unique id there
    # (google-auth-library-python #746 and #1258).
    account, path, _ = keyed_account("kf-azp")
    creds = service_account.IDTokenCredentials.from_service_account_file(
        path, target_audience=ic.AUDIENCE
    )
    creds.refresh(http_request)
    claims = ic.jwt_payload(creds.token)
    assert claims["azp"] == account.email, claims


def test_access_token_from_key_file_works_on_api(gh, keyed_account, http_request):
    account, path, _ = keyed_account("kf-access")
    creds = service_account.Credentials.from_service_account_file(path, scopes=[ic.CLOUD_PLATFORM])
    creds.refresh(http_request)
    assert creds.valid and creds.token and creds.expiry
    ic.assert_google_error(gh.list_accounts(creds.token), 403, "PERMISSION_DENIED")
    gh.add_binding(account.member, "roles/iam.serviceAccountAdmin")
    body = ic.eventually(lambda: ic.assert_ok(gh.list_accounts(creds.token)))
    assert account.email in [a["email"] for a in body["accounts"]]


def test_authorized_session_calls_api(gh, keyed_account):
    project = ic.unique_project("kf-sess")
    account, path, _ = keyed_account("kf-session", project=project)
    gh.add_binding(account.member, "roles/iam.serviceAccountAdmin", project=project)
    creds = service_account.Credentials.from_service_account_file(path, scopes=[ic.CLOUD_PLATFORM])
    session = AuthorizedSession(creds)
    base = f"{gh.url}/v1/projects/{project}/serviceAccounts"

    listing = ic.eventually(lambda: ic.assert_ok(session.get(base, timeout=ic.HTTP_TIMEOUT), "list"))
    assert [a["email"] for a in listing["accounts"]] == [account.email]
    me = listing["accounts"][0]
    assert me["name"] == f"projects/{project}/serviceAccounts/{account.email}"
    assert me["projectId"] == project
    assert me["uniqueId"] == account.unique_id
    assert me["oauth2ClientId"] == account.unique_id

    new_id = ic.unique_id("made-by-api")
    created = ic.assert_ok(
        session.post(
            base,
            json={"accountId": new_id, "serviceAccount": {"displayName": "Made by API"}},
            timeout=ic.HTTP_TIMEOUT,
        ),
        "create",
    )
    email = f"{new_id}@{project}.iam.gserviceaccount.com"
    assert created["email"] == email
    assert created["displayName"] == "Made by API"
    assert created["name"] == f"projects/{project}/serviceAccounts/{email}"
    got = ic.assert_ok(session.get(f"{base}/{email}", timeout=ic.HTTP_TIMEOUT), "get")
    assert got["uniqueId"] == created["uniqueId"]

    dup = session.post(base, json={"accountId": new_id}, timeout=ic.HTTP_TIMEOUT)
    ic.assert_google_error(dup, 409, "ALREADY_EXISTS")

    ic.assert_ok(session.delete(f"{base}/{email}", timeout=ic.HTTP_TIMEOUT), "delete")
    listing = ic.assert_ok(session.get(base, timeout=ic.HTTP_TIMEOUT), "list")
    assert email not in [a["email"] for a in listing.get("accounts", [])]


def test_self_signed_jwt_with_always_use_jwt_access(gh, keyed_account, http_request):
    account, path, _ = keyed_account("kf-selfjwt")
    gh.add_binding(account.member, "roles/viewer")
    creds = service_account.Credentials.from_service_account_file(path).with_always_use_jwt_access(True)
    creds._create_self_signed_jwt(ic.IAM_API_AUDIENCE)
    creds.refresh(http_request)  # no network: signs locally
    claims = ic.jwt_payload(creds.token)
    assert claims["aud"] == ic.IAM_API_AUDIENCE and claims["iss"] == account.email, claims
    body = ic.eventually(lambda: ic.assert_ok(gh.list_accounts(creds.token)))
    assert account.email in [a["email"] for a in body["accounts"]]

    # As GAPIC clients do it: AuthorizedSession with default_host makes the self-signed JWT.
    gapic = service_account.Credentials.from_service_account_file(
        path, always_use_jwt_access=True
    )
    session = AuthorizedSession(gapic, default_host="iam.googleapis.com")
    url = f"{gh.url}/v1/projects/{ic.PROJECT}/serviceAccounts"
    ic.assert_ok(session.get(url, timeout=ic.HTTP_TIMEOUT), "GAPIC-style session")
    assert ic.jwt_payload(gapic.token)["aud"] == ic.IAM_API_AUDIENCE

    # With user scopes the self-signed JWT carries `scope` instead of `aud`.
    scoped = service_account.Credentials.from_service_account_file(
        path, scopes=[ic.CLOUD_PLATFORM], always_use_jwt_access=True
    )
    scoped.refresh(http_request)
    claims = ic.jwt_payload(scoped.token)
    assert claims.get("scope") == ic.CLOUD_PLATFORM and "aud" not in claims, claims
    ic.assert_ok(gh.list_accounts(scoped.token), "scoped self-signed JWT")


def test_jwt_credentials_as_bearer(gh, keyed_account, http_request):
    account, path, _ = keyed_account("kf-jwtcred")
    gh.add_binding(account.member, "roles/viewer")
    creds = ga_jwt.Credentials.from_service_account_file(path, audience=ic.IAM_API_AUDIENCE)
    creds.refresh(http_request)
    token = creds.token.decode() if isinstance(creds.token, bytes) else creds.token
    ic.eventually(lambda: ic.assert_ok(gh.list_accounts(token)))
    # Through AuthorizedSession too (it applies the JWT as a bearer token).
    session = AuthorizedSession(creds)
    ic.assert_ok(
        session.get(f"{gh.url}/v1/projects/{ic.PROJECT}/serviceAccounts", timeout=ic.HTTP_TIMEOUT)
    )


def test_api_created_key_works_with_google_auth(gh, keyed_account, http_request):
    admin, admin_path, _ = keyed_account("kf-keyadm")
    target = gh.create_account("kf-target")
    gh.add_binding(admin.member, "roles/iam.serviceAccountKeyAdmin", resource=target.resource)
    token = ic.access_token_for(admin_path, http_request)
    keys_path = f"/v1/projects/{ic.PROJECT}/serviceAccounts/{target.email}/keys"

    resp = ic.eventually(lambda: ic.assert_ok(gh.post(keys_path, {}, token), "create key"))
    assert resp["privateKeyType"] == "TYPE_GOOGLE_CREDENTIALS_FILE"
    key_id = resp["name"].rsplit("/", 1)[-1]
    info = json.loads(base64.b64decode(resp["privateKeyData"]))
    assert info["private_key_id"] == key_id
    assert info["client_email"] == target.email

    listed = ic.assert_ok(gh.get(keys_path, token), "list keys")
    assert key_id in [k["name"].rsplit("/", 1)[-1] for k in listed["keys"]]

    creds = service_account.IDTokenCredentials.from_service_account_info(
        info, target_audience=ic.AUDIENCE
    )
    creds.refresh(http_request)
    claims = id_token.verify_token(
        creds.token, http_request, audience=ic.AUDIENCE, certs_url=gh.x509_certs_url()
    )
    assert claims["email"] == target.email


def test_account_public_keys_match_key_file(gh, keyed_account):
    account, path, key_id = keyed_account("kf-pubkey")
    with open(path) as f:
        info = json.load(f)
    private = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
    message = b"gatehouse key check"
    sig = private.sign(message, padding.PKCS1v15(), hashes.SHA256())

    x509 = ic.assert_ok(gh.get(f"/robot/v1/metadata/x509/{account.email}"))
    assert key_id in x509, x509.keys()
    cert = load_pem_x509_certificate(x509[key_id].encode())
    cert.public_key().verify(sig, message, padding.PKCS1v15(), hashes.SHA256())

    jwks = ic.assert_ok(gh.get(f"/service_accounts/v1/metadata/jwk/{account.email}"))
    assert key_id in [k["kid"] for k in jwks["keys"]]


def test_refresh_with_wrong_private_key_is_invalid_grant(gh, keyed_account, http_request):
    account, path, _ = keyed_account("kf-forged")
    with open(path) as f:
        info = json.load(f)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    info["private_key"] = other.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    creds = service_account.Credentials.from_service_account_info(info, scopes=[ic.CLOUD_PLATFORM])
    with pytest.raises(ga_exceptions.RefreshError, match="invalid_grant"):
        creds.refresh(http_request)
    # And the same forged key cannot self-sign its way in.
    jwt_creds = ga_jwt.Credentials.from_service_account_info(info, audience=ic.IAM_API_AUDIENCE)
    jwt_creds.refresh(http_request)
    token = jwt_creds.token.decode() if isinstance(jwt_creds.token, bytes) else jwt_creds.token
    ic.assert_google_error(gh.list_accounts(token), 401, "UNAUTHENTICATED")


def test_api_refuses_missing_and_bad_credentials(gh, keyed_account, http_request):
    account, path, _ = keyed_account("kf-badcred")
    ic.assert_google_error(gh.list_accounts(None), 401, "UNAUTHENTICATED")
    ic.assert_google_error(gh.list_accounts("not-a-token"), 401, "UNAUTHENTICATED")
    ic.assert_google_error(gh.list_accounts("ya29.garbage"), 401, "UNAUTHENTICATED")
    # An ID token is not an API credential.
    creds = service_account.IDTokenCredentials.from_service_account_file(
        path, target_audience=ic.IAM_API_AUDIENCE
    )
    creds.refresh(http_request)
    gh.add_binding(account.member, "roles/viewer")
    ic.assert_google_error(gh.list_accounts(creds.token), 401, "UNAUTHENTICATED")
