-- Delta CRLs (RFC 5280 5.2.4). Every status change records the revocation epoch it
-- produced (status_epoch), and every CRL the epoch it was built at: a delta CRL lists
-- the certificates of its issuer whose status changed after its base CRL was built.
ALTER TABLE certificate ADD COLUMN status_epoch BIGINT;
ALTER TABLE crl ADD COLUMN epoch BIGINT;
CREATE INDEX certificate_status_epoch ON certificate (issuer_role, status_epoch)
    WHERE status_epoch IS NOT NULL;
