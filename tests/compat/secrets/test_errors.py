"""Google's errors through the real client: the api-core class (picked from the HTTP status over
REST), the HTTP code and the rpc status in Google's JSON error body; and authentication.
"""

import json
import os
import time

import google.auth.exceptions
import google.auth.transport.requests
import google_crc32c
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.api_core import exceptions as gexc
from google.auth import crypt
from google.auth import jwt as ga_jwt
from google.auth.credentials import AnonymousCredentials
from google.oauth2 import credentials as oauth2_credentials
from google.oauth2 import service_account

import secrets_compat as sc

PARENT = f"projects/{sc.PROJECT}"


def one_version(admin_client, new_secret, prefix, data=b"value"):
    secret = new_secret(prefix)
    version = admin_client.add_secret_version(
        request={"parent": secret.name, "payload": {"data": data}})
    return secret, version


# ---------------------------------------------------------------- request errors

def test_wrong_data_crc32c_is_invalid_argument(admin_client, new_secret):
    secret = new_secret("badcrc")
    data = b"checksummed"
    wrong = (int(google_crc32c.value(data)) + 1) % 2**32
    sc.expect_error(
        gexc.BadRequest, 400, "INVALID_ARGUMENT", admin_client.add_secret_version,
        request={"parent": secret.name, "payload": {"data": data, "data_crc32c": wrong}},
    )
    assert list(admin_client.list_secret_versions(request={"parent": secret.name})) == [], (
        "a refused version must not be stored"
    )
    ok = admin_client.add_secret_version(request={"parent": secret.name, "payload": {
        "data": data, "data_crc32c": int(google_crc32c.value(data))}})
    assert ok.name.endswith("/versions/1"), "version numbers are not consumed by refused adds"
    assert ok.client_specified_payload_checksum is True


def test_creating_an_existing_secret_is_a_conflict(admin_client, new_secret):
    secret = new_secret("dup", labels={"original": "yes"})
    exc = sc.expect_error(
        gexc.Conflict, 409, "ALREADY_EXISTS", admin_client.create_secret, request={
            "parent": PARENT, "secret_id": secret.name.rsplit("/", 1)[1],
            "secret": {"replication": {"automatic": {}}},
        },
        message_contains="already exists",
    )
    # Over REST api-core raises Conflict for 409; AlreadyExists only comes from gRPC.
    assert type(exc) is gexc.Conflict
    kept = admin_client.get_secret(request={"name": secret.name})
    assert dict(kept.labels) == {"original": "yes"}, "the existing secret is untouched"


def test_missing_version_and_missing_secret_are_not_found(admin_client, new_secret):
    secret, _ = one_version(admin_client, new_secret, "missing")
    sc.expect_error(gexc.NotFound, 404, "NOT_FOUND", admin_client.access_secret_version,
                    request={"name": f"{secret.name}/versions/7"})
    sc.expect_error(gexc.NotFound, 404, "NOT_FOUND", admin_client.get_secret_version,
                    request={"name": f"{secret.name}/versions/7"})
    absent = f"{PARENT}/secrets/{sc.unique_id('absent')}"
    sc.expect_error(gexc.NotFound, 404, "NOT_FOUND", admin_client.access_secret_version,
                    request={"name": f"{absent}/versions/latest"})
    sc.expect_error(gexc.NotFound, 404, "NOT_FOUND", admin_client.get_secret,
                    request={"name": absent})
    sc.expect_error(gexc.NotFound, 404, "NOT_FOUND", admin_client.add_secret_version,
                    request={"parent": absent, "payload": {"data": b"x"}})


def test_secret_without_versions_has_no_latest(admin_client, new_secret):
    secret = new_secret("empty")
    sc.expect_error(gexc.NotFound, 404, "NOT_FOUND", admin_client.access_secret_version,
                    request={"name": f"{secret.name}/versions/latest"})


def test_payload_over_64_kib_is_invalid_argument(admin_client, new_secret):
    secret = new_secret("big")
    sc.expect_error(
        gexc.BadRequest, 400, "INVALID_ARGUMENT", admin_client.add_secret_version,
        request={"parent": secret.name, "payload": {"data": b"x" * (sc.MAX_PAYLOAD + 1)}},
    )
    data = os.urandom(sc.MAX_PAYLOAD)
    version = admin_client.add_secret_version(
        request={"parent": secret.name, "payload": {"data": data}})
    assert version.name.endswith("/versions/1")
    assert admin_client.access_secret_version(request={"name": version.name}).payload.data == data


@pytest.mark.parametrize(
    "secret_id", ["bad.id", "bad id", "x" * 256], ids=["dot", "space", "256-chars"])
def test_invalid_secret_id_is_invalid_argument(admin_client, secret_id):
    sc.expect_error(gexc.BadRequest, 400, "INVALID_ARGUMENT", admin_client.create_secret, request={
        "parent": PARENT, "secret_id": secret_id, "secret": {"replication": {"automatic": {}}},
    })


def test_secret_without_replication_is_invalid_argument(admin_client):
    sc.expect_error(gexc.BadRequest, 400, "INVALID_ARGUMENT", admin_client.create_secret, request={
        "parent": PARENT, "secret_id": sc.unique_id("norepl"), "secret": {},
    })


def test_invalid_label_key_is_invalid_argument(admin_client):
    """Secret.labels: keys must match [\\p{Ll}\\p{Lo}][\\p{Ll}\\p{Lo}\\p{N}_-]{0,62}."""
    secret_id = sc.unique_id("badlabel")
    sc.expect_error(gexc.BadRequest, 400, "INVALID_ARGUMENT", admin_client.create_secret, request={
        "parent": PARENT, "secret_id": secret_id,
        "secret": {"replication": {"automatic": {}}, "labels": {"Env": "dev"}},
    })


