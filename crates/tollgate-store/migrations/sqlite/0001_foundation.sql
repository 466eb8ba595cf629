-- Times are integer milliseconds since the Unix epoch (UTC).
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE plans (
    slug             TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    price_cents      INTEGER NOT NULL DEFAULT 0,
    currency         TEXT NOT NULL DEFAULT 'usd',
    period           TEXT NOT NULL,
    limits           TEXT NOT NULL,          -- JSON object: meter -> integer or null
    rpm              INTEGER,
    tpm              INTEGER,
    byok_counts      BOOLEAN NOT NULL DEFAULT FALSE,
    byok_required    BOOLEAN NOT NULL DEFAULT FALSE,
    allowed_models   TEXT,                   -- JSON array, NULL = every model
    alert_thresholds TEXT NOT NULL,          -- JSON array of percentages
    stripe_price_id  TEXT UNIQUE,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

CREATE TABLE users (
    id                 TEXT PRIMARY KEY,
    plan               TEXT NOT NULL REFERENCES plans (slug),
    status             TEXT NOT NULL DEFAULT 'active',
    email              TEXT,
    stripe_customer_id TEXT UNIQUE,
    billing_anchor     INTEGER NOT NULL,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
CREATE INDEX users_plan ON users (plan);

-- Only the SHA-256 of a key is kept; `prefix` and `last4` are for display.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    hash         TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL,              -- 'user' or 'service'
    user_id      TEXT REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    last4        TEXT NOT NULL,
    scopes       TEXT NOT NULL,              -- space-separated
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    last_used_at INTEGER,
    replaced_by  TEXT
);
CREATE INDEX api_keys_user ON api_keys (user_id);
