-- The SIM gateway simulator's registry (development, tests and pilots): which
-- simulated SIM (a PKCS#11 card of class sim) answers for which phone number and
-- national identity number, and the PIN tries the simulator counts itself, because
-- SoftHSM2 never blocks a PIN. Kept across restarts so a blocked PIN stays blocked.
CREATE TABLE sim_gateway_sim (
    phone_number    TEXT     PRIMARY KEY,
    national_id     TEXT     NOT NULL,
    card_id         TEXT     NOT NULL UNIQUE,
    pin1_failures   INTEGER  NOT NULL DEFAULT 0,
    pin2_failures   INTEGER  NOT NULL DEFAULT 0,
    puk_failures    INTEGER  NOT NULL DEFAULT 0,
    created_at      INTEGER  NOT NULL
);
