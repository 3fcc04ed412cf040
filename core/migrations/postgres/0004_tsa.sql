-- Every time-stamp token the TSA issued (ETSI EN 319 421 asks for the records of
-- issued tokens to be kept): written in the transaction that also appends its audit
-- entry, before the token is released. The primary key is the final guard that no
-- serial number repeats, across restarts and replicas.
CREATE TABLE timestamp_token (
    serial          TEXT    PRIMARY KEY,
    gen_time        TEXT    NOT NULL,
    policy          TEXT    NOT NULL,
    hash_algorithm  TEXT    NOT NULL,
    message_imprint TEXT    NOT NULL,
    nonce           TEXT,
    tsu_serial      TEXT    NOT NULL
);
