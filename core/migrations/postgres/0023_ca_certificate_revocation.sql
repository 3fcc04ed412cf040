-- A CA certificate (an issuing CA, an OCSP responder, the time-stamping unit, the idp's
-- TLS certificate) can be revoked by its issuer: the issuer's next CRL lists it, and a
-- revoked issuing CA signs nothing more.
ALTER TABLE ca_certificate ADD COLUMN revoked_at TEXT;
ALTER TABLE ca_certificate ADD COLUMN revocation_reason TEXT;

-- A revoked CA certificate whose role was given a new key and certificate (re-keyed):
-- kept so that its issuer's CRLs go on listing it until it expires.
CREATE TABLE ca_certificate_retired (
    serial             TEXT    PRIMARY KEY,
    role               TEXT    NOT NULL,
    issuer_role        TEXT,
    key_label          TEXT    NOT NULL,
    subject            TEXT    NOT NULL,
    not_before         TEXT    NOT NULL,
    not_after          TEXT    NOT NULL,
    der                BYTEA   NOT NULL,
    revoked_at         TEXT    NOT NULL,
    revocation_reason  TEXT    NOT NULL,
    retired_at         TEXT    NOT NULL
);
CREATE INDEX ca_certificate_retired_issuer ON ca_certificate_retired (issuer_role, not_after);
