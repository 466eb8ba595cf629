-- The responses a provider stores for the gateway's callers (OpenAI's
-- Responses API keeps each one unless asked not to), by the id the provider
-- gave: who made it, through which provider, in which ledger event. The
-- gateway serves GET, DELETE, input_items and cancel of a stored response
-- only to the user who made it. Written with the event, in its transaction.
CREATE TABLE gateway_responses (
    response_id TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    provider    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
