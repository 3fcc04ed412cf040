-- Remote signing credentials (CSC API v2): a citizen's signing key on the signing
-- service's HSM with its qualified certificate. The citizen's signing PIN is kept only
-- as an Argon2id hash; wrong PINs in a row lock the credential.
CREATE TABLE csc_credential (
    credential_id  TEXT    PRIMARY KEY,
    national_id    TEXT    NOT NULL,
    key_label      TEXT    NOT NULL UNIQUE,
    certificate    BLOB    NOT NULL,
    serial         TEXT    NOT NULL,
    -- active, locked (too many wrong PINs), disabled
    status         TEXT    NOT NULL,
    pin_hash       TEXT    NOT NULL,
    pin_failures   INTEGER NOT NULL,
    created_by     TEXT    NOT NULL,
    created_at     BIGINT  NOT NULL,
    updated_at     BIGINT  NOT NULL
);
CREATE INDEX csc_credential_national_id ON csc_credential (national_id);

-- Signature activation data (SCAL2): bound to one credential, one client and the exact
-- hashes; single use, short-lived. Kept only as the SHA-256 of the SAD. An access
-- token that itself authorises a credential (authorization_details) is recorded here
-- too, by its jti, when it is spent.
CREATE TABLE csc_authorization (
    sad_sha256      TEXT    PRIMARY KEY,
    credential_id   TEXT    NOT NULL REFERENCES csc_credential (credential_id),
    client_id       TEXT    NOT NULL,
    hash_algorithm  TEXT    NOT NULL,
    -- JSON array of the authorised hashes (base64)
    hashes          TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    expires_at      BIGINT  NOT NULL,
    used_at         BIGINT
);
CREATE INDEX csc_authorization_credential ON csc_authorization (credential_id);
