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
       json_extract(details, '$.gen_time') AS gen_time,
       json_extract(details, '$.policy') AS policy,
       json_extract(details, '$.hash_algorithm') AS hash_algorithm,
       json_extract(details, '$.message_imprint') AS message_imprint,
       json_extract(details, '$.nonce') AS nonce,
       json_extract(details, '$.tsu_serial') AS tsu_serial
FROM audit_log
WHERE action = 'tsa.timestamp.issue';
