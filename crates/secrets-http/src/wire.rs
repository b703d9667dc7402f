//! Secret Manager's resources in proto3 JSON, as the REST transport reads them: the `Secret`
//! and `SecretVersion` messages and `AccessSecretVersionResponse`. The CLI prints the same
//! shapes.

use base64::Engine as _;
use gatehouse_secrets::{Accessed, SecretView, VersionView};
use serde_json::{Value, json};

/// The Secret message.
pub fn secret(view: &SecretView) -> Value {
    let r = &view.record;
    let mut v = json!({
        "name": view.name(),
        "replication": serde_json::from_str::<Value>(&r.replication).unwrap_or(json!({"automatic": {}})),
        "createTime": gatehouse_tokens::rfc3339(r.created_at, false),
        "etag": r.etag,
    });
    for (field, text) in [
        ("labels", &r.labels),
        ("annotations", &r.annotations),
        ("versionAliases", &r.version_aliases),
    ] {
        if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(text)
            && !m.is_empty()
        {
            v[field] = Value::Object(m);
        }
    }
    v
}

/// The SecretVersion message.
pub fn version(view: &VersionView) -> Value {
    let r = &view.record;
    let mut v = json!({
        "name": view.name(),
        "createTime": gatehouse_tokens::rfc3339(r.created_at, false),
        "state": r.state,
        "replicationStatus": {"automatic": {}},
        "etag": r.etag,
        "clientSpecifiedPayloadChecksum": r.client_checksum,
    });
    if let Some(d) = r.destroyed_at {
        v["destroyTime"] = json!(gatehouse_tokens::rfc3339(d, false));
    }
    v
}

/// The AccessSecretVersionResponse message (the payload base64, its CRC32C as a decimal
/// string, as proto3 JSON writes int64).
pub fn accessed(a: &Accessed) -> Value {
    json!({
        "name": a.name,
        "payload": {
            "data": base64::engine::general_purpose::STANDARD.encode(a.data.as_slice()),
            "dataCrc32c": a.crc32c.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_store::{SecretRecord, SecretVersionRecord};

    #[test]
    fn a_secret_shows_its_maps_only_when_they_hold_something() {
        let view = SecretView {
            record: SecretRecord {
                project_id: "p".into(),
                secret_id: "s".into(),
                replication: "not json".into(),
                labels: r#"{"env":"prod"}"#.into(),
                annotations: "{}".into(),
                version_aliases: "{}".into(),
                etag: "\"e1\"".into(),
                created_at: 1_700_000_000_000,
                wrapped_key: Vec::new(),
                last_version: 0,
            },
            project_number: "123".into(),
        };
        assert_eq!(
            secret(&view),
            json!({
                "name": "projects/123/secrets/s",
                "replication": {"automatic": {}},
                "createTime": "2023-11-14T22:13:20.000Z",
                "etag": "\"e1\"",
                "labels": {"env": "prod"},
            })
        );
    }

    #[test]
    fn a_destroyed_version_has_a_destroy_time() {
        let mut view = VersionView {
            record: SecretVersionRecord {
                project_id: "p".into(),
                secret_id: "s".into(),
                version: 3,
                state: "ENABLED".into(),
                created_at: 1_700_000_003_500,
                destroyed_at: None,
                payload: None,
                crc32c: 0,
                client_checksum: false,
                etag: "\"v\"".into(),
            },
            project_number: "123".into(),
        };
        let live = version(&view);
        assert_eq!(live["name"], "projects/123/secrets/s/versions/3");
        assert_eq!(live["createTime"], "2023-11-14T22:13:23.500Z");
        assert_eq!(live["replicationStatus"], json!({"automatic": {}}));
        assert!(live.get("destroyTime").is_none());
        view.record.state = "DESTROYED".into();
        view.record.destroyed_at = Some(1_700_000_003_750);
        let gone = version(&view);
        assert_eq!(gone["state"], "DESTROYED");
        assert_eq!(gone["destroyTime"], "2023-11-14T22:13:23.750Z");
    }

    #[test]
    fn an_access_carries_the_payload_in_base64_and_its_checksum_as_text() {
        let a = Accessed {
            name: "projects/123/secrets/s/versions/1".into(),
            data: b"hi".to_vec().into(),
            crc32c: 7,
        };
        assert_eq!(
            accessed(&a),
            json!({
                "name": "projects/123/secrets/s/versions/1",
                "payload": {"data": "aGk=", "dataCrc32c": "7"},
            })
        );
    }
}
