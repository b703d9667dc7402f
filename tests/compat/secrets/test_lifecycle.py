"""A secret's life through the real client (REST), as an account holding
roles/secretmanager.admin on the project uses it with a key file Gatehouse issued.
"""

import base64
import re

import google_crc32c
import pytest
from google.api_core import exceptions as gexc
from google.auth.transport.requests import AuthorizedSession
from google.iam.v1 import iam_policy_pb2, policy_pb2
from google.oauth2 import service_account
from google.protobuf import field_mask_pb2

import secrets_compat as sc
from secrets_compat import State

PARENT = f"projects/{sc.PROJECT}"


def crc32c(data):
    return int(google_crc32c.value(data))


def add(client, secret_name, data, with_crc=False):
    payload = {"data": data}
    if with_crc:
        payload["data_crc32c"] = crc32c(data)
    return client.add_secret_version(request={"parent": secret_name, "payload": payload})


def version_numbers(versions):
    return [v.name.rsplit("/", 1)[1] for v in versions]


@pytest.fixture
def fresh_project(gh, admin):
    """A new project on which the session's admin account holds roles/secretmanager.admin."""
    account, _, client = admin
    project = sc.unique_id("proj")
    gh.add_binding(account.member, sc.ADMIN, project=project)
    sc.eventually(
        lambda: list(client.list_secrets(request={"parent": f"projects/{project}"})),
        retry_on=(gexc.Forbidden,),
    )
    return project


def test_create_secret_with_automatic_replication_and_labels(admin_client):
    secret_id = sc.unique_id("create")
    secret = admin_client.create_secret(request={
        "parent": PARENT,
        "secret_id": secret_id,
        "secret": {"replication": {"automatic": {}}, "labels": {"env": "dev", "team": "core"}},
    })
    assert re.fullmatch(rf"projects/\d+/secrets/{secret_id}", secret.name), secret.name
    assert "automatic" in secret.replication, secret.replication
    assert dict(secret.labels) == {"env": "dev", "team": "core"}
    assert "create_time" in secret and secret.create_time.year >= 2024, secret
    assert secret.etag, "a secret carries an etag"

    fetched = admin_client.get_secret(request={"name": f"{PARENT}/secrets/{secret_id}"})
    assert fetched.name == secret.name
    assert dict(fetched.labels) == {"env": "dev", "team": "core"}
    assert "automatic" in fetched.replication
    assert fetched.create_time == secret.create_time


def test_names_carry_the_project_number_and_requests_accept_it(admin_client, new_secret):
    secret = new_secret("number")
    number = sc.project_number_of(secret.name)
    assert number != sc.PROJECT
    by_number = admin_client.get_secret(request={"name": secret.name})
    by_id = admin_client.get_secret(
        request={"name": f"{PARENT}/secrets/{secret.name.rsplit('/', 1)[1]}"}
    )
    assert by_number.name == by_id.name == secret.name
    version = add(admin_client, f"projects/{number}/secrets/{secret.name.rsplit('/', 1)[1]}", b"n")
    assert version.name == f"{secret.name}/versions/1"
    # The number is stable: another secret of the same project gets the same one.
    assert sc.project_number_of(new_secret("number").name) == number


def test_add_versions_and_access_latest_and_by_number(admin_client, new_secret):
    secret = new_secret("access")
    data1, data2 = b"first value \x00\xff", b"second value"

    v1 = add(admin_client, secret.name, data1, with_crc=True)
    assert v1.name == f"{secret.name}/versions/1"
    assert v1.state == State.ENABLED
    assert v1.client_specified_payload_checksum is True
    v2 = add(admin_client, secret.name, data2)
    assert v2.name == f"{secret.name}/versions/2"
    assert v2.state == State.ENABLED
    assert v2.client_specified_payload_checksum is False

    latest = admin_client.access_secret_version(request={"name": f"{secret.name}/versions/latest"})
    assert latest.name.endswith("/versions/2"), latest.name
    assert latest.name == v2.name
    assert latest.payload.data == data2
    # Google computes and returns the checksum even when the client did not send one.
    assert latest.payload.data_crc32c == crc32c(data2)

    first = admin_client.access_secret_version(request={"name": f"{secret.name}/versions/1"})
    assert first.name == v1.name
    assert first.payload.data == data1
    assert first.payload.data_crc32c == crc32c(data1)

    # The project id works as well as the number in requests.
    by_id = admin_client.access_secret_version(
        request={"name": f"{PARENT}/secrets/{secret.name.rsplit('/', 1)[1]}/versions/1"}
    )
    assert by_id.name == v1.name and by_id.payload.data == data1


