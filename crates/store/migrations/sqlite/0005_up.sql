-- What `gatehouse up` last applied: one row per manifest resource with a digest of its
-- declaration, so the next run can plan create / update / delete.
CREATE TABLE up_state (
    kind    TEXT NOT NULL,
    name    TEXT NOT NULL,
    digest  TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
