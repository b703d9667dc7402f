"""The `gatehouse secrets` CLI (the local administrator, like `gcloud secrets`) and the API
(the real client) see the same secrets, versions and states.
"""

import os

from google.api_core import exceptions as gexc

import secrets_compat as sc
from secrets_compat import State

PARENT = f"projects/{sc.PROJECT}"


def short(name):
    return name.rsplit("/", 1)[1]


def test_cli_created_secret_is_readable_through_the_client(gh, admin_client):
    secret_id = sc.unique_id("cli-made")
    first = b"from the cli\n"
    out = gh.secrets_json("create", secret_id, "--data-file", gh.write_file(secret_id, first))
    assert out["secret"]["name"].endswith(f"/secrets/{secret_id}"), out
    number = sc.project_number_of(out["secret"]["name"])

    secret = admin_client.get_secret(request={"name": f"{PARENT}/secrets/{secret_id}"})
    assert secret.name == f"projects/{number}/secrets/{secret_id}"
    assert "automatic" in secret.replication

    resp = admin_client.access_secret_version(request={"name": f"{secret.name}/versions/latest"})
    assert resp.name == f"{secret.name}/versions/1"
    assert resp.payload.data == first

    # A version added with the CLI from stdin becomes `latest` for the client.
    second = os.urandom(48)
    gh.secrets_cli("versions", "add", secret_id, "--data-file", "-", input_bytes=second)
    resp = admin_client.access_secret_version(request={"name": f"{secret.name}/versions/latest"})
    assert resp.name == f"{secret.name}/versions/2"
    assert resp.payload.data == second
    versions = list(admin_client.list_secret_versions(request={"parent": secret.name}))
    assert [short(v.name) for v in versions] == ["2", "1"]
    assert all(v.state == State.ENABLED for v in versions)


def test_api_created_secret_is_visible_to_the_cli(gh, admin_client, new_secret):
    secret = new_secret("api-made")
    for data in (b"one", b"two"):
        admin_client.add_secret_version(request={"parent": secret.name, "payload": {"data": data}})

    listed = gh.secrets_json("list")
    assert secret.name in [s["name"] for s in listed], listed
    versions = gh.secrets_json("versions", "list", short(secret.name))
    assert [v["name"] for v in versions] == [
        f"{secret.name}/versions/2", f"{secret.name}/versions/1"]
    assert {v["state"] for v in versions} == {"ENABLED"}


def test_cli_versions_access_prints_exactly_the_payload(gh, admin_client, new_secret):
    """Like `gcloud secrets versions access`: stdout is the payload, byte for byte, so that
    `gatehouse secrets versions access latest --secret S > file` yields the secret."""
    secret = new_secret("cli-read")
    data = b"line one\nline two\n\x00\x01binary\xff"
    admin_client.add_secret_version(request={"parent": secret.name, "payload": {"data": data}})
    res = gh.secrets_cli("versions", "access", "latest", "--secret", short(secret.name))
    assert res.stdout == data, (
        f"stdout must be exactly the payload ({len(data)} bytes), got {len(res.stdout)} bytes: "
        f"{res.stdout[:300]!r}"
    )
    res = gh.secrets_cli("versions", "access", "1", "--secret", short(secret.name))
    assert res.stdout == data


def test_cli_access_payload_matches_the_client(gh, admin_client, new_secret):
    """Whatever else it prints, the CLI finds the version the client wrote."""
    secret = new_secret("cli-find")
    data = b"needle-" + os.urandom(8).hex().encode()
    admin_client.add_secret_version(request={"parent": secret.name, "payload": {"data": data}})
    res = gh.secrets_cli("versions", "access", "1", "--secret", short(secret.name))
    assert data in res.stdout, res.stdout[-500:]


def test_cli_state_changes_are_seen_by_the_client(gh, admin_client, new_secret):
    secret = new_secret("cli-state")
    v1 = admin_client.add_secret_version(request={"parent": secret.name, "payload": {"data": b"a"}})
    v2 = admin_client.add_secret_version(request={"parent": secret.name, "payload": {"data": b"b"}})
    sid = short(secret.name)

    out = gh.secrets_json("versions", "disable", "1", "--secret", sid)
    assert out["state"] == "DISABLED", out
    assert admin_client.get_secret_version(request={"name": v1.name}).state == State.DISABLED
    sc.expect_error(gexc.BadRequest, 400, "FAILED_PRECONDITION",
                    admin_client.access_secret_version, request={"name": v1.name})

    gh.secrets_json("versions", "enable", "1", "--secret", sid)
    assert admin_client.access_secret_version(request={"name": v1.name}).payload.data == b"a"

    out = gh.secrets_json("versions", "destroy", "2", "--secret", sid)
    assert out["state"] == "DESTROYED" and out.get("destroyTime"), out
    destroyed = admin_client.get_secret_version(request={"name": v2.name})
    assert destroyed.state == State.DESTROYED and "destroy_time" in destroyed
    sc.expect_error(gexc.BadRequest, 400, "FAILED_PRECONDITION",
                    admin_client.access_secret_version,
                    request={"name": f"{secret.name}/versions/latest"})

    # And the other way round: the client's changes show up in the CLI.
    admin_client.disable_secret_version(request={"name": v1.name})
    states = {v["name"]: v["state"] for v in gh.secrets_json("versions", "list", sid)}
    assert states == {v1.name: "DISABLED", v2.name: "DESTROYED"}
    res = gh.secrets_cmd("versions", "access", "1", "--secret", sid)
    assert res.returncode != 0 and b"DISABLED" in res.stderr + res.stdout


def test_cli_delete_is_seen_by_the_client(gh, admin_client, new_secret):
    secret = new_secret("cli-del")
    admin_client.add_secret_version(request={"parent": secret.name, "payload": {"data": b"x"}})
    gh.secrets_cli("delete", short(secret.name))
    sc.expect_error(gexc.NotFound, 404, "NOT_FOUND",
                    admin_client.get_secret, request={"name": secret.name})
    listed = admin_client.list_secrets(request={"parent": PARENT})
    assert secret.name not in [s.name for s in listed]