def test_get_and_list_versions_with_states(admin_client, new_secret):
    secret = new_secret("list-v")
    for data in (b"a", b"b", b"c"):
        add(admin_client, secret.name, data)

    v1 = admin_client.get_secret_version(request={"name": f"{secret.name}/versions/1"})
    assert v1.name == f"{secret.name}/versions/1"
    assert isinstance(v1.state, State) and v1.state == State.ENABLED
    assert "create_time" in v1 and "destroy_time" not in v1
    assert v1.etag

    latest = admin_client.get_secret_version(request={"name": f"{secret.name}/versions/latest"})
    assert latest.name == f"{secret.name}/versions/3"

    admin_client.disable_secret_version(request={"name": f"{secret.name}/versions/2"})
    versions = list(admin_client.list_secret_versions(request={"parent": secret.name}))
    # ListSecretVersionsResponse: "sorted in reverse by create_time (newest first)".
    assert version_numbers(versions) == ["3", "2", "1"]
    assert [v.state for v in versions] == [State.ENABLED, State.DISABLED, State.ENABLED]
    assert all(isinstance(v.state, State) for v in versions)


def test_disabled_version_cannot_be_accessed_until_enabled(admin_client, new_secret):
    secret = new_secret("disable")
    v1 = add(admin_client, secret.name, b"one")
    add(admin_client, secret.name, b"two")

    disabled = admin_client.disable_secret_version(request={"name": v1.name})
    assert disabled.name == v1.name
    assert disabled.state == State.DISABLED
    assert disabled.etag != v1.etag

    # Google: 400 FAILED_PRECONDITION "Secret Version [...] is in DISABLED state." Over REST
    # api-core raises BadRequest (class from the HTTP status), not FailedPrecondition.
    exc = sc.expect_error(
        gexc.BadRequest, 400, "FAILED_PRECONDITION",
        admin_client.access_secret_version, request={"name": v1.name},
        message_contains="DISABLED",
    )
    assert not isinstance(exc, gexc.FailedPrecondition)
    assert admin_client.get_secret_version(request={"name": v1.name}).state == State.DISABLED

    enabled = admin_client.enable_secret_version(request={"name": v1.name})
    assert enabled.state == State.ENABLED
    again = admin_client.access_secret_version(request={"name": v1.name})
    assert again.payload.data == b"one"


def test_latest_is_the_newest_version_even_when_disabled(admin_client, new_secret):
    secret = new_secret("latest")
    add(admin_client, secret.name, b"older")
    newest = add(admin_client, secret.name, b"newer")
    admin_client.disable_secret_version(request={"name": newest.name})
    # `latest` is the most recently created version regardless of state.
    sc.expect_error(
        gexc.BadRequest, 400, "FAILED_PRECONDITION",
        admin_client.access_secret_version,
        request={"name": f"{secret.name}/versions/latest"},
    )


def test_destroy_version(admin_client, new_secret):
    secret = new_secret("destroy")
    v1 = add(admin_client, secret.name, b"doomed", with_crc=True)
    v2 = add(admin_client, secret.name, b"kept")

    destroyed = admin_client.destroy_secret_version(request={"name": v1.name})
    assert destroyed.name == v1.name
    assert destroyed.state == State.DESTROYED
    assert "destroy_time" in destroyed, destroyed
    assert destroyed.destroy_time >= destroyed.create_time

    fetched = admin_client.get_secret_version(request={"name": v1.name})
    assert fetched.state == State.DESTROYED and "destroy_time" in fetched
    sc.expect_error(
        gexc.BadRequest, 400, "FAILED_PRECONDITION",
        admin_client.access_secret_version, request={"name": v1.name},
        message_contains="DESTROYED",
    )
    # DESTROYED is terminal.
    sc.expect_error(
        gexc.BadRequest, 400, "FAILED_PRECONDITION",
        admin_client.enable_secret_version, request={"name": v1.name},
    )
    # The other version is untouched.
    assert admin_client.access_secret_version(request={"name": v2.name}).payload.data == b"kept"
    states = {
        v.name: v.state
        for v in admin_client.list_secret_versions(request={"parent": secret.name})
    }
    assert states == {v2.name: State.ENABLED, v1.name: State.DESTROYED}


