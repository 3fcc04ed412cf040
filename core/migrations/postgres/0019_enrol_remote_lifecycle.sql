-- Unlocking and withdrawing a remote signing credential at the desk are lifecycle steps
-- of the identity, so the next sealed record binds them like the card's. The list of
-- steps grows (a superset: an older binary's steps still fit).
ALTER TABLE enrol_lifecycle DROP CONSTRAINT enrol_lifecycle_action_check;
ALTER TABLE enrol_lifecycle ADD CONSTRAINT enrol_lifecycle_action_check
    CHECK (action IN ('suspend', 'resume', 'deactivate', 'replace', 'unblock',
                      'remote-unlock', 'remote-withdraw'));
