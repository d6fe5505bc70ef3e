-- Webhooks: a job's own `callback_url`, and subscriptions of a URL to the transitions of
-- matching jobs. Each delivery is itself a job of kind `webhook.deliver`, inserted in the
-- transaction that wrote the transition (so a committed transition never loses its
-- delivery); its args carry the event and the target, its secret is read at delivery.

-- Told of the job's final state (completed, dead, cancelled).
ALTER TABLE jobs ADD COLUMN callback_url text CHECK (length(callback_url) <= 2048);

CREATE TABLE webhook_subscriptions (
    id          uuid PRIMARY KEY,
    url         text        NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    -- A glob over kinds (`order.*`, `*`) as the API shows it, and the LIKE pattern it
    -- matches with (`_` escaped, `*` → `%`).
    kind        text        NOT NULL CHECK (length(kind) BETWEEN 1 AND 128),
    kind_like   text        NOT NULL GENERATED ALWAYS AS
                    (replace(replace(kind, '_', '\_'), '*', '%')) STORED,
    -- The transitions delivered: the state a job moved into.
    states      text[]      NOT NULL CHECK (
                    cardinality(states) >= 1 AND states <@ ARRAY['scheduled', 'enqueued',
                    'retrying', 'completed', 'dead', 'cancelled']::text[]),
    -- The Standard Webhooks signing secret (`whsec_` + base64), kept so workers can
    -- sign; shown to its creator once, never listed or logged.
    secret      text        NOT NULL,
    description text CHECK (length(description) <= 200),
    -- Attempts of each delivery before it is dead.
    max_attempts integer    NOT NULL CHECK (max_attempts BETWEEN 1 AND 25),
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL
);

-- A time-ordered UUID (version 7), as the producer assigns to jobs, for the deliveries
-- inserted by SQL (Postgres 15 has no uuidv7()).
CREATE FUNCTION conveyor_uuid_v7() RETURNS uuid LANGUAGE sql VOLATILE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                placing substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

-- Who created and deleted subscriptions is audited like every other change.
ALTER TABLE audit_log DROP CONSTRAINT audit_log_action_check;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_action_check CHECK (action IN (
    'job.cancel', 'job.retry', 'dead.replay', 'dead.purge', 'key.create', 'key.revoke',
    'queue.pause', 'queue.resume', 'webhook.create', 'webhook.delete'));
