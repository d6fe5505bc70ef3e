-- Schedules: periodic jobs. A slot is taken by moving `cursor` forward with a
-- compare-and-set in the transaction that inserts its job (idempotency key
-- `schedule:{name}:{slot}`), so any number of dispatchers fire each slot once.

CREATE TABLE schedules (
    name            text PRIMARY KEY,
    cron            text        NOT NULL,
    timezone        text        NOT NULL,
    kind            text        NOT NULL,
    queue           text        NOT NULL,
    args            jsonb       NOT NULL,
    max_attempts    integer     NOT NULL CHECK (max_attempts >= 1),
    catch_up        text        NOT NULL CHECK (catch_up IN ('none', 'latest', 'all')),
    catch_up_limit  integer     NOT NULL CHECK (catch_up_limit >= 1),
    overlap         text        NOT NULL CHECK (overlap IN ('allow', 'skip')),
    -- Declared in conveyor.toml (upserted at start-up) or created over the API.
    source          text        NOT NULL CHECK (source IN ('config', 'api')),
    -- false: removed from conveyor.toml; kept with its history, never fires.
    enabled         boolean     NOT NULL DEFAULT true,
    paused          boolean     NOT NULL DEFAULT false,
    -- The latest slot handled (fired, missed or skipped); slots after it are pending.
    cursor          timestamptz NOT NULL,
    -- The first slot after `cursor` (NULL: the expression never fires again).
    next_slot       timestamptz,
    fired           bigint      NOT NULL DEFAULT 0,
    missed          bigint      NOT NULL DEFAULT 0,
    skipped_overlap bigint      NOT NULL DEFAULT 0,
    last_fired_at   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- The dispatcher's scan: due, live schedules.
CREATE INDEX schedules_due ON schedules (next_slot) WHERE enabled AND NOT paused;

-- The schedule and slot a job was fired for (NULL for every other job).
ALTER TABLE jobs ADD COLUMN schedule_name text;
ALTER TABLE jobs ADD COLUMN schedule_slot text;
-- A schedule's jobs, newest first, and its unfinished ones (overlap = 'skip'). Only
-- scheduled jobs enter these indexes.
CREATE INDEX jobs_schedule ON jobs (schedule_name, id) WHERE schedule_name IS NOT NULL;
CREATE INDEX jobs_schedule_open ON jobs (schedule_name)
    WHERE schedule_name IS NOT NULL AND state NOT IN ('completed', 'dead', 'cancelled');
