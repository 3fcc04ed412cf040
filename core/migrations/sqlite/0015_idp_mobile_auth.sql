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
