-- The lifecycle of an identity at the desk: suspension and resumption of its
-- certificates (a lost card, then found), card replacement, PIN unblocking with the PUK,
-- and deactivation (death, with the reason). Expand only: an older binary keeps working.

-- When the status last changed (the status query of relying services says since when).
ALTER TABLE enrol_application ADD COLUMN status_since BIGINT;
UPDATE enrol_application SET status_since = updated_at;

-- One row per lifecycle step, with who did it where: clerk, supervisor (who approved a
-- deactivation), desk and centre. `reason` is a category from a fixed list, `note` the
-- clerk's words, `serials` the certificates whose status changed (JSON array).
CREATE TABLE enrol_lifecycle (
    event_id        TEXT     PRIMARY KEY,
    application_id  TEXT     NOT NULL REFERENCES enrol_application (application_id),
    action          TEXT     NOT NULL CHECK (action IN ('suspend', 'resume', 'deactivate',
                        'replace', 'unblock')),
    reason          TEXT,
    note            TEXT,
    serials         TEXT     NOT NULL,
    token_id        TEXT,
    clerk_id        TEXT     NOT NULL,
    supervisor_id   TEXT,
    desk_id         TEXT     NOT NULL,
    centre_id       TEXT     NOT NULL,
    created_at      BIGINT   NOT NULL
);
CREATE INDEX enrol_lifecycle_application ON enrol_lifecycle (application_id, created_at);

-- A replacement card's activation names the lifecycle step that retired the old card.
ALTER TABLE enrol_activation ADD COLUMN replaces TEXT;

-- enrol_record holds an identity's current sealed record; when a replacement card is
-- activated, the record it supersedes moves here (the new record names its hash).
CREATE TABLE enrol_record_history (
    sha256          TEXT     PRIMARY KEY,
    application_id  TEXT     NOT NULL REFERENCES enrol_application (application_id),
    record          TEXT     NOT NULL,
    signature       BYTEA    NOT NULL,
    seal_key        TEXT     NOT NULL,
    desk_id         TEXT     NOT NULL,
    created_at      BIGINT   NOT NULL,
    superseded_at   BIGINT   NOT NULL
);
CREATE INDEX enrol_record_history_application ON enrol_record_history (application_id);
