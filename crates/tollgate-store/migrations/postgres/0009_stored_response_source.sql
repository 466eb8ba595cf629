-- Which credential made a stored response: the user's own key (`byok`)
-- or the platform's. The response is in that provider account, and is
-- fetched with that credential whatever the user holds now.
ALTER TABLE gateway_responses ADD COLUMN key_source TEXT NOT NULL DEFAULT 'platform';
