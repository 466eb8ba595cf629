-- Outbound webhooks, e-mail alerts and inbound Stripe events.

-- Where events are sent. The signing secret is sealed like a credential
-- (AES-256-GCM under the master key, AAD = `webhook:<id>`); never plaintext.
CREATE TABLE webhook_endpoints (
    id          TEXT PRIMARY KEY,            -- whk_…
    url         TEXT NOT NULL,
    events      TEXT NOT NULL,               -- space-separated event types, or '*'
    description TEXT,
    enabled     BOOLEAN NOT NULL DEFAULT TRUE,
    key_id      TEXT NOT NULL,               -- the master key's id
    nonce       BYTEA NOT NULL,
    ciphertext  BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX webhook_endpoints_key_id ON webhook_endpoints (key_id);

-- The outbox: every event, written in the transaction of the change that
-- caused it. `dispatched_at` is set once its deliveries are made.
CREATE TABLE outbox (
    id            TEXT PRIMARY KEY,          -- msg_…, the webhook-id
    type          TEXT NOT NULL,
    user_id       TEXT,
    body          TEXT NOT NULL,             -- {"type","timestamp","data"}, sent as is
    email_user    BOOLEAN NOT NULL DEFAULT FALSE, -- also tell the user by e-mail
    created_at    BIGINT NOT NULL,
    dispatched_at BIGINT
);
CREATE INDEX outbox_pending ON outbox (created_at) WHERE dispatched_at IS NULL;

-- One event to one destination: a webhook endpoint, or an e-mail address.
-- A pending row is due at `next_attempt_at`; a claim moves that forward
-- (the lease), so a crashed sender's rows come due again.
CREATE TABLE deliveries (
    id              TEXT PRIMARY KEY,        -- dlv_…
    event_id        TEXT NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    endpoint_id     TEXT REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    kind            TEXT NOT NULL,           -- 'webhook' or 'email'
    recipient       TEXT,                    -- the e-mail address
    status          TEXT NOT NULL,           -- 'pending', 'delivered', 'failed'
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    manual          BOOLEAN NOT NULL DEFAULT FALSE, -- the next attempt is a redelivery by hand
    retry_until     BIGINT NOT NULL,        -- retries stop after this
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_endpoint ON deliveries (endpoint_id, created_at);
CREATE INDEX deliveries_event ON deliveries (event_id);

-- Every attempt: when, how long, and what came back.
CREATE TABLE delivery_attempts (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    at          BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    status_code BIGINT,
    error       TEXT,
    response    TEXT,                        -- the start of the answer's body
    manual      BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, id);

-- Alerts fired: once per user, meter, period and threshold ('threshold'
-- rows) or exhaustion ('exhausted', threshold 100), across restarts.
CREATE TABLE usage_alerts (
    user_id      TEXT NOT NULL,
    meter        TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    kind         TEXT NOT NULL,
    threshold    BIGINT NOT NULL,
    event_id     TEXT NOT NULL,
    fired_at     BIGINT NOT NULL,
    PRIMARY KEY (user_id, meter, period_start, kind, threshold)
);

-- Stripe events applied (or acknowledged), by Stripe's event id: a replay
-- finds its row and changes nothing.
CREATE TABLE stripe_events (
    id          TEXT PRIMARY KEY,
    type        TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
