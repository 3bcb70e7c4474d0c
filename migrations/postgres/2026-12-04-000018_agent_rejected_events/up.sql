-- Updates from an agent that the brain refused to store (numbers that cannot be true, a value
-- the store rejects even alone), counted here beside the agent's own dropped count, with the
-- latest reason: the operator sees on the agent that something it sent was not recorded.
ALTER TABLE agents ADD COLUMN rejected_events BIGINT NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN last_rejection TEXT;
