-- Rich authorization requests (RFC 9396): the validated authorization_details of a
-- grant (today a CSC `credential` signing authorisation), as the JSON array echoed in
-- its token response and access token. NULL for grants without them. The code that
-- redeems a grant reaches them through its grant_id.
ALTER TABLE idp_grant ADD COLUMN authorization_details TEXT;
