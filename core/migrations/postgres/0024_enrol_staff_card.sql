-- Staff may log in at the desk with their own ID card: the national identity number
-- its authentication certificate names (serialNumber PNO<CC>-<id>).
ALTER TABLE enrol_staff ADD COLUMN national_id TEXT;
CREATE UNIQUE INDEX enrol_staff_national_id ON enrol_staff (national_id);

-- A desk login with an ID card: begun at a registered desk (bound to it), proved on the
-- card listener by the TLS client certificate, finished back at that desk with a
-- one-time hand-off whose hash is kept here.
CREATE TABLE enrol_card_login (
    login_id      TEXT    PRIMARY KEY,
    desk_id       TEXT    NOT NULL,
    staff_id      TEXT,
    certificate   TEXT,
    handoff_hash  TEXT,
    created_at    BIGINT  NOT NULL,
    expires_at    BIGINT  NOT NULL,
    proved_at     BIGINT,
    used_at       BIGINT
);