def test_list_secrets_with_and_without_a_label_filter(admin_client, new_secret):
    tag = sc.unique_id("t")
    first = new_secret("flt-a", labels={"team": tag, "env": "dev"})
    second = new_secret("flt-b", labels={"team": tag, "env": "prod"})
    other = new_secret("flt-c", labels={"team": "someone-else"})

    names = [s.name for s in admin_client.list_secrets(request={"parent": PARENT})]
    for s in (first, second, other):
        assert s.name in names
    # ListSecretsResponse: "sorted in reverse by create_time (newest first)".
    assert names.index(other.name) < names.index(second.name) < names.index(first.name)

    by_team = admin_client.list_secrets(request={"parent": PARENT, "filter": f"labels.team={tag}"})
    assert sorted(s.name for s in by_team) == sorted([first.name, second.name])
    by_env = admin_client.list_secrets(
        request={"parent": PARENT, "filter": f"labels.team={tag} AND labels.env=prod"}
    )
    assert [s.name for s in by_env] == [second.name]
    none = admin_client.list_secrets(
        request={"parent": PARENT, "filter": f"labels.team={tag}-nobody"}
    )
    assert list(none) == []


def test_list_secrets_in_pages(admin_client, new_secret, fresh_project):
    made = [new_secret(f"page{i}", project=fresh_project) for i in range(3)]
    parent = f"projects/{fresh_project}"

    pager = admin_client.list_secrets(request={"parent": parent, "page_size": 2})
    pages = list(pager.pages)
    assert [len(p.secrets) for p in pages] == [2, 1]
    assert pages[0].next_page_token and not pages[1].next_page_token
    assert pages[0].total_size == 3
    listed = [s.name for p in pages for s in p.secrets]
    assert listed == [s.name for s in reversed(made)], "newest first"


def test_list_secrets_filtered_total_size_is_zero(admin_client, new_secret, fresh_project):
    new_secret("tot-a", labels={"k": "v"}, project=fresh_project)
    new_secret("tot-b", labels={"k": "w"}, project=fresh_project)
    parent = f"projects/{fresh_project}"
    page = next(iter(admin_client.list_secrets(
        request={"parent": parent, "filter": "labels.k=v"}).pages))
    assert len(page.secrets) == 1
    # ListSecretsResponse.total_size: "The total number of Secrets but 0 when the
    # ListSecretsRequest.filter field is set."
    assert page.total_size == 0, f"total_size with a filter must be 0, got {page.total_size}"


def test_update_labels_with_an_update_mask(admin_client, new_secret):
    secret = new_secret("labels", labels={"env": "dev"})
    updated = admin_client.update_secret(request={
        "secret": {"name": secret.name, "labels": {"env": "prod", "owner": "ops"}},
        "update_mask": field_mask_pb2.FieldMask(paths=["labels"]),
    })
    assert updated.name == secret.name
    assert dict(updated.labels) == {"env": "prod", "owner": "ops"}
    assert updated.etag != secret.etag
    assert "automatic" in updated.replication, "fields outside the mask are kept"
    assert updated.create_time == secret.create_time

    fetched = admin_client.get_secret(request={"name": secret.name})
    assert dict(fetched.labels) == {"env": "prod", "owner": "ops"}

    # An empty label map with the mask clears them.
    cleared = admin_client.update_secret(request={
        "secret": {"name": secret.name}, "update_mask": {"paths": ["labels"]},
    })
    assert dict(cleared.labels) == {}


