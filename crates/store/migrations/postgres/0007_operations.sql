-- Long-running operations of the Google-shaped APIs (google.longrunning.Operation): one row
-- per operation, kept across restarts. metadata and result are JSON text; result is
-- {"response": …} or {"error": …} once done. Times are epoch milliseconds; done is 0/1.
CREATE TABLE operations (
    name        TEXT    NOT NULL PRIMARY KEY,
    parent      TEXT    NOT NULL,
    metadata    TEXT    NOT NULL DEFAULT '{}',
    done        BIGINT NOT NULL DEFAULT 0,
    result      TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE INDEX operations_by_parent ON operations (parent, created_at, name);
