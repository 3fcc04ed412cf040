-- PIN checks under way per credential. A check is reserved before the PIN is compared
-- and settled (a failure counted, or the counter reset) before the caller is answered;
-- failures plus checks under way never exceed the allowed attempts, so concurrent
-- guesses get no more tries than the limit, and concurrent right PINs no longer lock
-- the credential. A reservation older than a minute (its process died) is forgotten.
ALTER TABLE csc_credential ADD COLUMN pin_checks INTEGER NOT NULL DEFAULT 0;
ALTER TABLE csc_credential ADD COLUMN pin_check_at BIGINT NOT NULL DEFAULT 0;
