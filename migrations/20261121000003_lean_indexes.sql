-- Fewer index entries per job. Every state change rewrites the job's row, and a
-- rewritten row gets a new entry in every index whose predicate it meets, so each index
-- costs a write per transition on the hot path. Index only what is searched.

-- Most jobs have no idempotency key: index only those that do.
ALTER TABLE jobs DROP CONSTRAINT jobs_idempotency_key_key;
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Stats and state-filtered listing look at open and dead jobs; completed and
-- cancelled jobs are found by id order.
DROP INDEX jobs_state_queue;
CREATE INDEX jobs_open ON jobs (queue, state)
    WHERE state IN ('enqueued', 'running', 'scheduled', 'retrying', 'dead');

-- Listing by kind walks the primary key (ids sort by creation time) and filters.
DROP INDEX jobs_kind;

-- Attempts are appended in finishing order: a block-range index serves "the last
-- minute" at a fraction of a B-tree's upkeep.
DROP INDEX job_attempts_finished;
CREATE INDEX job_attempts_finished ON job_attempts USING brin (finished_at);
