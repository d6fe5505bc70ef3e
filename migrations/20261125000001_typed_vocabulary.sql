-- The ledger's vocabularies, held by the database as the Rust enums hold them
-- (`jobs::AttemptOutcome`, `jobs::DeadReason`; `jobs.state` is checked since the first
-- migration).

-- An attempt ends completed, retry, failed, snoozed or lost. `cancelled` was allowed but
-- never written: a cancel requested while a job ran shows in the job's state, and its
-- attempt keeps the outcome it had (a retry, a snooze, a loss).
ALTER TABLE job_attempts DROP CONSTRAINT job_attempts_outcome_check;
ALTER TABLE job_attempts ADD CONSTRAINT job_attempts_outcome_check
    CHECK (outcome IN ('completed', 'retry', 'failed', 'snoozed', 'lost'));

-- Why something is in the dead letters.
ALTER TABLE dead_letters ADD CONSTRAINT dead_letters_reason_check
    CHECK (reason IN ('attempts_exhausted', 'failed', 'unknown_kind', 'undecodable',
                      'no_such_job', 'delivery_limit'));
