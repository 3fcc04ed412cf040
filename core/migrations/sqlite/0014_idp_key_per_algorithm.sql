-- One active token-signing key per algorithm: ID tokens for a client registered for
-- another algorithm than the provider's (RS256 for relying parties that know no other)
-- are signed by that algorithm's active key.
DROP INDEX idp_signing_key_one_active;
CREATE UNIQUE INDEX idp_signing_key_one_active ON idp_signing_key (alg) WHERE state = 'active';
