"""The metadata server as google-auth finds and uses it (GCE / Cloud Run), and its wire rules.

google-auth runs in a child process (mds_probe.py) with GCE_METADATA_HOST / GCE_METADATA_IP
set to our metadata server; the ID tokens it fetched are verified here with google-auth's
verify_token against our certificate endpoints.
"""

import base64
import json

import jwt as pyjwt
import pytest
from google.auth import exceptions as ga_exceptions
from google.oauth2 import id_token

import iam_compat as ic

WRONG_AUDIENCE = "https://someone-else.example.com"


@pytest.fixture(scope="module")
def probe(gh):
    """google.auth.default(), refresh() and fetch_id_token() run once against our metadata server."""
    return gh.run_mds_probe([ic.AUDIENCE])


def ok(result):
    assert "ok" in result, f"google-auth step failed: {result.get('error')}: {result.get('message')}\n{result.get('traceback', '')}"
    return result["ok"]


# ---------------------------------------------------------------- google-auth on the metadata server

def test_default_finds_metadata_server_with_project(probe):
    d = ok(probe["default"])
    assert d["class"] == "google.auth.compute_engine.credentials.Credentials", d
    assert d["project_id"] == ic.PROJECT


def test_refresh_yields_token_for_the_metadata_account(gh, probe):
    r = ok(probe["refresh"])
    assert r["valid"] is True
    assert r["token"], r
    assert r["service_account_email"] == gh.mds_account.email


def test_metadata_access_token_works_on_iam_api(gh, probe):
    token = ok(probe["refresh"])["token"]
    project = f"projects/{ic.PROJECT}"
    # Authenticated but not yet allowed: deny by default.
    ic.assert_google_error(gh.list_accounts(token), 403, "PERMISSION_DENIED")
    body = ic.assert_ok(gh.test_permissions(token, project, ["iam.serviceAccounts.list"]))
    assert "permissions" not in body, body

    gh.add_binding(gh.mds_account.member, "roles/viewer")

    def listed():
        return ic.assert_ok(gh.list_accounts(token), "list with metadata token")

    body = ic.eventually(listed)
    emails = [a["email"] for a in body.get("accounts", [])]
    assert gh.mds_account.email in emails
    body = ic.assert_ok(
        gh.test_permissions(token, project, ["iam.serviceAccounts.list", "iam.serviceAccounts.create"])
    )
    assert body == {"permissions": ["iam.serviceAccounts.list"]}


def _fetched_id_token(probe, aud=ic.AUDIENCE):
    token = ok(probe["id_tokens"][aud])
    assert isinstance(token, str) and token.count(".") == 2, token
    return token


def _assert_mds_claims(gh, claims):
    assert claims["iss"] == "https://accounts.google.com"
    assert claims["aud"] == ic.AUDIENCE
    assert claims["email"] == gh.mds_account.email
    assert claims["email_verified"] is True
    assert claims["sub"] == gh.mds_account.unique_id
    assert claims["azp"] == gh.mds_account.unique_id
    assert claims["exp"] - claims["iat"] == 3600


def test_fetch_id_token_verifies_with_x509_certs(gh, probe, http_request):
    token = _fetched_id_token(probe)
    claims = id_token.verify_token(
        token, http_request, audience=ic.AUDIENCE, certs_url=gh.x509_certs_url()
    )
    _assert_mds_claims(gh, claims)
    header = ic.jwt_header(token)
    assert header["alg"] == "RS256" and header.get("kid"), header


def test_fetch_id_token_verifies_with_jwks(gh, probe, http_request):
    token = _fetched_id_token(probe)
    claims = id_token.verify_token(
        token, http_request, audience=ic.AUDIENCE, certs_url=gh.jwks_certs_url()
    )
    _assert_mds_claims(gh, claims)


def test_fetch_id_token_wrong_audience_is_rejected(gh, probe, http_request):
    token = _fetched_id_token(probe)
    with pytest.raises(ValueError, match="audience"):
        id_token.verify_token(
            token, http_request, audience=WRONG_AUDIENCE, certs_url=gh.x509_certs_url()
        )
    with pytest.raises(pyjwt.InvalidAudienceError):
        id_token.verify_token(
            token, http_request, audience=WRONG_AUDIENCE, certs_url=gh.jwks_certs_url()
        )


