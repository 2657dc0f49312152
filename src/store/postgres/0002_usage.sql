-- The usage ledger shared by the fleet: one row per metered request, written by the node that
-- metered it. `record_id` is the ledger's own id for the record (not the client-supplied
-- request id): delivery from a node's journal inserts with ON CONFLICT (record_id) DO NOTHING,
-- so a batch delivered twice is stored once. Costs are integers in nano-USD so sums are exact.
CREATE TABLE usage (
    record_id         TEXT PRIMARY KEY,
    node              TEXT NOT NULL,
    ts_ms             BIGINT NOT NULL,
    request_id        TEXT NOT NULL,
    key_id            TEXT,
    team              TEXT NOT NULL DEFAULT '',
    model             TEXT,
    prompt            TEXT,
    route             TEXT,
    status            INTEGER NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cached_tokens     BIGINT NOT NULL,
    cost_nano_usd     BIGINT NOT NULL
);
CREATE INDEX usage_by_time ON usage (ts_ms);
CREATE INDEX usage_by_key ON usage (key_id, ts_ms);
CREATE INDEX usage_by_team ON usage (team, ts_ms);
