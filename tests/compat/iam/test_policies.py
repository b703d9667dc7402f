"""IAM policies over HTTP with real tokens: deny by default, read-modify-write with etags,
stale etags, revocation, public members and unknown roles. Each test uses its own project.
"""

import copy

import pytest
from google.auth.transport.requests import AuthorizedSession
from google.oauth2 import service_account

import iam_compat as ic

ADMIN_ROLE = "roles/iam.serviceAccountAdmin"
LIST = "iam.serviceAccounts.list"
CREATE = "iam.serviceAccounts.create"


class Owner:
    """A project owner's AuthorizedSession (google-auth) on the policy methods."""

    def __init__(self, gh, project, key_path):
        creds = service_account.Credentials.from_service_account_file(
            key_path, scopes=[ic.CLOUD_PLATFORM]
        )
        self.session = AuthorizedSession(creds)
        self.gh = gh
        self.project = project

    def call(self, resource, verb, body):
        return self.session.post(
            f"{self.gh.url}/v1/{resource}:{verb}", json=body, timeout=ic.HTTP_TIMEOUT
        )

    def get_policy(self, resource=None, body=None):
        resource = resource or f"projects/{self.project}"
        return ic.assert_ok(self.call(resource, "getIamPolicy", body or {}), "getIamPolicy")

    def set_policy(self, policy, resource=None):
        resource = resource or f"projects/{self.project}"
        return self.call(resource, "setIamPolicy", {"policy": policy})


def with_member(policy, role, member):
    p = copy.deepcopy(policy)
    bindings = p.setdefault("bindings", [])
    for b in bindings:
        if b["role"] == role:
            if member not in b["members"]:
                b["members"].append(member)
            return p
    bindings.append({"role": role, "members": [member]})
    return p


def without_member(policy, role, member):
    p = copy.deepcopy(policy)
    bindings = []
    for b in p.get("bindings", []):
        if b["role"] == role:
            b["members"] = [m for m in b["members"] if m != member]
        if b["members"]:
            bindings.append(b)
    p["bindings"] = bindings
    return p


def members_of(policy, role):
    return sorted(m for b in policy.get("bindings", []) if b["role"] == role for m in b["members"])


@pytest.fixture
def project_setup(gh, keyed_account, http_request):
    """A fresh project with an owner (granted with the CLI) and a subject with no roles."""
    project = ic.unique_project()
    owner, owner_path, _ = keyed_account("owner", project=project)
    gh.add_binding(owner.member, "roles/owner", project=project)
    subject, subject_path, _ = keyed_account("subject", project=project)
    subject_token = ic.access_token_for(subject_path, http_request)
    return project, Owner(gh, project, owner_path), owner, subject, subject_token


def test_deny_grant_with_etag_then_revoke(gh, project_setup):
    project, owner, owner_account, subject, token = project_setup
    resource = f"projects/{project}"

    # Deny by default.
    ic.assert_google_error(gh.list_accounts(token, project), 403, "PERMISSION_DENIED")
    body = ic.assert_ok(gh.test_permissions(token, resource, [LIST, CREATE]))
    assert "permissions" not in body, body

    # Grant: read-modify-write with the etag just read.
    current = ic.eventually(owner.get_policy)
    assert members_of(current, "roles/owner") == [owner_account.member], current
    assert current.get("etag"), current
    granted = ic.assert_ok(
        owner.set_policy(with_member(current, ADMIN_ROLE, subject.member)), "setIamPolicy"
    )
    assert members_of(granted, ADMIN_ROLE) == [subject.member]
    assert members_of(granted, "roles/owner") == [owner_account.member]
    assert granted["etag"] and granted["etag"] != current["etag"]
    assert owner.get_policy()["etag"] == granted["etag"]

    listing = ic.eventually(lambda: ic.assert_ok(gh.list_accounts(token, project), "list"))
    assert sorted(a["email"] for a in listing["accounts"]) == sorted(
        [owner_account.email, subject.email]
    )
    body = ic.assert_ok(gh.test_permissions(token, resource, [LIST, CREATE, "iam.serviceAccounts.signBlob"]))
    assert sorted(body["permissions"]) == sorted([LIST, CREATE])

    # Revoke: read-modify-write again.
    current = owner.get_policy()
    revoked = ic.assert_ok(
        owner.set_policy(without_member(current, ADMIN_ROLE, subject.member)), "setIamPolicy"
    )
    assert members_of(revoked, ADMIN_ROLE) == []
    assert members_of(revoked, "roles/owner") == [owner_account.member]
    ic.eventually(
        lambda: ic.assert_google_error(gh.list_accounts(token, project), 403, "PERMISSION_DENIED")
    )
    body = ic.assert_ok(gh.test_permissions(token, resource, [LIST, CREATE]))
    assert "permissions" not in body, body


