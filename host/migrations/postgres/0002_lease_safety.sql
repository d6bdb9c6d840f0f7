-- Lease safety: a worker's row says how long its leases last (it is lost once
-- silent for longer), and claims are one statement, so that no lock other
-- workers need is ever held across a round trip to a worker that may stall.

ALTER TABLE workers ADD COLUMN lease_ms bigint NOT NULL DEFAULT 10000 CHECK (lease_ms > 0);
COMMENT ON COLUMN workers.lease_ms IS 'The lease its workflows are held under, in milliseconds: silent for longer than this, the worker is lost';

-- Claims up to p_limit due workflows of p_queue for p_executor, for p_lease_ms
-- from now by this server's clock, within the queue's limits: the queue's row
-- is locked for the statement (claims of one queue serialize on it), running
-- and recent starts are counted after the lock, candidates are taken in
-- (priority, run_at, id) order with FOR UPDATE SKIP LOCKED, each claim bumps
-- the lease epoch. One statement: the locks go with its end, whatever the
-- caller does next.
CREATE FUNCTION claim_workflows(p_queue text, p_executor text, p_limit integer, p_lease_ms bigint)
RETURNS SETOF workflows
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    q_concurrency integer;
    q_partition_concurrency integer;
    q_rate_limit integer;
    q_rate_period_ms bigint;
    available bigint := p_limit;
    starts_left bigint := 9223372036854775807;
    scan bigint;
    chosen text[] := '{}';
    partition_left jsonb := '{}';
    left_here bigint;
    candidate record;
    now_at timestamptz;
BEGIN
    IF p_limit <= 0 THEN
        RETURN;
    END IF;
    SELECT concurrency, partition_concurrency, rate_limit, rate_period_ms
        INTO q_concurrency, q_partition_concurrency, q_rate_limit, q_rate_period_ms
        FROM queues WHERE name = p_queue FOR UPDATE;
    -- Read after the queue's lock: what other claims and finishes committed is counted.
    now_at := clock_timestamp();
    IF q_concurrency IS NOT NULL THEN
        available := least(available,
            q_concurrency - (SELECT count(*) FROM workflows WHERE queue = p_queue AND status = 'running'));
    END IF;
    IF q_rate_limit IS NOT NULL AND q_rate_period_ms IS NOT NULL THEN
        starts_left := q_rate_limit - (SELECT count(*) FROM workflows WHERE queue = p_queue
            AND started_at > now_at - q_rate_period_ms * interval '1 millisecond');
    END IF;
    IF available <= 0 THEN
        RETURN;
    END IF;
    scan := CASE WHEN q_partition_concurrency IS NOT NULL OR starts_left < available
        THEN available * 4 + 16 ELSE available END;
    FOR candidate IN
        SELECT id, partition_key, started_at IS NULL AS first_start FROM workflows
        WHERE queue = p_queue AND status IN ('enqueued', 'delayed') AND run_at <= now_at
        ORDER BY priority, run_at, id LIMIT scan FOR UPDATE SKIP LOCKED
    LOOP
        EXIT WHEN cardinality(chosen) >= available;
        CONTINUE WHEN candidate.first_start AND starts_left <= 0;
        IF q_partition_concurrency IS NOT NULL AND candidate.partition_key IS NOT NULL THEN
            IF NOT partition_left ? candidate.partition_key THEN
                partition_left := partition_left || jsonb_build_object(candidate.partition_key,
                    q_partition_concurrency - (SELECT count(*) FROM workflows WHERE queue = p_queue
                        AND partition_key = candidate.partition_key AND status = 'running'));
            END IF;
            left_here := (partition_left ->> candidate.partition_key)::bigint;
            CONTINUE WHEN left_here <= 0;
            partition_left := jsonb_set(partition_left, ARRAY[candidate.partition_key], to_jsonb(left_here - 1));
        END IF;
        IF candidate.first_start THEN
            starts_left := starts_left - 1;
        END IF;
        chosen := chosen || candidate.id;
    END LOOP;
    IF cardinality(chosen) = 0 THEN
        RETURN;
    END IF;
    -- Stamped after every count: a start never precedes the end it waited for.
    now_at := clock_timestamp();
    RETURN QUERY UPDATE workflows w SET status = 'running', executor = p_executor,
        lease_epoch = w.lease_epoch + 1, lease_expires_at = now_at + p_lease_ms * interval '1 millisecond',
        started_at = COALESCE(w.started_at, now_at), updated_at = now_at,
        progress_at_claim = (SELECT count(*) FROM step_calls c WHERE c.workflow_id = w.id AND c.status <> 'running')
        WHERE w.id = ANY(chosen) RETURNING w.*;
END;
$$;
COMMENT ON FUNCTION claim_workflows(text, text, integer, bigint) IS 'A worker''s claim of due workflows of a queue, within its limits, in one statement (host worker calls it)';
