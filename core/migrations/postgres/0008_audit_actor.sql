-- The citizen's self-service page lists their recent logins from the audit log: find a
-- citizen's entries without scanning the whole chain.
CREATE INDEX audit_log_actor ON audit_log (actor, seq);