def test_stale_etag_is_aborted(gh, project_setup):
    project, owner, owner_account, subject, token = project_setup
    first = ic.eventually(owner.get_policy)
    second = ic.assert_ok(
        owner.set_policy(with_member(first, "roles/viewer", subject.member)), "setIamPolicy"
    )
    # A writer that read before the change loses.
    stale = owner.set_policy(with_member(first, ADMIN_ROLE, subject.member))
    ic.assert_google_error(stale, 409, "ABORTED")
    now = owner.get_policy()
    assert now["etag"] == second["etag"]
    assert members_of(now, ADMIN_ROLE) == []
    assert members_of(now, "roles/viewer") == [subject.member]


def test_get_iam_policy_with_requested_version_3(gh, project_setup):
    project, owner, owner_account, _, _ = project_setup
    policy = ic.eventually(
        lambda: owner.get_policy(body={"options": {"requestedPolicyVersion": 3}})
    )
    assert policy.get("version") in (1, 3), policy
    assert policy.get("etag"), policy
    assert members_of(policy, "roles/owner") == [owner_account.member]


def test_set_iam_policy_needs_permission(gh, project_setup):
    project, owner, _, subject, token = project_setup
    current = ic.eventually(owner.get_policy)
    resource = f"projects/{project}"
    ic.assert_google_error(
        gh.post(f"/v1/{resource}:getIamPolicy", {}, token), 403, "PERMISSION_DENIED"
    )
    attempt = gh.post(
        f"/v1/{resource}:setIamPolicy",
        {"policy": with_member(current, "roles/owner", subject.member)},
        token,
    )
    ic.assert_google_error(attempt, 403, "PERMISSION_DENIED")
    ic.assert_google_error(
        gh.post(f"/v1/{resource}:getIamPolicy", {}, None), 401, "UNAUTHENTICATED"
    )
    assert owner.get_policy()["etag"] == current["etag"]


def test_unknown_role_is_invalid_argument(gh, project_setup):
    project, owner, _, subject, _ = project_setup
    current = ic.eventually(owner.get_policy)
    resp = owner.set_policy(with_member(current, "roles/doesNotExist", subject.member))
    ic.assert_google_error(resp, 400, "INVALID_ARGUMENT")
    assert owner.get_policy()["etag"] == current["etag"]


def test_public_members_accepted_on_service_account_policy(gh, project_setup, keyed_account, http_request):
    project, owner, _, subject, _ = project_setup
    target = gh.create_account("pub-target", project=project)
    caller, caller_path, _ = keyed_account("pub-caller", project=project)
    caller_token = ic.access_token_for(caller_path, http_request)
    gen = f"/v1/projects/-/serviceAccounts/{target.email}:generateIdToken"
    ic.assert_google_error(
        gh.post(gen, {"audience": ic.AUDIENCE}, caller_token), 403, "PERMISSION_DENIED"
    )

    current = ic.eventually(lambda: owner.get_policy(resource=target.resource))
    wanted = with_member(current, "roles/iam.serviceAccountTokenCreator", "allAuthenticatedUsers")
    wanted = with_member(wanted, "roles/iam.serviceAccountOpenIdTokenCreator", "allUsers")
    saved = ic.assert_ok(owner.set_policy(wanted, resource=target.resource), "setIamPolicy")
    assert members_of(saved, "roles/iam.serviceAccountTokenCreator") == ["allAuthenticatedUsers"]
    assert members_of(saved, "roles/iam.serviceAccountOpenIdTokenCreator") == ["allUsers"]
    got = owner.get_policy(resource=target.resource)
    assert members_of(got, "roles/iam.serviceAccountTokenCreator") == ["allAuthenticatedUsers"]

    # Any authenticated caller now holds the role on the target.
    resp = ic.eventually(
        lambda: ic.assert_ok(gh.post(gen, {"audience": ic.AUDIENCE}, caller_token), "generateIdToken")
    )
    assert ic.jwt_payload(resp["token"])["sub"] == target.unique_id


def test_public_members_refused_on_project_policy(gh, project_setup):
    # Resource Manager's projects.setIamPolicy: "Project does not support allUsers and
    # allAuthenticatedUsers as members in a Binding of a Policy" (400 INVALID_ARGUMENT).
    project, owner, _, _, _ = project_setup
    current = ic.eventually(owner.get_policy)
    for member in ("allUsers", "allAuthenticatedUsers"):
        resp = owner.set_policy(with_member(current, "roles/viewer", member))
        ic.assert_google_error(resp, 400, "INVALID_ARGUMENT")
    assert owner.get_policy()["etag"] == current["etag"]
