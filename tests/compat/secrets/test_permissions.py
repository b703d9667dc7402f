"""IAM on Secret Manager: callers without a role get 403 (api-core over REST: Forbidden, chosen
from the HTTP status — not PermissionDenied, which is what the gRPC transport raises), and
roles/secretmanager.secretAccessor granted on the secret or on the project allows access only.
"""

from google.api_core import exceptions as gexc

import secrets_compat as sc

PARENT = f"projects/{sc.PROJECT}"


def forbidden(fn, permission, **kwargs):
    exc = sc.expect_error(gexc.Forbidden, 403, "PERMISSION_DENIED", fn, **kwargs)
    message = sc.error_body(exc)["message"]
    # Google: "Permission 'secretmanager.versions.access' denied for resource '...' (or it may
    # not exist)."
    assert f"Permission '{permission}' denied" in message, message
    return exc


def with_version(admin_client, new_secret, prefix, data=b"s3cr3t"):
    secret = new_secret(prefix)
    version = admin_client.add_secret_version(
        request={"parent": secret.name, "payload": {"data": data}})
    return secret, version


def test_caller_without_a_role_is_forbidden(admin_client, new_secret, keyed_account):
    secret, version = with_version(admin_client, new_secret, "noperm")
    _, _, client = keyed_account("sm-nobody")

    exc = forbidden(client.access_secret_version, "secretmanager.versions.access",
                    request={"name": f"{secret.name}/versions/latest"})
    assert type(exc) is gexc.Forbidden, "over REST api-core raises Forbidden for HTTP 403"
    forbidden(client.access_secret_version, "secretmanager.versions.access",
              request={"name": version.name})
    forbidden(client.create_secret, "secretmanager.secrets.create", request={
        "parent": PARENT, "secret_id": sc.unique_id("denied"),
        "secret": {"replication": {"automatic": {}}},
    })
    forbidden(client.add_secret_version, "secretmanager.versions.add",
              request={"parent": secret.name, "payload": {"data": b"x"}})
    forbidden(client.get_secret, "secretmanager.secrets.get", request={"name": secret.name})
    forbidden(lambda **kw: list(client.list_secrets(**kw)), "secretmanager.secrets.list",
              request={"parent": PARENT})
    forbidden(client.get_iam_policy, "secretmanager.secrets.getIamPolicy",
              request={"resource": secret.name})
    # Nothing was created by the refused calls.
    names = [v.name for v in admin_client.list_secret_versions(request={"parent": secret.name})]
    assert names == [version.name]


def test_missing_secret_is_403_not_404_without_permission(keyed_account):
    """Google hides whether a secret exists from callers who may not see it."""
    _, _, client = keyed_account("sm-prober")
    forbidden(client.access_secret_version, "secretmanager.versions.access",
              request={"name": f"{PARENT}/secrets/{sc.unique_id('absent')}/versions/latest"})
    forbidden(client.get_secret, "secretmanager.secrets.get",
              request={"name": f"{PARENT}/secrets/{sc.unique_id('absent')}"})


def test_test_iam_permissions_returns_the_granted_subset(admin_client, new_secret, keyed_account):
    secret, _ = with_version(admin_client, new_secret, "tip")
    reader, _, client = keyed_account("sm-tip")
    perms = ["secretmanager.versions.access", "secretmanager.versions.add",
             "secretmanager.secrets.get"]
    # No NOT_FOUND / PERMISSION_DENIED: the answer is just the granted subset.
    none = client.test_iam_permissions(request={"resource": secret.name, "permissions": perms})
    assert list(none.permissions) == []

    policy = admin_client.get_iam_policy(request={"resource": secret.name})
    policy.bindings.add(role=sc.ACCESSOR, members=[reader.member])
    admin_client.set_iam_policy(request={"resource": secret.name, "policy": policy})

    def granted():
        got = client.test_iam_permissions(request={"resource": secret.name, "permissions": perms})
        assert list(got.permissions) == ["secretmanager.versions.access"], got
    sc.eventually(granted)


def test_secret_level_accessor_via_set_iam_policy(admin_client, new_secret, keyed_account):
    secret, version = with_version(admin_client, new_secret, "acc-api", data=b"for the reader")
    other, _ = with_version(admin_client, new_secret, "acc-other")
    reader, _, client = keyed_account("sm-reader")

    policy = admin_client.get_iam_policy(request={"resource": secret.name})
    policy.bindings.add(role=sc.ACCESSOR, members=[reader.member])
    admin_client.set_iam_policy(request={"resource": secret.name, "policy": policy})

    def can_access():
        try:
            resp = client.access_secret_version(request={"name": f"{secret.name}/versions/latest"})
        except gexc.Forbidden as exc:
            raise AssertionError(f"still forbidden: {exc}") from exc
        return resp
    resp = sc.eventually(can_access)
    assert resp.payload.data == b"for the reader"
    assert resp.name == version.name
    assert client.access_secret_version(request={"name": version.name}).payload.data == (
        b"for the reader")

    # secretAccessor is access only: no versions.add / destroy / disable, no secrets.get,
    # and nothing on other secrets.
    forbidden(client.add_secret_version, "secretmanager.versions.add",
              request={"parent": secret.name, "payload": {"data": b"x"}})
    forbidden(client.destroy_secret_version, "secretmanager.versions.destroy",
              request={"name": version.name})
    forbidden(client.disable_secret_version, "secretmanager.versions.disable",
              request={"name": version.name})
    forbidden(client.get_secret, "secretmanager.secrets.get", request={"name": secret.name})
    forbidden(client.access_secret_version, "secretmanager.versions.access",
              request={"name": f"{other.name}/versions/latest"})
    assert admin_client.get_secret_version(request={"name": version.name}).state == sc.State.ENABLED
    # Nor may it change the policy; Google names the method's own permission.
    forbidden(client.set_iam_policy, "secretmanager.secrets.setIamPolicy",
              request={"resource": secret.name, "policy": policy})


