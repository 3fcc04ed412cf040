-- The CA hierarchy: one row per role (root, issuing CAs, OCSP responders, the
-- time-stamping unit, the idp's TLS server). Keys live in the key layer under key_label.
CREATE TABLE ca_certificate (
    role          TEXT    PRIMARY KEY,
    serial        TEXT    NOT NULL UNIQUE,
    issuer_role   TEXT,
    key_label     TEXT    NOT NULL,
    subject       TEXT    NOT NULL,
    not_before    TEXT    NOT NULL,
    not_after     TEXT    NOT NULL,
    der           BLOB   NOT NULL,
    created_at    TEXT    NOT NULL
);

-- Issued end-entity certificates. A row is written as 'planned' (with the linted TBS
-- it will carry) before the CA key is used, and becomes 'issued' with the signed
-- certificate, or 'failed'; boulder's "record of what we planned to sign".
CREATE TABLE certificate (
    serial             TEXT    PRIMARY KEY,
    issuer_role        TEXT    NOT NULL REFERENCES ca_certificate (role),
    profile            TEXT    NOT NULL,
    subject            TEXT    NOT NULL,
    national_id        TEXT    NOT NULL,
    spki_sha256        TEXT    NOT NULL,
    not_before         TEXT    NOT NULL,
    not_after          TEXT    NOT NULL,
    state              TEXT    NOT NULL CHECK (state IN ('planned', 'issued', 'failed')),
    tbs                BLOB   NOT NULL,
    der                BLOB,
    requested_by       TEXT    NOT NULL,
    created_at         TEXT    NOT NULL,
    revoked_at         TEXT,
    revocation_reason  TEXT
);
-- A key is certified once: a second request for the same public key (for any profile) is
-- refused. Failed attempts do not count.
CREATE UNIQUE INDEX certificate_key_once ON certificate (spki_sha256) WHERE state <> 'failed';
CREATE INDEX certificate_national_id ON certificate (national_id);
CREATE INDEX certificate_revoked ON certificate (issuer_role, revoked_at) WHERE revoked_at IS NOT NULL;
