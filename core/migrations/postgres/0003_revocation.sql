-- Pre-produced OCSP responses (RFC 5019), one per certificate, replaced whenever the
-- certificate's status changes and re-signed before they expire.
CREATE TABLE ocsp_response (
    serial        TEXT    NOT NULL REFERENCES certificate (serial),
    cert_id_hash  TEXT    NOT NULL CHECK (cert_id_hash IN ('sha1', 'sha256')),
    status        TEXT    NOT NULL,
    this_update   TEXT    NOT NULL,
    next_update   TEXT    NOT NULL,
    der           BYTEA   NOT NULL,
    PRIMARY KEY (serial, cert_id_hash)
);

-- CRLs per issuing CA, numbered monotonically (RFC 5280 5.2.3). A delta CRL names the
-- full CRL it updates in delta_base.
CREATE TABLE crl (
    issuer_role   TEXT    NOT NULL REFERENCES ca_certificate (role),
    crl_number    BIGINT  NOT NULL,
    delta_base    BIGINT,
    this_update   TEXT    NOT NULL,
    next_update   TEXT    NOT NULL,
    der           BYTEA   NOT NULL,
    PRIMARY KEY (issuer_role, crl_number)
);

-- Bumped with every revocation-status change, in the same transaction, so a running
-- responder learns of changes another process (eid ca revoke) made.
CREATE TABLE revocation_epoch (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    epoch         BIGINT  NOT NULL
);
INSERT INTO revocation_epoch (id, epoch) VALUES (1, 0);
