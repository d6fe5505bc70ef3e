-- Transactional enqueue for apps (`conveyor_client::enqueue_in`): the one call an app
-- makes inside its own transaction. The app's crate knows this signature, not the
-- `jobs` table, so the ledger's columns can change under it in later migrations.
--
-- The job starts `scheduled` at `p_run_at` (now when NULL): the state the dispatcher
-- publishes (`store::dispatch::take_due`), exactly as a handler's follow-up job does.
-- The NOTIFY is delivered when the app's transaction commits, waking the dispatchers;
-- a rolled-back transaction leaves neither the job nor the wake-up.
CREATE FUNCTION conveyor_enqueue(
    p_id uuid,
    p_kind text,
    p_queue text,
    p_args jsonb,
    p_max_attempts integer,
    p_run_at timestamptz,
    p_timeout_ms integer
) RETURNS void LANGUAGE sql VOLATILE AS $$
    INSERT INTO jobs (id, kind, queue, args, state, max_attempts, attempt_budget, run_at, timeout_ms)
    VALUES (p_id, p_kind, p_queue, p_args, 'scheduled', p_max_attempts, p_max_attempts,
            COALESCE(p_run_at, now()), p_timeout_ms);
    SELECT pg_notify('conveyor_due', '');
$$;
