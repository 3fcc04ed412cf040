-- Each issued time-stamp token is recorded once, as its audit entry
-- (`tsa.timestamp.issue`: object_id the serial; details genTime, policy, imprint,
-- nonce, TSU serial), appended before the token is released. A table of their own
-- repeated every entry's facts outside the chain. This index is now the final guard
-- that no serial repeats, across restarts and replicas.
CREATE UNIQUE INDEX audit_log_tsa_serial ON audit_log (object_id)
    WHERE action = 'tsa.timestamp.issue';

-- The rows written before, kept as they were: their audit entries carry the same
-- facts but the nonce.
ALTER TABLE timestamp_token RENAME TO timestamp_token_until_0026;

-- The issued tokens, read as the table they were.
CREATE VIEW timestamp_token AS
SELECT object_id AS serial,
       (details::json ->> 'gen_time') AS gen_time,
       (details::json ->> 'policy') AS policy,
       (details::json ->> 'hash_algorithm') AS hash_algorithm,
       (details::json ->> 'message_imprint') AS message_imprint,
       (details::json ->> 'nonce') AS nonce,
       (details::json ->> 'tsu_serial') AS tsu_serial
FROM audit_log
WHERE action = 'tsa.timestamp.issue';
