"""Revocation: disabling an account and deleting a key stop its credentials (tokens already
issued and key-file refreshes), seen through google-auth and the IAM API.
"""

import base64
import json

import pytest
from google.auth import exceptions as ga_exceptions
from google.auth import jwt as ga_jwt
from google.oauth2 import service_account

import iam_compat as ic


def self_signed(path, http_request):
    creds = ga_jwt.Credentials.from_service_account_file(path, audience=ic.IAM_API_AUDIENCE)
    creds.refresh(http_request)
    return creds.token.decode() if isinstance(creds.token, bytes) else creds.token


def listing_works(gh, token):
    return lambda: ic.assert_ok(gh.list_accounts(token), "list accounts")


def refused(gh, token):
    return lambda: ic.assert_google_error(gh.list_accounts(token), 401, "UNAUTHENTICATED")


def refresh_fails(key, http_request, id_token=False):
    """A check that a fresh google-auth refresh with `key` (a key file path or its parsed
    JSON) raises RefreshError; returns the error."""

    def check():
        if id_token:
            cls, kwargs = service_account.IDTokenCredentials, {"target_audience": ic.AUDIENCE}
        else:
            cls, kwargs = service_account.Credentials, {"scopes": [ic.CLOUD_PLATFORM]}
        if isinstance(key, dict):
            creds = cls.from_service_account_info(key, **kwargs)
        else:
            creds = cls.from_service_account_file(key, **kwargs)
        try:
            creds.refresh(http_request)
        except ga_exceptions.RefreshError as exc:
            return exc
        raise AssertionError("refresh with the key still works")

    return check


def test_disable_revokes_tokens_and_refresh_enable_restores(gh, keyed_account, http_request):
    account, path, _ = keyed_account("rv-disable")
    gh.add_binding(account.member, "roles/viewer")
    token = ic.access_token_for(path, http_request)
    jwt_token = self_signed(path, http_request)
    ic.eventually(listing_works(gh, token))
    ic.assert_ok(gh.list_accounts(jwt_token))

    gh.disable(account)
    ic.eventually(refused(gh, token))
    ic.eventually(refused(gh, jwt_token))
    exc = ic.eventually(refresh_fails(path, http_request))
    assert "invalid_grant" in str(exc), exc
    ic.eventually(refresh_fails(path, http_request, id_token=True))

    gh.enable(account)
    fresh = ic.eventually(
        lambda: ic.access_token_for(path, http_request), retry_on=ga_exceptions.RefreshError
    )
    ic.eventually(listing_works(gh, fresh))
    ic.assert_ok(gh.list_accounts(self_signed(path, http_request)))


def test_disable_and_enable_through_the_api(gh, keyed_account, http_request):
    admin, admin_path, _ = keyed_account("rv-admin")
    target, target_path, _ = keyed_account("rv-api-target")
    gh.add_binding(admin.member, "roles/iam.serviceAccountAdmin", resource=target.resource)
    gh.add_binding(target.member, "roles/viewer")
    admin_token = ic.access_token_for(admin_path, http_request)
    target_token = ic.access_token_for(target_path, http_request)
    ic.eventually(listing_works(gh, target_token))
    base = f"/v1/projects/{ic.PROJECT}/serviceAccounts/{target.email}"

    assert ic.eventually(lambda: ic.assert_ok(gh.post(base + ":disable", {}, admin_token))) == {}
    got = ic.assert_ok(gh.get(base, admin_token))
    assert got.get("disabled") is True, got
    ic.eventually(refused(gh, target_token))
    with pytest.raises(ga_exceptions.RefreshError):
        ic.access_token_for(target_path, http_request)

    assert ic.assert_ok(gh.post(base + ":enable", {}, admin_token)) == {}
    got = ic.assert_ok(gh.get(base, admin_token))
    assert not got.get("disabled"), got
    fresh = ic.eventually(
        lambda: ic.access_token_for(target_path, http_request),
        retry_on=ga_exceptions.RefreshError,
    )
    ic.eventually(listing_works(gh, fresh))


def test_cli_key_delete_revokes_that_key_only(gh, keyed_account, http_request):
    account, path1, key1 = keyed_account("rv-clikey")
    path2, key2 = gh.create_key_file(account)
    gh.add_binding(account.member, "roles/viewer")
    token1 = ic.access_token_for(path1, http_request)
    token2 = ic.access_token_for(path2, http_request)
    jwt1 = self_signed(path1, http_request)
    ic.eventually(listing_works(gh, token1))

    gh.delete_key(account, key1)
    exc = ic.eventually(refresh_fails(path1, http_request))
    assert "invalid_grant" in str(exc), exc
    ic.eventually(refresh_fails(path1, http_request, id_token=True))
    ic.eventually(refused(gh, token1))
    ic.eventually(refused(gh, jwt1))
    # The other key and its token still work.
    ic.assert_ok(gh.list_accounts(token2))
    ic.assert_ok(gh.list_accounts(ic.access_token_for(path2, http_request)))
    certs = ic.assert_ok(gh.get(f"/robot/v1/metadata/x509/{account.email}"))
    assert key1 not in certs and key2 in certs, certs.keys()


def test_api_key_delete_revokes_that_key(gh, keyed_account, http_request):
    account, admin_path, admin_key = keyed_account("rv-apikey")
    gh.add_binding(account.member, "roles/iam.serviceAccountKeyAdmin", resource=account.resource)
    gh.add_binding(account.member, "roles/viewer")
    admin_token = ic.access_token_for(admin_path, http_request)
    keys = f"/v1/projects/{ic.PROJECT}/serviceAccounts/{account.email}/keys"

    created = ic.eventually(lambda: ic.assert_ok(gh.post(keys, {}, admin_token), "create key"))
    key_id = created["name"].rsplit("/", 1)[-1]
    info = json.loads(base64.b64decode(created["privateKeyData"]))
    creds = service_account.Credentials.from_service_account_info(info, scopes=[ic.CLOUD_PLATFORM])
    creds.refresh(http_request)
    new_token = creds.token
    ic.eventually(listing_works(gh, new_token))

    assert ic.assert_ok(gh.request("DELETE", f"{keys}/{key_id}", token=admin_token)) == {}
    listed = ic.assert_ok(gh.get(keys, admin_token))
    assert key_id not in [k["name"].rsplit("/", 1)[-1] for k in listed["keys"]]
    assert admin_key in [k["name"].rsplit("/", 1)[-1] for k in listed["keys"]]

    exc = ic.eventually(refresh_fails(info, http_request))
    assert "invalid_grant" in str(exc), exc
    ic.eventually(refused(gh, new_token))
    ic.assert_ok(gh.list_accounts(admin_token))

    missing = gh.get(f"{keys}/{key_id}", admin_token)
    ic.assert_google_error(missing, 404, "NOT_FOUND")