def test_tampered_id_token_is_rejected(gh, probe, http_request):
    token = _fetched_id_token(probe)
    h, p, s = token.split(".")
    forged_payload = dict(ic.jwt_payload(token), email="intruder@demo-proj.iam.gserviceaccount.com")
    p2 = base64.urlsafe_b64encode(json.dumps(forged_payload).encode()).rstrip(b"=").decode()
    with pytest.raises((ValueError, ga_exceptions.GoogleAuthError)):
        id_token.verify_token(
            f"{h}.{p2}.{s}", http_request, audience=ic.AUDIENCE, certs_url=gh.x509_certs_url()
        )


# ---------------------------------------------------------------- wire rules (plain requests)

def test_requests_without_metadata_flavor_are_forbidden(gh):
    path = "/computeMetadata/v1/project/project-id"
    refused = gh.mds_get(path, flavor=False)
    assert refused.status_code == 403, (refused.status_code, refused.text)
    assert refused.headers.get("Metadata-Flavor") == "Google"
    assert ic.PROJECT not in refused.text

    token = gh.mds_get("/computeMetadata/v1/instance/service-accounts/default/token", flavor=False)
    assert token.status_code == 403, (token.status_code, token.text)
    assert "access_token" not in token.text

    allowed = gh.mds_get(path)
    assert allowed.status_code == 200
    assert allowed.headers.get("Metadata-Flavor") == "Google"
    assert allowed.text == ic.PROJECT


def test_ping_root_answers_with_metadata_flavor(gh):
    # What google-auth's ping sends to GCE_METADATA_IP.
    resp = gh.mds_get("/")
    assert resp.status_code == 200
    assert resp.headers.get("Metadata-Flavor") == "Google"


def test_leaf_values_are_application_text(gh):
    for path, expected in [
        ("/computeMetadata/v1/project/project-id", ic.PROJECT),
        ("/computeMetadata/v1/instance/service-accounts/default/email", gh.mds_account.email),
        (f"/computeMetadata/v1/instance/service-accounts/{gh.mds_account.email}/email", gh.mds_account.email),
    ]:
        resp = gh.mds_get(path)
        assert resp.status_code == 200, (path, resp.status_code, resp.text)
        assert resp.headers.get("Content-Type") == "application/text", (path, resp.headers)
        assert resp.headers.get("Metadata-Flavor") == "Google"
        assert resp.text == expected
    number = gh.mds_get("/computeMetadata/v1/project/numeric-project-id")
    assert number.status_code == 200
    assert number.headers.get("Content-Type") == "application/text"
    assert number.text.isdigit(), number.text


def test_recursive_service_account_is_json_with_email(gh):
    resp = gh.mds_get(
        "/computeMetadata/v1/instance/service-accounts/default/", params={"recursive": "true"}
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers.get("Content-Type", "").split(";")[0] == "application/json"
    assert resp.headers.get("Metadata-Flavor") == "Google"
    body = resp.json()
    assert body["email"] == gh.mds_account.email
    assert ic.CLOUD_PLATFORM in body["scopes"]
    assert "default" in body["aliases"]


def test_token_endpoint_shape(gh):
    resp = gh.mds_get("/computeMetadata/v1/instance/service-accounts/default/token")
    assert resp.status_code == 200, resp.text
    assert resp.headers.get("Content-Type", "").split(";")[0] == "application/json"
    body = resp.json()
    assert body["token_type"] == "Bearer"
    assert isinstance(body["expires_in"], int) and 0 < body["expires_in"] <= 3600, body
    assert body["access_token"]


def test_identity_without_audience_is_400(gh):
    base = "/computeMetadata/v1/instance/service-accounts/default/identity"
    for params in ({}, {"audience": ""}, {"format": "full"}):
        resp = gh.mds_get(base, params=params)
        assert resp.status_code == 400, (params, resp.status_code, resp.text)
        assert resp.headers.get("Metadata-Flavor") == "Google"


def test_identity_returns_raw_jwt_as_text(gh, http_request):
    resp = gh.mds_get(
        "/computeMetadata/v1/instance/service-accounts/default/identity",
        params={"audience": ic.AUDIENCE, "format": "full"},
    )
    assert resp.status_code == 200, resp.text
    # google-auth json-decodes application/json bodies: a raw JWT must not be labelled so.
    assert resp.headers.get("Content-Type", "").split(";")[0] != "application/json"
    claims = id_token.verify_token(
        resp.text, http_request, audience=ic.AUDIENCE, certs_url=gh.x509_certs_url()
    )
    assert claims["email"] == gh.mds_account.email
