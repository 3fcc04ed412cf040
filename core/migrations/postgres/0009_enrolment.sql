-- The enrolment desk: service centres and their registered desk workstations, staff with
-- their roles and passkeys, citizens' applications, the identity evidence recorded at the
-- desk, supervisors' decisions, token activations and the sealed enrolment records.

CREATE TABLE enrol_centre (
    centre_id    TEXT    PRIMARY KEY,
    name         TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL
);

-- A desk workstation: its browser holds a long-lived desk cookie (only the hash is here),
-- and its records are sealed with its own key in the key store.
CREATE TABLE enrol_desk (
    desk_id         TEXT    PRIMARY KEY,
    centre_id       TEXT    NOT NULL REFERENCES enrol_centre (centre_id),
    name            TEXT    NOT NULL,
    seal_key        TEXT    NOT NULL,
    cookie_hash     TEXT    UNIQUE,
    created_at      BIGINT  NOT NULL,
    registered_at   BIGINT,
    retired_at      BIGINT
);

CREATE TABLE enrol_staff (
    staff_id     TEXT    PRIMARY KEY,
    name         TEXT    NOT NULL,
    role         TEXT    NOT NULL CHECK (role IN ('clerk', 'supervisor', 'administrator')),
    centre_id    TEXT    NOT NULL REFERENCES enrol_centre (centre_id),
    created_at   BIGINT  NOT NULL,
    disabled_at  BIGINT
);

CREATE TABLE enrol_staff_passkey (
    credential_id  TEXT    PRIMARY KEY,
    staff_id       TEXT    NOT NULL REFERENCES enrol_staff (staff_id),
    passkey        TEXT    NOT NULL,
    created_at     BIGINT  NOT NULL,
    last_used_at   BIGINT
);
CREATE INDEX enrol_staff_passkey_staff ON enrol_staff_passkey (staff_id);

-- One-time links: a staff member's passkey enrolment, a workstation's registration.
CREATE TABLE enrol_link (
    link_hash    TEXT    PRIMARY KEY,
    kind         TEXT    NOT NULL CHECK (kind IN ('staff-passkey', 'desk')),
    subject_id   TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL,
    used_at      BIGINT
);

CREATE TABLE enrol_webauthn_ceremony (
    ceremony_id  TEXT    PRIMARY KEY,
    kind         TEXT    NOT NULL CHECK (kind IN ('register', 'login', 'approve')),
    staff_id     TEXT,
    desk_id      TEXT    NOT NULL,
    context      TEXT,
    state        TEXT    NOT NULL,
    expires_at   BIGINT  NOT NULL,
    used_at      BIGINT
);

CREATE TABLE enrol_session (
    session_hash  TEXT    PRIMARY KEY,
    staff_id      TEXT    NOT NULL REFERENCES enrol_staff (staff_id),
    desk_id       TEXT    NOT NULL REFERENCES enrol_desk (desk_id),
    created_at    BIGINT  NOT NULL,
    expires_at    BIGINT  NOT NULL,
    ended_at      BIGINT
);

-- A citizen's application. Nothing can log in with it until an activation succeeds.
CREATE TABLE enrol_application (
    application_id  TEXT    PRIMARY KEY,
    reference       TEXT    NOT NULL UNIQUE,
    national_id     TEXT    NOT NULL UNIQUE,
    given_name      TEXT    NOT NULL,
    family_name     TEXT    NOT NULL,
    birth_date      TEXT    NOT NULL,
    email           TEXT,
    phone           TEXT,
    address         TEXT    NOT NULL,
    name_key        TEXT    NOT NULL,
    duplicate_of    TEXT,
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'approved', 'rejected',
                        'active', 'suspended', 'deactivated')),
    status_reason   TEXT,
    consent_at      BIGINT,
    consent_by      TEXT,
    version         BIGINT  NOT NULL,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL
);
CREATE INDEX enrol_application_name_key ON enrol_application (name_key);

-- An identity document the clerk examined. A refused entry is not stored: only
-- documents that passed every check.
CREATE TABLE enrol_document (
    document_id      TEXT    PRIMARY KEY,
    application_id   TEXT    NOT NULL REFERENCES enrol_application (application_id),
    doc_type         TEXT    NOT NULL,
    issuer           TEXT    NOT NULL,
    number           TEXT    NOT NULL,
    expiry           TEXT    NOT NULL,
    mrz              TEXT,
    surname          TEXT,
    given_names      TEXT,
    birth_date       TEXT,
    name_matches     INTEGER NOT NULL,
    birth_matches    INTEGER NOT NULL,
    recorded_by      TEXT    NOT NULL,
    desk_id          TEXT    NOT NULL,
    created_at       BIGINT  NOT NULL,
    UNIQUE (application_id, doc_type, number)
);

CREATE TABLE enrol_photo (
    application_id  TEXT    PRIMARY KEY REFERENCES enrol_application (application_id),
    image           BYTEA   NOT NULL,
    media_type      TEXT    NOT NULL,
    sha256          TEXT    NOT NULL,
    recorded_by     TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL
);

-- Decisions: a supervisor's approval of an exception, a case's approval or rejection.
CREATE TABLE enrol_decision (
    decision_id     TEXT    PRIMARY KEY,
    application_id  TEXT    NOT NULL REFERENCES enrol_application (application_id),
    kind            TEXT    NOT NULL CHECK (kind IN ('exception', 'approve', 'reject')),
    clerk_id        TEXT    NOT NULL,
    supervisor_id   TEXT,
    desk_id         TEXT    NOT NULL,
    reason          TEXT,
    created_at      BIGINT  NOT NULL
);
CREATE INDEX enrol_decision_application ON enrol_decision (application_id);

-- A token activation, step by step, so a retry after a crash or a pulled card knows what
-- was done: the certificates issued, whether they went on the token.
CREATE TABLE enrol_activation (
    activation_id    TEXT    PRIMARY KEY,
    application_id   TEXT    NOT NULL REFERENCES enrol_application (application_id),
    carrier          TEXT    NOT NULL CHECK (carrier IN ('card', 'sim', 'remote')),
    token_id         TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('started', 'keys', 'certified',
                         'written', 'done', 'failed', 'cleaned')),
    auth_serial      TEXT,
    sign_serial      TEXT,
    token_serials    TEXT,
    error            TEXT,
    clerk_id         TEXT    NOT NULL,
    desk_id          TEXT    NOT NULL,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL
);
CREATE INDEX enrol_activation_application ON enrol_activation (application_id);

-- The sealed record of a finished enrolment: its canonical JSON, the hash, the desk's
-- signature over the hash, and the approvals bound to it.
CREATE TABLE enrol_record (
    application_id  TEXT    PRIMARY KEY REFERENCES enrol_application (application_id),
    record          TEXT    NOT NULL,
    sha256          TEXT    NOT NULL,
    signature       BYTEA   NOT NULL,
    seal_key        TEXT    NOT NULL,
    desk_id         TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL
);
