-- Besides responses, what else a provider keeps for a user that a later
-- call may name by id: a response's output items (OpenAI's `msg_…`,
-- `rs_…`, `fc_…`, named in an input by `item_reference`; `item_of` names
-- the response or conversation holding them), and conversations (OpenAI's
-- Conversations API). Each is owned as a response is: the gateway passes a
-- call that names one on only for the user who made it (or saw it listed
-- in something of theirs), and forgets the items with what holds them.
ALTER TABLE gateway_responses ADD COLUMN kind TEXT NOT NULL DEFAULT 'response';
ALTER TABLE gateway_responses ADD COLUMN item_of TEXT;
CREATE INDEX gateway_responses_item_of ON gateway_responses (item_of) WHERE item_of IS NOT NULL;
