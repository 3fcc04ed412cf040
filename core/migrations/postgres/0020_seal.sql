-- Organisation e-seals: an organisation's seal key on the signing service's HSM with
-- its qualified seal certificate (EN 319 412-3). Only the clients listed in
-- seal_client may seal with it; a withdrawn seal's certificate is revoked and its key
-- destroyed, the row stays for the record.
CREATE TABLE seal (
    seal_id          TEXT    PRIMARY KEY,
    organisation     TEXT    NOT NULL,
    organisation_id  TEXT    NOT NULL,
    name             TEXT    NOT NULL,
    key_label        TEXT    NOT NULL UNIQUE,
    certificate      BYTEA   NOT NULL,
    serial           TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('active', 'withdrawn')),
    created_by       TEXT    NOT NULL,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL
);
CREATE INDEX seal_organisation ON seal (organisation_id);

-- The OAuth clients (of our identity provider, client credentials grant) allowed to
-- seal with a seal.
CREATE TABLE seal_client (
    seal_id    TEXT    NOT NULL REFERENCES seal (seal_id),
    client_id  TEXT    NOT NULL,
    added_by   TEXT    NOT NULL,
    added_at   BIGINT  NOT NULL,
    PRIMARY KEY (seal_id, client_id)
);
