-- Workflows that wait and talk: a `waiting` status (a sleep or a recv that
-- gave its worker's slot back), the messages sent to workflows, the values
-- they publish (set-event), and the schedules that start them.

ALTER TABLE workflows DROP CONSTRAINT workflows_status_check;
ALTER TABLE workflows ADD CONSTRAINT workflows_status_check CHECK (status IN ('enqueued', 'delayed', 'waiting', 'running', 'succeeded', 'failed', 'cancelled', 'timed-out', 'dead'));
COMMENT ON COLUMN workflows.status IS 'enqueued, delayed, waiting (a sleep or recv gave its slot back), running, succeeded, failed (trapped), cancelled, timed-out (deadline) or dead (crash-loop cap)';
COMMENT ON COLUMN workflows.run_at IS 'When an enqueued, delayed or waiting workflow may be claimed (a waiting one: when its wait ends; NULL: only a message wakes it)';
ALTER TABLE workflows ADD COLUMN waiting_for text;
ALTER TABLE workflows ADD COLUMN wait_topic text;
ALTER TABLE workflows ADD COLUMN schedule text;
ALTER TABLE workflows ADD COLUMN scheduled_at timestamptz;
COMMENT ON COLUMN workflows.waiting_for IS 'What a waiting workflow waits for: sleep, or message (on wait_topic)';
COMMENT ON COLUMN workflows.wait_topic IS 'The topic a workflow waiting for a message listens on: a message on it wakes the workflow';
COMMENT ON COLUMN workflows.schedule IS 'The schedule (schedules.name) whose tick started it';
COMMENT ON COLUMN workflows.scheduled_at IS 'The tick it was started for: one workflow per (schedule, tick)';

DROP INDEX workflows_claimable;
CREATE INDEX workflows_claimable ON workflows (queue, priority, run_at, id) WHERE status IN ('enqueued', 'delayed', 'waiting');
DROP INDEX workflows_dedup;
CREATE UNIQUE INDEX workflows_dedup ON workflows (queue, dedup_key)
    WHERE dedup_key IS NOT NULL AND status IN ('enqueued', 'delayed', 'waiting', 'running');
CREATE UNIQUE INDEX workflows_by_tick ON workflows (schedule, scheduled_at) WHERE schedule IS NOT NULL;

CREATE TABLE messages (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id     text NOT NULL,
    topic           text NOT NULL,
    value           text NOT NULL,
    sender          text NOT NULL,
    idempotency_key text,
    sent_at         timestamptz NOT NULL,
    received_seq    bigint,
    received_at     timestamptz
);
COMMENT ON TABLE messages IS 'Messages sent to workflows (host send, the API, a workflow''s send), each received once, in the order sent per topic';
COMMENT ON COLUMN messages.id IS 'Order of sending';
COMMENT ON COLUMN messages.workflow_id IS 'The workflow it was sent to (workflows.id)';
COMMENT ON COLUMN messages.topic IS 'The topic its recv names';
COMMENT ON COLUMN messages.value IS 'The value, JSON text as sent';
COMMENT ON COLUMN messages.sender IS 'The sending workflow''s id, or what an outside sender called itself';
COMMENT ON COLUMN messages.idempotency_key IS 'A repeated send with the same key (per recipient) is accepted once';
COMMENT ON COLUMN messages.sent_at IS 'When it was sent';
COMMENT ON COLUMN messages.received_seq IS 'The recv call (step_calls.seq) that received it; NULL until then';
COMMENT ON COLUMN messages.received_at IS 'When it was received';
CREATE INDEX messages_pending ON messages (workflow_id, topic, id) WHERE received_seq IS NULL;
CREATE UNIQUE INDEX messages_idempotent ON messages (workflow_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE published_events (
    workflow_id text NOT NULL,
    key         text NOT NULL,
    value       text NOT NULL,
    seq         bigint NOT NULL,
    set_at      timestamptz NOT NULL,
    PRIMARY KEY (workflow_id, key)
);
COMMENT ON TABLE published_events IS 'Values workflows publish (set-event) for callers to read while they run and after they end';
COMMENT ON COLUMN published_events.workflow_id IS 'The publishing workflow (workflows.id)';
COMMENT ON COLUMN published_events.key IS 'The key set-event named';
COMMENT ON COLUMN published_events.value IS 'The latest value, JSON text';
COMMENT ON COLUMN published_events.seq IS 'The set-event call (step_calls.seq) that set it';
COMMENT ON COLUMN published_events.set_at IS 'When it was set';

CREATE TABLE schedules (
    name         text PRIMARY KEY,
    cron         text NOT NULL,
    timezone     text NOT NULL,
    catch_up     text NOT NULL CHECK (catch_up IN ('skip', 'latest', 'all')),
    queue        text NOT NULL,
    priority     integer NOT NULL DEFAULT 0,
    timeout_ms   bigint CHECK (timeout_ms > 0),
    component    text NOT NULL,
    entry        text NOT NULL,
    input        text NOT NULL,
    template     jsonb NOT NULL,
    paused       boolean NOT NULL DEFAULT false,
    next_tick_at timestamptz NOT NULL,
    last_tick_at timestamptz,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
COMMENT ON TABLE schedules IS 'Workflows started on a cron schedule: any worker fires a due tick, once (workflows.schedule, scheduled_at is unique)';
COMMENT ON COLUMN schedules.name IS 'The schedule''s name (host schedule set NAME)';
COMMENT ON COLUMN schedules.cron IS 'The cron expression (5 fields, or 6 with seconds first)';
COMMENT ON COLUMN schedules.timezone IS 'The IANA time zone the expression is read in';
COMMENT ON COLUMN schedules.catch_up IS 'Ticks missed while no worker ran: skip them, fire the latest, or fire all';
COMMENT ON COLUMN schedules.queue IS 'The queue each tick''s workflow is submitted to';
COMMENT ON COLUMN schedules.priority IS 'The priority of each tick''s workflow';
COMMENT ON COLUMN schedules.timeout_ms IS 'Each workflow times out this long after its tick; NULL: never';
COMMENT ON COLUMN schedules.component IS 'The workflow component (its name as given)';
COMMENT ON COLUMN schedules.entry IS 'The exported function called';
COMMENT ON COLUMN schedules.input IS 'The arguments, a WAVE tuple';
COMMENT ON COLUMN schedules.template IS 'The workflow each tick starts, by value (components by digest, settings)';
COMMENT ON COLUMN schedules.paused IS 'A paused schedule fires nothing; resumed, it goes on from the next tick';
COMMENT ON COLUMN schedules.next_tick_at IS 'The next tick to fire';
COMMENT ON COLUMN schedules.last_tick_at IS 'The last tick fired';
COMMENT ON COLUMN schedules.created_at IS 'When it was first set';
COMMENT ON COLUMN schedules.updated_at IS 'When it was last set, paused or resumed';
CREATE INDEX schedules_due ON schedules (next_tick_at) WHERE NOT paused;

-- Claims take waiting workflows whose wait is due (or that a message woke) too.
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
        WHERE w.id = ANY(chosen) RETURNING w.*;
END;
$$;
