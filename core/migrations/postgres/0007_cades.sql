-- CAdES signatures made in two steps, for keys on a citizen's card or SIM: prepare
-- stores the signed attributes the token must sign; finalize (once, before
-- expires_at) adds the signature value and stores the finished signature. The row
-- never holds the document, only its digest; certificate and cades are base64 DER.
CREATE TABLE pending_signature (
    id                TEXT    PRIMARY KEY,
    client            TEXT    NOT NULL,
    level             TEXT    NOT NULL,
    signer_serial     TEXT    NOT NULL,
    signer_issuer     TEXT    NOT NULL,
    certificate       TEXT    NOT NULL,
    digest_algorithm  TEXT    NOT NULL,
    document_digest   TEXT    NOT NULL,
    signature_scheme  TEXT    NOT NULL,
    signed_attributes TEXT    NOT NULL,
    created_at        TEXT    NOT NULL,
    expires_at        BIGINT  NOT NULL,
    state             TEXT    NOT NULL,
    finalized_at      TEXT,
    failure           TEXT,
    cades             TEXT
);
CREATE INDEX pending_signature_expiry ON pending_signature (state, expires_at);
