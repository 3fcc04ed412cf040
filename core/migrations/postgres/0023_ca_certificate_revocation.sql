-- A CA certificate (an issuing CA, an OCSP responder, the time-stamping unit, the idp's
-- TLS certificate) can be revoked by its issuer: the issuer's next CRL lists it, and a
-- revoked issuing CA signs nothing more.
ALTER TABLE ca_certificate ADD COLUMN revoked_at TEXT;
ALTER TABLE ca_certificate ADD COLUMN revocation_reason TEXT;
