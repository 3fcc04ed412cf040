-- A card activation whose certificates could not be issued because the CA was not
-- reachable waits in state `queued`, its certificate requests (signed on the card while
-- the citizen's PINs were at hand) and the key evidence kept in `queued_requests`
-- (JSON), until the desk reaches the CA again; a process working on one claims it
-- (`queue_claimed_at`) so that two never ask the CA for the same card. The list of states grows (a superset).
ALTER TABLE enrol_activation DROP CONSTRAINT enrol_activation_state_check;
ALTER TABLE enrol_activation ADD CONSTRAINT enrol_activation_state_check
    CHECK (state IN ('started', 'keys', 'queued', 'certified', 'written', 'done', 'failed',
                     'cleaned'));
ALTER TABLE enrol_activation ADD COLUMN queued_requests TEXT;
ALTER TABLE enrol_activation ADD COLUMN queued_at BIGINT;
ALTER TABLE enrol_activation ADD COLUMN queue_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE enrol_activation ADD COLUMN queue_claimed_at BIGINT;
CREATE INDEX enrol_activation_queued ON enrol_activation (queued_at) WHERE state = 'queued';
