-- IAM: projects, service accounts and their keys, policies, the audit log.
-- Times are epoch milliseconds; flags are 0/1 integers.
CREATE TABLE projects (
    project_id     TEXT   NOT NULL PRIMARY KEY,
    project_number TEXT   NOT NULL UNIQUE,
    created_at     INTEGER NOT NULL
);

CREATE TABLE service_accounts (
    email        TEXT    NOT NULL PRIMARY KEY,
    project_id   TEXT    NOT NULL,
    account_id   TEXT    NOT NULL,
    unique_id    TEXT    NOT NULL UNIQUE,
    display_name TEXT    NOT NULL DEFAULT '',
    description  TEXT    NOT NULL DEFAULT '',
    disabled     INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER  NOT NULL
);
CREATE INDEX service_accounts_project ON service_accounts (project_id, account_id);

-- USER keys keep only the public half (the private key goes out once, in the key file) and
-- the self-signed certificate made with it; SYSTEM keys (signBlob / signJwt) keep the private half.
CREATE TABLE service_account_keys (
    key_id       TEXT    NOT NULL PRIMARY KEY,
    email        TEXT    NOT NULL REFERENCES service_accounts (email) ON DELETE CASCADE,
    managed      TEXT    NOT NULL,
    public_jwk   TEXT    NOT NULL,
    certificate  TEXT    NOT NULL,
    private_der  BLOB,
    disabled     INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER  NOT NULL,
    expires_at   INTEGER  NOT NULL
);
CREATE INDEX service_account_keys_email ON service_account_keys (email);

-- One policy per resource name; version counts writes (the etag is derived from it).
CREATE TABLE iam_policies (
    resource   TEXT   NOT NULL PRIMARY KEY,
    policy     TEXT   NOT NULL,
    version    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE iam_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER  NOT NULL,
    principal  TEXT    NOT NULL,
    permission TEXT    NOT NULL,
    resource   TEXT    NOT NULL,
    allowed    INTEGER NOT NULL,
    -- Identical decisions written together are one row with their number.
    count      INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX iam_audit_at ON iam_audit (at);
