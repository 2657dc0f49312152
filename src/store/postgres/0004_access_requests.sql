-- Just-in-time access requests (crate::access): the claim token only as its HMAC.
CREATE TABLE access_requests (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    team          TEXT NOT NULL,
    models        TEXT NOT NULL,
    routes        TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    limits        TEXT NOT NULL,
    ttl           TEXT NOT NULL,
    reason        TEXT NOT NULL,
    requester     TEXT NOT NULL,
    status        TEXT NOT NULL,
    decided_by    TEXT,
    note          TEXT,
    created_at    BIGINT NOT NULL,
    decided_at    BIGINT,
    claimed_at    BIGINT,
    expires_at_ms BIGINT,
    key_id        TEXT,
    claim_hash    BYTEA NOT NULL
);
CREATE INDEX access_requests_by_status ON access_requests (status);
-- The request an access.* audit entry is about.
ALTER TABLE audit_log ADD COLUMN request_id TEXT;
