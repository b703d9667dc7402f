-- Secret Manager: secrets, their versions (payloads encrypted by the domain layer), and the
-- master-key check. Times are epoch milliseconds; flags 0/1.
CREATE TABLE secrets (
    project_id      TEXT    NOT NULL,
    secret_id       TEXT    NOT NULL,
    created_at      INTEGER  NOT NULL,
    labels          TEXT    NOT NULL DEFAULT '{}',
    annotations     TEXT    NOT NULL DEFAULT '{}',
    replication     TEXT    NOT NULL,
    version_aliases TEXT    NOT NULL DEFAULT '{}',
    etag            TEXT    NOT NULL,
    -- The secret's data key, wrapped by the master key (nonce || AES-256-GCM ciphertext).
    wrapped_key     BLOB    NOT NULL,
    last_version    INTEGER  NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, secret_id)
);

CREATE TABLE secret_versions (
    project_id      TEXT    NOT NULL,
    secret_id       TEXT    NOT NULL,
    version         INTEGER  NOT NULL,
    state           TEXT    NOT NULL,
    created_at      INTEGER  NOT NULL,
    destroyed_at    INTEGER,
    -- nonce || AES-256-GCM ciphertext under the secret's data key; NULL once destroyed.
    payload         BLOB,
    crc32c          INTEGER  NOT NULL,
    client_checksum INTEGER NOT NULL DEFAULT 0,
    etag            TEXT    NOT NULL,
    PRIMARY KEY (project_id, secret_id, version),
    FOREIGN KEY (project_id, secret_id) REFERENCES secrets (project_id, secret_id) ON DELETE CASCADE
);

-- One row: which master key the data keys are wrapped with (a value only that key decrypts).
CREATE TABLE secrets_master (
    id         INTEGER NOT NULL PRIMARY KEY,
    key_id     TEXT    NOT NULL,
    check_blob BLOB    NOT NULL
);
