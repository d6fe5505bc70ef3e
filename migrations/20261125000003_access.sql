-- Who may do what, and who did what: API keys (stored as hashes) and the audit log.

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    role         text        NOT NULL CHECK (role IN ('producer', 'viewer', 'operator', 'admin')),
    -- Globs (`order.*`) of the kinds the key may touch; empty: every kind.
    kinds        text[]      NOT NULL DEFAULT '{}',
    -- Queues the key may touch; empty: every queue.
    queues       text[]      NOT NULL DEFAULT '{}',
    -- SHA-256 of the key; the key itself is shown once and never stored.
    hash         bytea       NOT NULL UNIQUE CHECK (length(hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text        NOT NULL,
    expires_at   timestamptz,
    -- Written in the background, many keys per statement, never per request.
    last_used_at timestamptz,
    revoked_at   timestamptz,
    revoked_by   text
);

-- One row per change an operator or an app made, written in the change's own
-- transaction. Conveyor only ever inserts here.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    -- `key` (an API key), `config` (a key from producer.api_keys), `cli`, `local` (an
    -- intake without keys, loopback only).
    actor_kind  text        NOT NULL CHECK (actor_kind IN ('key', 'config', 'cli', 'local')),
    -- The API key's id, for `key`; never the key.
    actor_id    uuid,
    -- The key's name, the CLI's --by/$USER, or the client address.
    actor       text        NOT NULL,
    action      text        NOT NULL CHECK (action IN (
        'job.cancel', 'job.retry', 'dead.replay', 'dead.purge', 'key.create', 'key.revoke',
        'queue.pause', 'queue.resume')),
    -- The jobs (or dead letters, for purges of raw messages, or the key) changed.
    targets     uuid[]      NOT NULL DEFAULT '{}',
    -- The filter a bulk operation selected with, when it used one.
    filter      jsonb,
    count       bigint      NOT NULL CHECK (count >= 0),
    request_id  text,
    detail      jsonb
);
CREATE INDEX audit_log_at ON audit_log (at);

-- Append-only, enforced: an UPDATE or DELETE of an audit row fails.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
