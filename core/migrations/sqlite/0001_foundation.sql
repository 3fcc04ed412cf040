-- The instance record: one row, written by `eid init` in the same transaction as its
-- audit event. Its presence is what makes a data folder "initialised".
CREATE TABLE instance (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    instance_id   TEXT    NOT NULL,
    created_at    TEXT    NOT NULL,
    audit_key     TEXT    NOT NULL
);

-- The audit log: append-only and hash-chained. Each entry's hash covers its fields and
-- the previous entry's hash (see eid-core audit.rs for the exact encoding).
CREATE TABLE audit_log (
    seq           INTEGER PRIMARY KEY,
    recorded_at   TEXT    NOT NULL,
    actor         TEXT    NOT NULL,
    action        TEXT    NOT NULL,
    object_type   TEXT    NOT NULL,
    object_id     TEXT    NOT NULL,
    outcome       TEXT    NOT NULL,
    details       TEXT    NOT NULL,
    prev_hash     TEXT    NOT NULL,
    hash          TEXT    NOT NULL
);

-- The head of the chain: appending locks this row, which serialises writers and
-- keeps the chain linear.
CREATE TABLE audit_head (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    seq           INTEGER NOT NULL,
    hash          TEXT    NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Signed checkpoints: a service key signs the head at intervals, so rewriting the
-- chain (even with recomputed hashes) or cutting its tail is detected.
CREATE TABLE audit_checkpoint (
    upto_seq      INTEGER PRIMARY KEY,
    head_hash     TEXT    NOT NULL,
    signed_at     TEXT    NOT NULL,
    key_label     TEXT    NOT NULL,
    scheme        TEXT    NOT NULL,
    public_key    TEXT    NOT NULL,
    signature     TEXT    NOT NULL
);

-- Append-only in the database too: the application never updates or deletes these rows.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_checkpoint_no_update BEFORE UPDATE ON audit_checkpoint
BEGIN SELECT RAISE(ABORT, 'audit_checkpoint is append-only'); END;
CREATE TRIGGER audit_checkpoint_no_delete BEFORE DELETE ON audit_checkpoint
BEGIN SELECT RAISE(ABORT, 'audit_checkpoint is append-only'); END;