def test_update_without_an_update_mask_is_refused(admin_client, new_secret):
    secret = new_secret("nomask", labels={"env": "dev"})
    sc.expect_error(
        gexc.BadRequest, 400, "INVALID_ARGUMENT",
        admin_client.update_secret, request={"secret": {"name": secret.name, "labels": {"a": "b"}}},
    )
    assert dict(admin_client.get_secret(request={"name": secret.name}).labels) == {"env": "dev"}


def test_get_and_set_the_secrets_iam_policy(admin_client, new_secret, keyed_account):
    secret = new_secret("iam")
    reader, _, _ = keyed_account("sm-reader")

    empty = admin_client.get_iam_policy(request=iam_policy_pb2.GetIamPolicyRequest(
        resource=secret.name))
    assert isinstance(empty, policy_pb2.Policy)
    assert list(empty.bindings) == []
    assert empty.etag, "a policy always carries an etag"

    wanted = policy_pb2.Policy(
        bindings=[policy_pb2.Binding(role=sc.ACCESSOR, members=[reader.member])],
        etag=empty.etag,
    )
    stored = admin_client.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
        resource=secret.name, policy=wanted))
    assert [(b.role, list(b.members)) for b in stored.bindings] == [(sc.ACCESSOR, [reader.member])]
    assert stored.etag and stored.etag != empty.etag

    fetched = admin_client.get_iam_policy(request={
        "resource": secret.name, "options": {"requested_policy_version": 3},
    })
    assert [(b.role, list(b.members)) for b in fetched.bindings] == [(sc.ACCESSOR, [reader.member])]
    assert fetched.etag == stored.etag

    # A read-modify-write with a stale etag: 409 ABORTED (api-core: Conflict over REST).
    stale = policy_pb2.Policy(bindings=[], etag=empty.etag)
    sc.expect_error(
        gexc.Conflict, 409, "ABORTED",
        admin_client.set_iam_policy, request={"resource": secret.name, "policy": stale},
    )

    perms = ["secretmanager.versions.access", "secretmanager.secrets.delete"]
    granted = admin_client.test_iam_permissions(request={
        "resource": secret.name, "permissions": perms,
    })
    assert sorted(granted.permissions) == sorted(perms)


def test_delete_secret(admin_client, new_secret):
    secret = new_secret("delete")
    add(admin_client, secret.name, b"gone soon")
    current = admin_client.get_secret(request={"name": secret.name})

    admin_client.delete_secret(request={"name": secret.name, "etag": current.etag})

    sc.expect_error(gexc.NotFound, 404, "NOT_FOUND",
                    admin_client.get_secret, request={"name": secret.name})
    sc.expect_error(gexc.NotFound, 404, "NOT_FOUND", admin_client.access_secret_version,
                    request={"name": f"{secret.name}/versions/latest"})
    names = [s.name for s in admin_client.list_secrets(request={"parent": PARENT})]
    assert secret.name not in names
    sc.expect_error(gexc.NotFound, 404, "NOT_FOUND",
                    admin_client.delete_secret, request={"name": secret.name})


def test_access_response_on_the_wire(gh, admin, new_secret):
    """proto3 JSON: base64 (standard alphabet) bytes, int64 CRC32C as a string."""
    _, key_path, client = admin
    secret = new_secret("wire")
    data = bytes(range(256)) * 3  # exercises '+' and '/' in base64
    add(client, secret.name, data)
    creds = service_account.Credentials.from_service_account_file(key_path)
    with AuthorizedSession(creds, default_host="secretmanager.googleapis.com") as session:
        session.trust_env = False
        resp = session.get(
            f"{gh.url}/v1/{secret.name}/versions/1:access",
            params={"$alt": "json;enum-encoding=int"}, timeout=sc.HTTP_TIMEOUT,
        )
    assert resp.status_code == 200, resp.text[:500]
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["name"] == f"{secret.name}/versions/1"
    assert base64.b64decode(body["payload"]["data"], validate=True) == data
    assert body["payload"]["dataCrc32c"] == str(crc32c(data))
