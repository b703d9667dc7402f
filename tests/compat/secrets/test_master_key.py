"""The master key: payloads are encrypted at rest, `rotate-master-key` re-wraps every data key
so a server restarted with the new key serves every payload unchanged, and a server (or the CLI)
given the old key refuses to start with a clear message.
"""

import os
import stat
import subprocess

import google_crc32c
import pytest
from google.api_core import exceptions as gexc

import secrets_compat as sc
from secrets_compat import State

PARENT = f"projects/{sc.PROJECT}"


def test_generate_master_key_refuses_to_overwrite(gatehouse_bin, tmp_data_dir):
    path = os.path.join(tmp_data_dir, "mk")
    res = sc.generate_master_key(gatehouse_bin, path)
    assert res.returncode == 0, res.stderr[-1000:]
    with open(path, "rb") as f:
        key = f.read()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, oct(os.stat(path).st_mode)

    again = sc.generate_master_key(gatehouse_bin, path)
    assert again.returncode != 0, "generate-master-key must not overwrite an existing key"
    with open(path, "rb") as f:
        assert f.read() == key, "the existing key file was changed"


def test_payloads_are_encrypted_at_rest(gh, admin_client, new_secret):
    secret = new_secret("at-rest")
    marker = ("plaintext-marker-" + os.urandom(16).hex()).encode()
    admin_client.add_secret_version(request={"parent": secret.name, "payload": {"data": marker}})
    assert admin_client.access_secret_version(
        request={"name": f"{secret.name}/versions/1"}).payload.data == marker
    db_files = [
        os.path.join(root, name)
        for root, _, names in os.walk(gh.data_dir) for name in names
        if ".db" in name or name.endswith((".sqlite", "-wal", "-shm"))
    ]
    assert db_files, f"no database files under {gh.data_dir}: {os.listdir(gh.data_dir)}"
    for path in db_files:
        with open(path, "rb") as f:
            assert marker not in f.read(), f"payload stored in plaintext in {path}"


class RotationFixture:
    """A server of its own (rotation stops and restarts it), with an admin account."""

    def __init__(self, binary, data_dir):
        self.old_key = os.path.join(data_dir, "master-1.key")
        self.new_key = os.path.join(data_dir, "master-2.key")
        for path in (self.old_key, self.new_key):
            res = sc.generate_master_key(binary, path)
            assert res.returncode == 0, res.stderr[-1000:]
        self.gh = sc.Gatehouse(binary, data_dir, self.old_key)


@pytest.fixture
def rotation(gatehouse_bin, tmp_data_dir):
    fx = RotationFixture(gatehouse_bin, tmp_data_dir)
    try:
        yield fx
    finally:
        fx.gh.close()


def test_master_key_rotation_end_to_end(rotation):
    gh = rotation.gh
    gh.start()
    account = gh.create_account("sm-rotor")
    key_path = gh.create_key_file(account)
    gh.add_binding(account.member, sc.ADMIN, project=sc.PROJECT)
    client = gh.client(key_path)
    sc.eventually(lambda: list(client.list_secrets(request={"parent": PARENT})),
                  retry_on=(gexc.Forbidden,))

    # Secrets written through the API: several versions, every state, a full-size payload.
    expected = {}  # version name -> payload
    api_secret = client.create_secret(request={
        "parent": PARENT, "secret_id": sc.unique_id("rot-api"),
        "secret": {"replication": {"automatic": {}}, "labels": {"k": "v"}},
    })
    payloads = [b"api one", os.urandom(sc.MAX_PAYLOAD), b"api three", b"api four"]
    versions = []
    for data in payloads:
        versions.append(client.add_secret_version(request={"parent": api_secret.name, "payload": {
            "data": data, "data_crc32c": int(google_crc32c.value(data))}}))
    for v, data in zip(versions, payloads):
        expected[v.name] = data
    client.disable_secret_version(request={"name": versions[2].name})
    client.destroy_secret_version(request={"name": versions[3].name})
    del expected[versions[3].name]
    disabled_payload = expected.pop(versions[2].name)

    # ... and one written with the CLI.
    cli_id = sc.unique_id("rot-cli")
    cli_data = b"cli payload\n"
    out = gh.secrets_json("create", cli_id, "--data-file", gh.write_file(cli_id, cli_data))
    expected[f"{out['secret']['name']}/versions/1"] = cli_data

    gh.stop()
    res = gh.secrets_cli("rotate-master-key", "--new-key-file", rotation.new_key, project=None)
    assert res.returncode == 0

    # Restarted with the new key, every payload reads back unchanged through the client.
    gh.master_key_file = rotation.new_key
    gh.start()
    for name, data in expected.items():
        resp = client.access_secret_version(request={"name": name})
        assert resp.payload.data == data, f"{name}: payload changed by rotation"
        assert resp.payload.data_crc32c == int(google_crc32c.value(data))
    listed = client.list_secret_versions(request={"parent": api_secret.name})
    states = {v.name: v.state for v in listed}
    assert states == {
        versions[0].name: State.ENABLED, versions[1].name: State.ENABLED,
        versions[2].name: State.DISABLED, versions[3].name: State.DESTROYED,
    }
    # The disabled version's data survived the re-wrap too.
    client.enable_secret_version(request={"name": versions[2].name})
    assert client.access_secret_version(
        request={"name": versions[2].name}).payload.data == disabled_payload
    sc.expect_error(gexc.BadRequest, 400, "FAILED_PRECONDITION",
                    client.access_secret_version, request={"name": versions[3].name})
    # New versions are written under the new key.
    new = client.add_secret_version(request={"parent": api_secret.name,
                                             "payload": {"data": b"after rotation"}})
    assert new.name.endswith("/versions/5")
    assert client.access_secret_version(
        request={"name": f"{api_secret.name}/versions/latest"}).payload.data == b"after rotation"
    assert cli_data in gh.secrets_cli("versions", "access", "1", "--secret", cli_id).stdout
    gh.stop()

    # The old key is refused: the server exits at once, non-zero, and says why.
    try:
        refused = subprocess.run(
            [gh.binary, *gh.serve_args(master_key_file=rotation.old_key)],
            capture_output=True, stdin=subprocess.DEVNULL, timeout=20,
        )
    except subprocess.TimeoutExpired as exc:  # run() has killed it
        raise AssertionError(
            f"the server kept running with the old master key: {(exc.stdout or b'')[-1000:]!r}"
        ) from exc
    output = (refused.stdout + refused.stderr).decode("utf-8", "replace")
    assert refused.returncode != 0, output[-2000:]
    assert "master key" in output.lower(), (
        f"no clear message about the master key: {output[-2000:]}")
    assert '"message":"listening"' not in output, output[-2000:]

    # So is the CLI, and rotating again from the old key.
    cli = gh.secrets_cmd("versions", "access", "1", "--secret", cli_id,
                         master_key_file=rotation.old_key)
    assert cli.returncode != 0 and cli_data not in cli.stdout
    assert b"master key" in (cli.stdout + cli.stderr).lower()
    again = gh.secrets_cmd("rotate-master-key", "--new-key-file", rotation.new_key,
                           master_key_file=rotation.old_key, project=None)
    assert again.returncode != 0

    # And the new key still works after all that.
    gh.start()
    for name, data in expected.items():
        assert client.access_secret_version(request={"name": name}).payload.data == data
