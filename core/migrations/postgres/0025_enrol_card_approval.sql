-- A card presented on the desk's card listener is a login, or a supervisor's approval
-- of one step (exceptions of a case, a deactivation): what it approves is kept with it
-- (JSON; none for a login) and checked again when the desk takes it.
ALTER TABLE enrol_card_login ADD COLUMN approves TEXT;
