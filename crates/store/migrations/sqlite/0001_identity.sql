-- Identity: end-user accounts and what hangs off them. Times are epoch milliseconds
-- unless the column name says otherwise; flags are 0/1 integers (portable through sqlx Any).
CREATE TABLE users (
    project_id          TEXT    NOT NULL,
    tenant_id           TEXT    NOT NULL DEFAULT '',
    local_id            TEXT    NOT NULL,
    email               TEXT,
    email_unique        TEXT,
    email_verified      INTEGER NOT NULL DEFAULT 0,
    display_name        TEXT,
    photo_url           TEXT,
    phone_number        TEXT,
    disabled            INTEGER NOT NULL DEFAULT 0,
    password_hash       TEXT,
    salt                TEXT,
    password_updated_at INTEGER,
    valid_since_secs    INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    last_login_at       INTEGER,
    last_refresh_at     INTEGER,
    custom_attributes   TEXT,
    custom_auth         INTEGER NOT NULL DEFAULT 0,
    email_link_signin   INTEGER NOT NULL DEFAULT 0,
    initial_email       TEXT,
    providers           TEXT    NOT NULL DEFAULT '[]',
    mfa                 TEXT    NOT NULL DEFAULT '[]',
    version             INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, tenant_id, local_id)
);
CREATE UNIQUE INDEX users_email_unique ON users (project_id, tenant_id, email_unique);
CREATE INDEX users_email ON users (project_id, tenant_id, email);
CREATE UNIQUE INDEX users_phone ON users (project_id, tenant_id, phone_number);

CREATE TABLE user_identities (
    project_id  TEXT NOT NULL,
    tenant_id   TEXT NOT NULL DEFAULT '',
    provider_id TEXT NOT NULL,
    raw_id      TEXT NOT NULL,
    local_id    TEXT NOT NULL,
    PRIMARY KEY (project_id, tenant_id, provider_id, raw_id),
    FOREIGN KEY (project_id, tenant_id, local_id) REFERENCES users (project_id, tenant_id, local_id) ON DELETE CASCADE
);
CREATE INDEX user_identities_user ON user_identities (project_id, tenant_id, local_id);

CREATE TABLE refresh_tokens (
    token_hash   TEXT    NOT NULL PRIMARY KEY,
    project_id   TEXT    NOT NULL,
    tenant_id    TEXT    NOT NULL DEFAULT '',
    local_id     TEXT    NOT NULL,
    provider     TEXT    NOT NULL,
    extra_claims TEXT,
    created_at   INTEGER NOT NULL,
    FOREIGN KEY (project_id, tenant_id, local_id) REFERENCES users (project_id, tenant_id, local_id) ON DELETE CASCADE
);
CREATE INDEX refresh_tokens_user ON refresh_tokens (project_id, tenant_id, local_id);

CREATE TABLE oob_codes (
    code_hash    TEXT    NOT NULL PRIMARY KEY,
    project_id   TEXT    NOT NULL,
    tenant_id    TEXT    NOT NULL DEFAULT '',
    request_type TEXT    NOT NULL,
    email        TEXT    NOT NULL,
    new_email    TEXT,
    local_id     TEXT,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    dev_code     TEXT,
    dev_link     TEXT
);
CREATE INDEX oob_codes_project ON oob_codes (project_id, tenant_id, created_at);

CREATE TABLE signing_keys (
    kid          TEXT    NOT NULL PRIMARY KEY,
    purpose      TEXT    NOT NULL,
    private_der  BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    retire_at    INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);

CREATE TABLE project_settings (
    project_id TEXT NOT NULL PRIMARY KEY,
    settings   TEXT NOT NULL
);