# ---------------------------------------------------------------- authentication

def test_no_credentials_is_unauthenticated(gh, admin_client, new_secret):
    secret, version = one_version(admin_client, new_secret, "anon")
    resp = gh.raw("GET", f"/v1/{version.name}:access")
    sc.assert_google_error(resp, 401, "UNAUTHENTICATED")
    assert resp.headers.get("WWW-Authenticate", "").startswith("Bearer"), resp.headers

    # The client with AnonymousCredentials sends no Authorization header; on the 401,
    # google-auth's AuthorizedSession tries to refresh the credentials, which anonymous
    # credentials cannot (a 403 or 404 would surface as Forbidden / NotFound instead).
    anon = sc.client_for(AnonymousCredentials(), gh.url)
    with pytest.raises(google.auth.exceptions.InvalidOperation):
        anon.access_secret_version(request={"name": version.name})


def test_missing_credentials_message(gh, admin_client, new_secret):
    """Google words a missing credential differently from an invalid one."""
    _, version = one_version(admin_client, new_secret, "nocred")
    resp = gh.raw("GET", f"/v1/{version.name}:access")
    err = sc.assert_google_error(resp, 401, "UNAUTHENTICATED")
    assert err["message"].startswith("Request is missing required authentication credential."), (
        err["message"])


@pytest.mark.parametrize("token", ["garbage", "ya29.not-a-real-token", "a.b.c"])
def test_garbage_bearer_token_is_unauthenticated(gh, admin_client, new_secret, token):
    secret, version = one_version(admin_client, new_secret, "garbage")
    sc.assert_google_error(gh.raw("GET", f"/v1/{version.name}:access", token=token),
                           401, "UNAUTHENTICATED")
    sc.assert_google_error(gh.raw("GET", f"/v1/{secret.name}", token=token),
                           401, "UNAUTHENTICATED")


def test_forged_key_file_is_unauthenticated(gh, admin, new_secret):
    """A key file for a real account, but with a private key Gatehouse never issued."""
    _, key_path, admin_client = admin
    secret, version = one_version(admin_client, new_secret, "forged")
    with open(key_path) as f:
        info = json.load(f)
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    for key_id in (info["private_key_id"], "0" * 40):
        forged = dict(info, private_key=pem, private_key_id=key_id)
        client = sc.client_for(
            service_account.Credentials.from_service_account_info(forged), gh.url)
        exc = sc.expect_error(gexc.Unauthorized, 401, "UNAUTHENTICATED",
                              client.access_secret_version, request={"name": version.name})
        assert "Request had invalid authentication credentials" in sc.error_body(exc)["message"]


def test_self_signed_jwt_for_another_service_is_unauthenticated(gh, admin, new_secret):
    """Self-signed JWTs are scoped to a service by `aud`; Secret Manager's is
    https://secretmanager.googleapis.com/ (what the GAPIC client sends)."""
    _, key_path, admin_client = admin
    _, version = one_version(admin_client, new_secret, "aud")
    with open(key_path) as f:
        info = json.load(f)
    signer = crypt.RSASigner.from_service_account_info(info)
    now = int(time.time())

    def token(**claims):
        payload = {"iss": info["client_email"], "sub": info["client_email"],
                   "iat": now, "exp": now + 3600, **claims}
        return ga_jwt.encode(signer, payload).decode()

    # Control: the right audience works.
    ok = gh.raw("GET", f"/v1/{version.name}:access",
                token=token(aud=sc.SECRET_MANAGER_AUDIENCE))
    assert ok.status_code == 200, ok.text[:300]
    for aud in ("https://iam.googleapis.com/", "https://vote-app-abc123-uc.a.run.app"):
        resp = gh.raw("GET", f"/v1/{version.name}:access", token=token(aud=aud))
        sc.assert_google_error(resp, 401, "UNAUTHENTICATED")
    expired = gh.raw("GET", f"/v1/{version.name}:access", token=token(
        aud=sc.SECRET_MANAGER_AUDIENCE, iat=now - 7200, exp=now - 3600))
    sc.assert_google_error(expired, 401, "UNAUTHENTICATED")


def test_id_token_is_not_an_access_token(gh, admin, new_secret):
    account, _, admin_client = admin
    _, version = one_version(admin_client, new_secret, "idtok")
    res = gh.run("iam", "--data-dir", gh.data_dir, "--public-url", gh.url, "print-id-token",
                 "--service-account", account.email, "--audience", sc.SECRET_MANAGER_AUDIENCE)
    assert res.returncode == 0, res.stderr[-1000:]
    id_token = res.stdout.decode().strip().splitlines()[-1]
    assert id_token.count(".") == 2, id_token[:80]
    sc.assert_google_error(gh.raw("GET", f"/v1/{version.name}:access", token=id_token),
                           401, "UNAUTHENTICATED")


def test_oauth_access_token_from_the_key_files_token_uri_works(gh, admin, new_secret):
    """The Cloud Run / metadata-server path: an OAuth access token, not a self-signed JWT."""
    _, key_path, admin_client = admin
    _, version = one_version(admin_client, new_secret, "oauth", data=b"via access token")
    sa = service_account.Credentials.from_service_account_file(key_path, scopes=[sc.CLOUD_PLATFORM])
    sa.refresh(google.auth.transport.requests.Request())
    assert sa.token
    client = sc.client_for(oauth2_credentials.Credentials(token=sa.token), gh.url)
    resp = client.access_secret_version(request={"name": version.name})
    assert resp.payload.data == b"via access token"
