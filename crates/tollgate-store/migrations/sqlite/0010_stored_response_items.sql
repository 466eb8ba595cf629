-- The output items of a stored response (OpenAI's `msg_…`, `rs_…`, `fc_…`),
-- which a later request may name by id (`item_reference`) instead of
-- giving them: a row each, owned as the response is, with `item_of`
-- naming the response (NULL on the response's own row). The gateway
-- passes such a reference on only for the user who made the item, and
-- forgets the items with their response.
ALTER TABLE gateway_responses ADD COLUMN item_of TEXT;
CREATE INDEX gateway_responses_item_of ON gateway_responses (item_of) WHERE item_of IS NOT NULL;
