-- The last manual reset (or paid invoice), and per-user limit overrides (JSON).
ALTER TABLE users ADD COLUMN usage_reset_at INTEGER;
ALTER TABLE users ADD COLUMN limit_overrides TEXT;

-- The ledger: one row per usage event, append-only, idempotent by id.
CREATE TABLE usage_events (
    id               TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL,
    key_id           TEXT,
    ts               INTEGER NOT NULL,
    recorded_at      INTEGER NOT NULL,
    feature          TEXT,
    route            TEXT,
    provider         TEXT,
    model            TEXT,
    input_tokens     INTEGER NOT NULL DEFAULT 0,
    output_tokens    INTEGER NOT NULL DEFAULT 0,
    cached_tokens    INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens INTEGER NOT NULL DEFAULT 0,
    requests         INTEGER NOT NULL DEFAULT 0,
    cost_micros      INTEGER NOT NULL DEFAULT 0,
    extra            TEXT,                  -- JSON: further meters and amounts
    latency_ms       INTEGER,
    ttft_ms          INTEGER,
    status_code      INTEGER,
    request_bytes    INTEGER,
    response_bytes   INTEGER,
    client_ip        TEXT,
    user_agent       TEXT,
    key_source       TEXT NOT NULL DEFAULT 'platform',
    billable         BOOLEAN NOT NULL DEFAULT TRUE,
    estimated        BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX usage_events_user_ts ON usage_events (user_id, ts);
CREATE INDEX usage_events_ts ON usage_events (ts);

-- Quota counters, per user, meter and period start; written in the same
-- transaction as the events that feed them.
CREATE TABLE usage_counters (
    user_id      TEXT NOT NULL,
    meter        TEXT NOT NULL,
    period_start INTEGER NOT NULL,
    used         INTEGER NOT NULL,
    PRIMARY KEY (user_id, meter, period_start)
);

-- All usage ever, per meter; survives resets.
CREATE TABLE usage_lifetime (
    user_id TEXT NOT NULL,
    meter   TEXT NOT NULL,
    used    INTEGER NOT NULL,
    PRIMARY KEY (user_id, meter)
);

-- Daily rollups (UTC days) for history and breakdowns.
CREATE TABLE usage_daily (
    user_id       TEXT NOT NULL,
    day           INTEGER NOT NULL,
    model         TEXT NOT NULL,
    feature       TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    provider      TEXT NOT NULL,
    key_source    TEXT NOT NULL,
    events        INTEGER NOT NULL,
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    requests      INTEGER NOT NULL,
    cost_micros   INTEGER NOT NULL,
    PRIMARY KEY (user_id, day, model, feature, key_id, provider, key_source)
);

-- Extra allowance for one user and meter.
CREATE TABLE grants (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    meter      TEXT NOT NULL,
    amount     INTEGER NOT NULL,
    starts_at  INTEGER NOT NULL,
    expires_at INTEGER,
    created_at INTEGER NOT NULL
);
CREATE INDEX grants_user ON grants (user_id);

-- The operator's model prices (micro-dollars per million tokens).
CREATE TABLE prices (
    model        TEXT PRIMARY KEY,
    input        INTEGER NOT NULL,
    cached_input INTEGER NOT NULL,
    output       INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
