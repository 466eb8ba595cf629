-- Sessions of the web pages (/ui for the admin, /portal for a user). The
-- session id lives only in the browser's cookie; this table keeps its
-- SHA-256.
CREATE TABLE web_sessions (
    id_hash    TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,              -- 'admin' or 'portal'
    user_id    TEXT REFERENCES users (id) ON DELETE CASCADE,
    key_id     TEXT,                       -- the gateway key a portal sign-in used
    scopes     TEXT NOT NULL,              -- what the session may do, space-separated
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX web_sessions_expires ON web_sessions (expires_at);

-- Ids of one-time portal links already opened, kept until the link would
-- have expired anyway, so that a second use fails on every instance.
CREATE TABLE portal_links_used (
    id         TEXT PRIMARY KEY,
    used_at    INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX portal_links_used_expires ON portal_links_used (expires_at);

-- Where the portal's upgrade button for a plan goes (a Stripe payment
-- link, say); NULL: the configured upgrade URL.
ALTER TABLE plans ADD COLUMN payment_link TEXT;
