-- Users' own provider credentials, one per (user, provider), sealed with
-- AES-256-GCM under a master key (AAD = user_id|provider). Only the
-- ciphertext is kept; `last4` and `label` are for display.
CREATE TABLE credentials (
    user_id            TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider           TEXT NOT NULL,
    label              TEXT,
    last4              TEXT NOT NULL,
    key_id             TEXT NOT NULL,        -- the master key's id (8 hex digits)
    nonce              BYTEA NOT NULL,       -- 12 random bytes
    ciphertext         BYTEA NOT NULL,       -- with the 16-byte tag
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    last_used_at       BIGINT,
    validation         TEXT,                 -- 'valid', 'invalid', 'unreachable'
    validation_message TEXT,
    validated_at       BIGINT,
    PRIMARY KEY (user_id, provider)
);
-- Rotation finds what is not yet under the current key.
CREATE INDEX credentials_key_id ON credentials (key_id);

-- Who did what, to which thing, from where. Never a secret. Kept when the
-- user it concerns is deleted.
CREATE TABLE audit_log (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        BIGINT NOT NULL,
    actor     TEXT NOT NULL,                 -- 'admin', 'system' or a key id
    action    TEXT NOT NULL,                 -- 'credential.set', 'key.revoked', …
    target    TEXT NOT NULL,
    user_id   TEXT,
    client_ip TEXT,
    details   TEXT NOT NULL                  -- JSON object of strings
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_user ON audit_log (user_id, id);
