-- Citizens' passkeys (WebAuthn credentials), added from a high-level session and used to
-- log in at level substantial. The credential as webauthn-rs stores it, as JSON.
CREATE TABLE idp_passkey (
    credential_id  TEXT    PRIMARY KEY,
    citizen_id     TEXT    NOT NULL REFERENCES idp_citizen (citizen_id),
    name           TEXT    NOT NULL,
    passkey        TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    last_used_at   INTEGER,
    removed_at     INTEGER
);
CREATE INDEX idp_passkey_citizen ON idp_passkey (citizen_id);

-- A WebAuthn ceremony between its two steps: the challenge state stays here, server-side,
-- and is used once.
CREATE TABLE idp_webauthn_ceremony (
    ceremony_id     TEXT    PRIMARY KEY,
    kind            TEXT    NOT NULL CHECK (kind IN ('register', 'login')),
    citizen_id      TEXT    NOT NULL,
    interaction_id  TEXT,
    state           TEXT    NOT NULL,
    expires_at      INTEGER NOT NULL,
    used_at         INTEGER
);
