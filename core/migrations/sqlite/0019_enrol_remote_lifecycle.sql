-- Unlocking and withdrawing a remote signing credential at the desk are lifecycle steps
-- of the identity, so the next sealed record binds them like the card's. SQLite cannot
-- change a CHECK constraint in place: the table is rebuilt with the wider list (a
-- superset: an older binary's steps still fit).
CREATE TABLE enrol_lifecycle_next (
    event_id        TEXT     PRIMARY KEY,
    application_id  TEXT     NOT NULL REFERENCES enrol_application (application_id),
    action          TEXT     NOT NULL CHECK (action IN ('suspend', 'resume', 'deactivate',
                        'replace', 'unblock', 'remote-unlock', 'remote-withdraw')),
    reason          TEXT,
    note            TEXT,
    serials         TEXT     NOT NULL,
    token_id        TEXT,
    clerk_id        TEXT     NOT NULL,
    supervisor_id   TEXT,
    desk_id         TEXT     NOT NULL,
    centre_id       TEXT     NOT NULL,
    created_at      INTEGER  NOT NULL
);
INSERT INTO enrol_lifecycle_next (event_id, application_id, action, reason, note, serials,
    token_id, clerk_id, supervisor_id, desk_id, centre_id, created_at)
SELECT event_id, application_id, action, reason, note, serials, token_id, clerk_id,
    supervisor_id, desk_id, centre_id, created_at FROM enrol_lifecycle;
DROP TABLE enrol_lifecycle;
ALTER TABLE enrol_lifecycle_next RENAME TO enrol_lifecycle;
CREATE INDEX enrol_lifecycle_application ON enrol_lifecycle (application_id, created_at);
