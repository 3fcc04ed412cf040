-- Mobile-ID authentications the idp asked the operator's gateway for: from the login
-- page (purpose 'login', tied to an interaction) or for a CIBA request (purpose 'ciba').
-- The hash the SIM is to sign is kept with the gateway's session id, so whichever idp
-- process polls the gateway checks the answer against what was asked.
CREATE TABLE idp_mobile_auth (
    auth_id          TEXT    PRIMARY KEY,
    purpose          TEXT    NOT NULL,
    interaction_id   TEXT,
    phone_number     TEXT    NOT NULL,
    national_id      TEXT    NOT NULL,
    hash             TEXT    NOT NULL,
    gateway_session  TEXT    NOT NULL,
    -- pending, done (the citizen is authenticated), failed
    state            TEXT    NOT NULL,
    -- the gateway's result code, or why the answer was refused
    result           TEXT,
    citizen_id       TEXT,
    created_at       BIGINT  NOT NULL,
    expires_at       BIGINT  NOT NULL
);
CREATE INDEX idp_mobile_auth_interaction ON idp_mobile_auth (interaction_id);

-- CIBA requests (OpenID Connect CIBA Core 1.0): a relying party asked for a citizen
-- without a browser, and the citizen answers on the phone (mobile ID). auth_req_id is
-- kept only as its hash; once the citizen is authenticated, the grant and a code keyed
-- by the same hash are made, and the token endpoint redeems that like a code.
CREATE TABLE idp_ciba_request (
    auth_req_sha256     TEXT    PRIMARY KEY,
    client_id           TEXT    NOT NULL REFERENCES idp_client (client_id),
    scope               TEXT    NOT NULL,
    binding_message     TEXT,
    -- the mobile-ID request (idp_mobile_auth)
    auth_id             TEXT    NOT NULL,
    -- poll or ping
    mode                TEXT    NOT NULL,
    -- ping: the bearer token the client gave for its notification endpoint, and the
    -- auth_req_id the notification names (both dropped once it is sent)
    notification_token  TEXT,
    ping_auth_req_id    TEXT,
    -- pending, authenticated, denied
    state               TEXT    NOT NULL,
    result              TEXT,
    poll_interval       BIGINT  NOT NULL,
    last_polled_at      BIGINT,
    -- when a provider process last waited at the gateway for the answer: a request
    -- nobody has watched for a minute (its process stopped) is taken up by another
    watched_at          BIGINT,
    created_at          BIGINT  NOT NULL,
    expires_at          BIGINT  NOT NULL
);

-- A signature made on a citizen's SIM: the gateway's session that asks the SIM for it.
ALTER TABLE pending_signature ADD COLUMN mobile_session TEXT;
