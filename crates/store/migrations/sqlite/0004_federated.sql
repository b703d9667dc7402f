-- Federated sign-in flows in progress (authorization-code flow with PKCE): one row per
-- `state`, kept by its hash, used once, expiring after minutes. Any replica can finish a flow
-- another one started.
CREATE TABLE idp_flows (
    state_hash  TEXT   NOT NULL PRIMARY KEY,
    project_id  TEXT   NOT NULL,
    data        TEXT   NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX idp_flows_expiry ON idp_flows (expires_at);
