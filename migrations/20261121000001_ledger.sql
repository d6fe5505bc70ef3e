-- The ledger: every job, every attempt, every dead letter, and the workers that run them.

CREATE TABLE jobs (
    id                      uuid PRIMARY KEY,
    kind                    text        NOT NULL,
    queue                   text        NOT NULL,
    args                    jsonb       NOT NULL,
    state                   text        NOT NULL
        CHECK (state IN ('scheduled', 'enqueued', 'running', 'retrying', 'completed', 'dead', 'cancelled')),
    attempt                 integer     NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts            integer     NOT NULL CHECK (max_attempts >= 1),
    -- Attempts granted at intake; a replay grants this many more.
    attempt_budget          integer     NOT NULL CHECK (attempt_budget >= 1),
    run_at                  timestamptz NOT NULL DEFAULT now(),
    -- Per-job override of the kind's timeout.
    timeout_ms              integer CHECK (timeout_ms > 0),
    idempotency_key         text UNIQUE,
    idempotency_expires_at  timestamptz,
    result                  jsonb,
    last_error              text,
    -- The worker holding a running job; the dispatcher rescues jobs whose worker died.
    worker_id               uuid,
    -- Set once the broker confirmed a message for the current enqueue.
    published_at            timestamptz,
    cancel_requested        boolean     NOT NULL DEFAULT false,
    replay_count            integer     NOT NULL DEFAULT 0,
    replayed_at             timestamptz,
    replayed_by             text,
    traceparent             text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    started_at              timestamptz,
    finished_at             timestamptz
);

-- The dispatcher's scans: due jobs, unconfirmed publishes, orphans.
CREATE INDEX jobs_due ON jobs (run_at) WHERE state IN ('scheduled', 'retrying');
CREATE INDEX jobs_unpublished ON jobs (updated_at) WHERE state = 'enqueued' AND published_at IS NULL;
CREATE INDEX jobs_running ON jobs (worker_id) WHERE state = 'running';
-- Listing and stats.
CREATE INDEX jobs_state_queue ON jobs (state, queue);
CREATE INDEX jobs_kind ON jobs (kind, id);

CREATE TABLE job_attempts (
    id          bigserial PRIMARY KEY,
    job_id      uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     integer     NOT NULL,
    worker_id   uuid,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    outcome     text        NOT NULL
        CHECK (outcome IN ('completed', 'retry', 'failed', 'snoozed', 'lost', 'cancelled')),
    error       text,
    -- For a `retry` (or `snoozed`) outcome: when the job was scheduled to run again.
    retry_at    timestamptz
);
CREATE INDEX job_attempts_job ON job_attempts (job_id, id);
-- Throughput in the last minute (stats, metrics).
CREATE INDEX job_attempts_finished ON job_attempts (finished_at);

-- What could not run: dead jobs (job_id set) and raw messages that never were a job.
CREATE TABLE dead_letters (
    id          uuid PRIMARY KEY,
    job_id      uuid REFERENCES jobs (id) ON DELETE CASCADE,
    queue       text,
    kind        text,
    reason      text        NOT NULL,
    error       text,
    payload     bytea,
    headers     jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Set when replayed or purged; a resolved dead letter is history, not work.
    resolved_at timestamptz,
    resolution  text
);
CREATE INDEX dead_letters_open ON dead_letters (created_at) WHERE resolved_at IS NULL;
CREATE INDEX dead_letters_job ON dead_letters (job_id);
CREATE INDEX dead_letters_resolved ON dead_letters (resolved_at);

CREATE TABLE workers (
    id           uuid PRIMARY KEY,
    name         text        NOT NULL,
    queues       text        NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
