-- The OpenID Connect provider. Times are Unix seconds; secrets and tokens are stored
-- only as SHA-256 hashes (hex), so a database read does not yield a usable credential.

-- Relying parties. The registration (redirect URIs, scopes, levels, auth method, ...) is
-- one JSON document, checked by the idp when written; removed clients keep their row so
-- the audit log's references stay meaningful.
CREATE TABLE idp_client (
    client_id      TEXT    PRIMARY KEY,
    name           TEXT    NOT NULL,
    secret_sha256  TEXT,
    metadata       TEXT    NOT NULL,
    created_at     BIGINT NOT NULL,
    removed_at     BIGINT
);

-- Token-signing keys (in the key layer under key_label). 'published' keys are in the
-- JWKS but not yet used, so relying parties have them before the first token; the
-- 'active' one signs; 'retired' ones stay published until remove_after.
CREATE TABLE idp_signing_key (
    kid           TEXT    PRIMARY KEY,
    key_label     TEXT    NOT NULL UNIQUE,
    alg           TEXT    NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('published', 'active', 'retired')),
    created_at    BIGINT NOT NULL,
    activated_at  BIGINT,
    retired_at    BIGINT,
    remove_after  BIGINT
);
CREATE UNIQUE INDEX idp_signing_key_one_active ON idp_signing_key (state) WHERE state = 'active';

-- Values the provider generates once (the pairwise-subject salt).
CREATE TABLE idp_setting (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

-- Citizens known to the provider: created at first login from the authentication
-- certificate (or by enrolment), keyed by the national identity number.
CREATE TABLE idp_citizen (
    citizen_id   TEXT    PRIMARY KEY,
    national_id  TEXT    NOT NULL UNIQUE,
    given_name   TEXT    NOT NULL,
    family_name  TEXT    NOT NULL,
    birthdate    TEXT,
    email        TEXT,
    phone_number TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

-- One authorization request in progress in one browser (bound by the browser cookie's
-- hash): from /authorize through login and consent to the code.
CREATE TABLE idp_interaction (
    interaction_id  TEXT    PRIMARY KEY,
    browser_sha256  TEXT    NOT NULL,
    client_id       TEXT    NOT NULL,
    request         TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('login', 'authenticated', 'consent', 'done', 'failed')),
    citizen_id      TEXT,
    acr             TEXT,
    amr             TEXT,
    auth_time       BIGINT,
    handoff_sha256  TEXT,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL
);

-- Pushed authorization requests (RFC 9126), used once.
CREATE TABLE idp_pushed_request (
    request_uri   TEXT    PRIMARY KEY,
    client_id     TEXT    NOT NULL,
    request       TEXT    NOT NULL,
    expires_at    BIGINT NOT NULL,
    used_at       BIGINT
);

-- Browser sessions (single sign-on), found by the session cookie's hash.
CREATE TABLE idp_session (
    sid            TEXT    PRIMARY KEY,
    cookie_sha256  TEXT    NOT NULL UNIQUE,
    citizen_id     TEXT    NOT NULL REFERENCES idp_citizen (citizen_id),
    acr            TEXT    NOT NULL,
    amr            TEXT    NOT NULL,
    auth_time      BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    ended_at       BIGINT
);
CREATE INDEX idp_session_citizen ON idp_session (citizen_id);

-- What a citizen allowed a client to have, remembered until revoked.
CREATE TABLE idp_consent (
    citizen_id  TEXT    NOT NULL REFERENCES idp_citizen (citizen_id),
    client_id   TEXT    NOT NULL REFERENCES idp_client (client_id),
    scopes      TEXT    NOT NULL,
    granted_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    PRIMARY KEY (citizen_id, client_id)
);

-- A grant: what one authorization (or client-credentials request) allowed. Codes,
-- refresh tokens and access tokens hang off it, so revoking it revokes them all.
CREATE TABLE idp_grant (
    grant_id    TEXT    PRIMARY KEY,
    client_id   TEXT    NOT NULL REFERENCES idp_client (client_id),
    citizen_id  TEXT,
    sid         TEXT,
    scope       TEXT    NOT NULL,
    acr         TEXT,
    amr         TEXT,
    auth_time   BIGINT,
    claims      TEXT,
    dpop_jkt    TEXT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX idp_grant_sid ON idp_grant (sid);

CREATE TABLE idp_code (
    code_sha256     TEXT    PRIMARY KEY,
    grant_id        TEXT    NOT NULL REFERENCES idp_grant (grant_id),
    redirect_uri    TEXT    NOT NULL,
    code_challenge  TEXT,
    nonce           TEXT,
    expires_at      BIGINT NOT NULL,
    used_at         BIGINT
);

-- Refresh tokens rotate: each use marks the token used and issues its successor; a used
-- token presented again is reuse, and revokes the grant.
CREATE TABLE idp_refresh_token (
    token_sha256  TEXT    PRIMARY KEY,
    grant_id      TEXT    NOT NULL REFERENCES idp_grant (grant_id),
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    used_at       BIGINT
);
CREATE INDEX idp_refresh_token_grant ON idp_refresh_token (grant_id);

-- Client assertions (private_key_jwt) already used, kept until they expire, so a
-- replayed assertion is refused (RFC 7523 3, item 7).
CREATE TABLE idp_client_assertion (
    jti_sha256  TEXT    PRIMARY KEY,
    client_id   TEXT    NOT NULL,
    expires_at  BIGINT NOT NULL
);
