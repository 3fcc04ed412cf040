-- A card activation whose certificates could not be issued because the CA was not
-- reachable waits in state `queued`, its certificate requests (signed on the card while
-- the citizen's PINs were at hand) and the key evidence kept in `queued_requests`
-- (JSON), until the desk reaches the CA again; a process working on one claims it
-- (`queue_claimed_at`) so that two never ask the CA for the same card. SQLite cannot change a CHECK constraint
-- in place: the table is rebuilt with the wider list (a superset).
CREATE TABLE enrol_activation_next (
    activation_id    TEXT    PRIMARY KEY,
    application_id   TEXT    NOT NULL REFERENCES enrol_application (application_id),
    carrier          TEXT    NOT NULL CHECK (carrier IN ('card', 'sim', 'remote')),
    token_id         TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('started', 'keys', 'queued',
                         'certified', 'written', 'done', 'failed', 'cleaned')),
    auth_serial      TEXT,
    sign_serial      TEXT,
    token_serials    TEXT,
    error            TEXT,
    clerk_id         TEXT    NOT NULL,
    desk_id          TEXT    NOT NULL,
    created_at       INTEGER  NOT NULL,
    updated_at       INTEGER  NOT NULL,
    replaces         TEXT,
    queued_requests  TEXT,
    queued_at        INTEGER,
    queue_attempts   INTEGER  NOT NULL DEFAULT 0,
    queue_claimed_at INTEGER
);
INSERT INTO enrol_activation_next (activation_id, application_id, carrier, token_id, state,
    auth_serial, sign_serial, token_serials, error, clerk_id, desk_id, created_at, updated_at,
    replaces)
SELECT activation_id, application_id, carrier, token_id, state, auth_serial, sign_serial,
    token_serials, error, clerk_id, desk_id, created_at, updated_at, replaces
FROM enrol_activation;
DROP TABLE enrol_activation;
ALTER TABLE enrol_activation_next RENAME TO enrol_activation;
CREATE INDEX enrol_activation_application ON enrol_activation (application_id);
CREATE UNIQUE INDEX enrol_activation_running ON enrol_activation (application_id)
    WHERE state NOT IN ('done', 'failed', 'cleaned');
CREATE INDEX enrol_activation_queued ON enrol_activation (queued_at) WHERE state = 'queued';
