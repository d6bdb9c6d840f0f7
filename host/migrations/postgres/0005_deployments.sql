-- Deployments stored once: what a workflow runs with (its components by
-- digest, its entry function, every step's policy, limits and grants) is the
-- same for every workflow submitted from one deployment. It is kept once here,
-- by the digest of its JSON, and a workflow's row keeps only its own part of
-- its options (its arguments): the row that every submit, claim, renewal and
-- finish writes again is a few hundred bytes instead of kilobytes. Rows
-- written before this migration keep all of their options (deployment NULL).
CREATE TABLE deployments (
    digest     text PRIMARY KEY,
    deployment jsonb NOT NULL,
    created_at timestamptz NOT NULL
);
COMMENT ON TABLE deployments IS 'What workflows run with, stored once for all the workflows of one deployment';
COMMENT ON COLUMN deployments.digest IS 'Hex SHA-256 of the deployment''s JSON text';
COMMENT ON COLUMN deployments.deployment IS 'Components (paths and digests), entry, each step''s policy, limits and grants';
COMMENT ON COLUMN deployments.created_at IS 'When a workflow first ran with it';

ALTER TABLE workflows ADD COLUMN deployment text;
COMMENT ON COLUMN workflows.deployment IS 'The deployment it runs (deployments.digest); NULL: its options hold everything';
COMMENT ON COLUMN workflows.options IS 'What is its own of what it runs with (its arguments), over its deployment''s';

-- A claim answers each workflow with its options put back together with its
-- deployment's, read by the claiming UPDATE itself: a statement that started
-- before the submit committed would not see a deployment stored by that
-- submit (the function's own statements each see what committed before them).
CREATE OR REPLACE FUNCTION claim_workflows(p_queue text, p_executor text, p_limit integer, p_lease_ms bigint)
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
        WHERE queue = p_queue AND status IN ('enqueued', 'delayed', 'waiting') AND run_at <= now_at
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
        started_at = COALESCE(w.started_at, now_at), updated_at = now_at, waiting_for = NULL, wait_topic = NULL,
        progress_at_claim = (SELECT count(*) FROM step_calls c WHERE c.workflow_id = w.id AND c.status <> 'running')
        WHERE w.id = ANY(chosen)
        RETURNING w.id, w.name, w.component, w.component_digest, w.entry, w.input, w.input_json, w.status,
            w.output, w.output_json, w.error,
            COALESCE((SELECT d.deployment FROM deployments d WHERE d.digest = w.deployment), '{}') || w.options,
            w.queue, w.priority, w.partition_key, w.dedup_key, w.run_at, w.deadline_at, w.executor, w.lease_epoch,
            w.lease_expires_at, w.claims, w.progress_at_claim, w.cancel_requested_at, w.created_at, w.started_at,
            w.updated_at, w.finished_at, w.waiting_for, w.wait_topic, w.schedule, w.scheduled_at, w.parent_id,
            w.parent_detached, w.deployment;
END;
$$;