def test_secret_level_accessor_via_cli_and_revocation(gh, admin_client, new_secret, keyed_account):
    secret, version = with_version(admin_client, new_secret, "acc-cli", data=b"cli granted")
    reader, _, client = keyed_account("sm-clireader")
    resource = f"{PARENT}/secrets/{secret.name.rsplit('/', 1)[1]}"
    gh.add_binding(reader.member, sc.ACCESSOR, resource=resource)

    def can_access():
        try:
            return client.access_secret_version(request={"name": version.name})
        except gexc.Forbidden as exc:
            raise AssertionError(f"still forbidden: {exc}") from exc
    assert sc.eventually(can_access).payload.data == b"cli granted"

    # The CLI's binding is visible through the API's getIamPolicy.
    policy = admin_client.get_iam_policy(request={"resource": secret.name})
    assert any(
        b.role == sc.ACCESSOR and reader.member in b.members for b in policy.bindings), policy

    forbidden(client.add_secret_version, "secretmanager.versions.add",
              request={"parent": secret.name, "payload": {"data": b"x"}})
    forbidden(client.destroy_secret_version, "secretmanager.versions.destroy",
              request={"name": version.name})

    gh.remove_binding(reader.member, sc.ACCESSOR, resource=resource)

    def revoked():
        forbidden(client.access_secret_version, "secretmanager.versions.access",
                  request={"name": version.name})
    sc.eventually(revoked)


def test_project_level_accessor_binding(gh, admin_client, new_secret, keyed_account):
    first, v_first = with_version(admin_client, new_secret, "proj-a", data=b"A")
    second, v_second = with_version(admin_client, new_secret, "proj-b", data=b"B")
    reader, _, client = keyed_account("sm-projreader")
    gh.add_binding(reader.member, sc.ACCESSOR, project=sc.PROJECT)
    try:
        def can_access():
            try:
                return client.access_secret_version(
                    request={"name": f"{first.name}/versions/latest"})
            except gexc.Forbidden as exc:
                raise AssertionError(f"still forbidden: {exc}") from exc
        assert sc.eventually(can_access).payload.data == b"A"
        # A project-level grant covers every secret of the project.
        assert client.access_secret_version(request={"name": v_second.name}).payload.data == b"B"

        forbidden(client.add_secret_version, "secretmanager.versions.add",
                  request={"parent": second.name, "payload": {"data": b"x"}})
        forbidden(client.destroy_secret_version, "secretmanager.versions.destroy",
                  request={"name": v_first.name})
        forbidden(client.create_secret, "secretmanager.secrets.create", request={
            "parent": PARENT, "secret_id": sc.unique_id("denied"),
            "secret": {"replication": {"automatic": {}}},
        })
    finally:
        gh.remove_binding(reader.member, sc.ACCESSOR, project=sc.PROJECT)

    def revoked():
        forbidden(client.access_secret_version, "secretmanager.versions.access",
                  request={"name": v_first.name})
    sc.eventually(revoked)


def test_secret_level_viewer_reads_metadata_only(gh, admin_client, new_secret, keyed_account):
    secret, version = with_version(admin_client, new_secret, "viewer")
    viewer, _, client = keyed_account("sm-viewer")
    gh.add_binding(viewer.member, "roles/secretmanager.viewer",
                   resource=f"{PARENT}/secrets/{secret.name.rsplit('/', 1)[1]}")

    def can_get():
        try:
            return client.get_secret(request={"name": secret.name})
        except gexc.Forbidden as exc:
            raise AssertionError(f"still forbidden: {exc}") from exc
    assert sc.eventually(can_get).name == secret.name
    assert client.get_secret_version(request={"name": version.name}).state == sc.State.ENABLED
    assert [v.name for v in client.list_secret_versions(request={"parent": secret.name})] == [
        version.name]
    policy = client.get_iam_policy(request={"resource": secret.name})
    assert any(viewer.member in b.members for b in policy.bindings), policy

    # The viewer may not read payloads, add versions or change the policy.
    forbidden(client.access_secret_version, "secretmanager.versions.access",
              request={"name": version.name})
    forbidden(client.add_secret_version, "secretmanager.versions.add",
              request={"parent": secret.name, "payload": {"data": b"x"}})
    forbidden(client.set_iam_policy, "secretmanager.secrets.setIamPolicy",
              request={"resource": secret.name, "policy": policy})


def test_permission_denied_carries_error_info(admin_client, new_secret, keyed_account):
    """Google's 403s carry a google.rpc.ErrorInfo detail (reason IAM_PERMISSION_DENIED, the
    permission in metadata); api-core exposes it as exc.reason / exc.metadata."""
    secret, _ = with_version(admin_client, new_secret, "errinfo")
    _, _, client = keyed_account("sm-errinfo")
    exc = forbidden(client.access_secret_version, "secretmanager.versions.access",
                    request={"name": f"{secret.name}/versions/latest"})
    details = sc.error_body(exc).get("details")
    assert exc.reason == "IAM_PERMISSION_DENIED", (
        f"403 body has no google.rpc.ErrorInfo with reason IAM_PERMISSION_DENIED; "
        f"details={details!r}"
    )
    assert (exc.metadata or {}).get("permission") == "secretmanager.versions.access", exc.metadata
