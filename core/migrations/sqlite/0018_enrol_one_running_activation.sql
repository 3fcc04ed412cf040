-- At most one activation of an application runs at a time (card, SIM or remote
-- credential). The desk checks before it starts one; this index makes two submissions
-- that arrive together (on PostgreSQL they do not queue) end in one refusal instead of
-- two attempts. Attempts left running side by side by an older binary are marked
-- failed first, all but the newest; the desk's recovery cleans failed attempts up.
UPDATE enrol_activation SET state = 'failed',
    error = 'a later attempt of the same application was running (found at upgrade)'
WHERE state NOT IN ('done', 'failed', 'cleaned') AND EXISTS (
    SELECT 1 FROM enrol_activation later
    WHERE later.application_id = enrol_activation.application_id
      AND later.state NOT IN ('done', 'failed', 'cleaned')
      AND (later.created_at > enrol_activation.created_at
           OR (later.created_at = enrol_activation.created_at
               AND later.activation_id > enrol_activation.activation_id)));
CREATE UNIQUE INDEX enrol_activation_running ON enrol_activation (application_id)
    WHERE state NOT IN ('done', 'failed', 'cleaned');
