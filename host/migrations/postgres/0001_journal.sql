-- The stepbox journal on PostgreSQL, in its own schema (`stepbox` unless the
-- journal URL says `?schema=NAME`). Values are WAVE text, the source of truth,
-- with a JSON rendering beside them for queries; times are timestamptz.

CREATE TABLE components (
    digest    text PRIMARY KEY,
    name      text NOT NULL,
    size      bigint NOT NULL,
    bytes     bytea NOT NULL,
    stored_at timestamptz NOT NULL
);
COMMENT ON TABLE components IS 'Component files stored once per SHA-256 digest, so a worker on any machine runs exactly what was submitted';
COMMENT ON COLUMN components.digest IS 'Hex SHA-256 of the bytes';
COMMENT ON COLUMN components.name IS 'The file name the component was first stored under';
COMMENT ON COLUMN components.size IS 'Length of the bytes';
COMMENT ON COLUMN components.bytes IS 'The component file';
COMMENT ON COLUMN components.stored_at IS 'When it was first stored';

CREATE TABLE queues (
    name                  text PRIMARY KEY,
    concurrency           integer CHECK (concurrency > 0),
    partition_concurrency integer CHECK (partition_concurrency > 0),
    rate_limit            integer CHECK (rate_limit > 0),
    rate_period_ms        bigint CHECK (rate_period_ms > 0),
    updated_at            timestamptz NOT NULL
);
COMMENT ON TABLE queues IS 'Limits of a queue, holding across every worker; a queue without a row has none';
COMMENT ON COLUMN queues.name IS 'The queue name given at submit (--queue)';
COMMENT ON COLUMN queues.concurrency IS 'Most workflows of the queue running at once, across all workers; NULL: no limit';
COMMENT ON COLUMN queues.partition_concurrency IS 'Most workflows of one partition key running at once; NULL: no limit';
COMMENT ON COLUMN queues.rate_limit IS 'Most workflow starts per rate_period_ms; NULL: no limit';
COMMENT ON COLUMN queues.rate_period_ms IS 'The window of rate_limit, in milliseconds';
COMMENT ON COLUMN queues.updated_at IS 'When the limits were last set';

CREATE TABLE workflows (
    id                  text PRIMARY KEY,
    name                text NOT NULL,
    component           text NOT NULL,
    component_digest    text NOT NULL,
    entry               text NOT NULL,
    input               text NOT NULL,
    input_json          jsonb NOT NULL,
    status              text NOT NULL CHECK (status IN ('enqueued', 'delayed', 'running', 'succeeded', 'failed', 'cancelled', 'timed-out', 'dead')),
    output              text,
    output_json         jsonb,
    error               text,
    options             jsonb NOT NULL,
    queue               text,
    priority            integer NOT NULL DEFAULT 0,
    partition_key       text,
    dedup_key           text,
    run_at              timestamptz,
    deadline_at         timestamptz,
    executor            text,
    lease_epoch         bigint NOT NULL DEFAULT 0,
    lease_expires_at    timestamptz,
    claims              integer NOT NULL DEFAULT 0,
    progress_at_claim   bigint NOT NULL DEFAULT 0,
    cancel_requested_at timestamptz,
    created_at          timestamptz NOT NULL,
    started_at          timestamptz,
    updated_at          timestamptz NOT NULL,
    finished_at         timestamptz
);
COMMENT ON TABLE workflows IS 'One row per workflow: what it runs, where it stands, who owns it';
COMMENT ON COLUMN workflows.id IS 'The workflow id, given (--id) or a UUIDv7';
COMMENT ON COLUMN workflows.name IS 'The workflow component''s file name without .wasm: what lists filter by';
COMMENT ON COLUMN workflows.component IS 'The workflow component as it was given (a path, or the stored component''s name)';
COMMENT ON COLUMN workflows.component_digest IS 'Hex SHA-256 of the workflow component: a resume runs exactly this';
COMMENT ON COLUMN workflows.entry IS 'The exported function called as the workflow';
COMMENT ON COLUMN workflows.input IS 'The entry function''s arguments, a WAVE tuple';
COMMENT ON COLUMN workflows.input_json IS 'The arguments as a JSON array (records as objects, variants as {"tag","val"})';
COMMENT ON COLUMN workflows.status IS 'enqueued, delayed, running, succeeded, failed (trapped), cancelled, timed-out (deadline) or dead (crash-loop cap)';
COMMENT ON COLUMN workflows.output IS 'The entry function''s result as WAVE, once succeeded';
COMMENT ON COLUMN workflows.output_json IS 'The result as JSON';
COMMENT ON COLUMN workflows.error IS 'Why it failed, was cancelled, timed out or died';
COMMENT ON COLUMN workflows.options IS 'What it runs with, by value: components (paths and digests), entry, each step''s policy, limits and grants';
COMMENT ON COLUMN workflows.queue IS 'The queue it was submitted to; NULL when started by host run';
COMMENT ON COLUMN workflows.priority IS 'Lower runs first among claimable workflows of a queue';
COMMENT ON COLUMN workflows.partition_key IS 'Limits per key hold across workflows sharing it (queues.partition_concurrency)';
COMMENT ON COLUMN workflows.dedup_key IS 'At most one live workflow per (queue, dedup_key)';
COMMENT ON COLUMN workflows.run_at IS 'When an enqueued or delayed workflow may be claimed';
COMMENT ON COLUMN workflows.deadline_at IS 'When it times out if not finished (--timeout at submit)';
COMMENT ON COLUMN workflows.executor IS 'The process (host:pid:nonce) that owns or last owned it';
COMMENT ON COLUMN workflows.lease_epoch IS 'Fencing token: bumped by every claim; every journal write checks it';
COMMENT ON COLUMN workflows.lease_expires_at IS 'Until when the executor owns it without renewing; NULL once released';
COMMENT ON COLUMN workflows.claims IS 'Claims since it last made progress (crash-loop cap)';
COMMENT ON COLUMN workflows.progress_at_claim IS 'Finished step calls when last claimed: progress is measured against it';
COMMENT ON COLUMN workflows.cancel_requested_at IS 'When host cancel asked it to stop';
COMMENT ON COLUMN workflows.created_at IS 'When it was started or submitted; also the workflow''s frozen wall clock';
COMMENT ON COLUMN workflows.started_at IS 'When it first ran (queued workflows: first claimed)';
COMMENT ON COLUMN workflows.updated_at IS 'Last change of the row';
COMMENT ON COLUMN workflows.finished_at IS 'When it reached its final status';

CREATE INDEX workflows_by_created ON workflows (created_at DESC, id DESC);
CREATE INDEX workflows_by_status ON workflows (status, created_at DESC, id DESC);
CREATE INDEX workflows_by_name ON workflows (name, created_at DESC, id DESC);
CREATE INDEX workflows_by_queue ON workflows (queue, created_at DESC, id DESC);
CREATE INDEX workflows_claimable ON workflows (queue, priority, run_at, id) WHERE status IN ('enqueued', 'delayed');
CREATE INDEX workflows_by_lease ON workflows (lease_expires_at) WHERE status = 'running';
CREATE INDEX workflows_by_executor ON workflows (executor) WHERE status = 'running';
CREATE INDEX workflows_starts ON workflows (queue, started_at) WHERE queue IS NOT NULL;
CREATE UNIQUE INDEX workflows_dedup ON workflows (queue, dedup_key)
    WHERE dedup_key IS NOT NULL AND status IN ('enqueued', 'delayed', 'running');

-- step_calls and step_attempts carry no foreign keys: every row is written
-- under the lease fence, which holds a share lock on its workflow's row in
-- the same statement, and deleting a workflow deletes its calls and attempts
-- in the same transaction. A foreign key's check (a trigger and a key-share
-- lock per inserted row) cost a quarter of a commit per durable step.
CREATE TABLE step_calls (
    workflow_id  text NOT NULL,
    seq          bigint NOT NULL,
    step         text NOT NULL,
    input        text NOT NULL,
    input_json   jsonb NOT NULL,
    status       text NOT NULL CHECK (status IN ('running', 'succeeded', 'rejected', 'exhausted', 'cancelled')),
    output       text,
    output_json  jsonb,
    attempts     integer NOT NULL,
    max_attempts integer NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    PRIMARY KEY (workflow_id, seq)
);
COMMENT ON TABLE step_calls IS 'One row per step call of a workflow: the checkpoint a resumed workflow replays';
COMMENT ON COLUMN step_calls.workflow_id IS 'The calling workflow (workflows.id)';
COMMENT ON COLUMN step_calls.seq IS 'The call''s position in the workflow, from 1';
COMMENT ON COLUMN step_calls.step IS 'The step function, interface.function (e.g. example:provision/steps.provision)';
COMMENT ON COLUMN step_calls.input IS 'The arguments, a WAVE tuple';
COMMENT ON COLUMN step_calls.input_json IS 'The arguments as a JSON array';
COMMENT ON COLUMN step_calls.status IS 'running, succeeded, rejected (the step''s permanent case), exhausted (every attempt failed) or cancelled';
COMMENT ON COLUMN step_calls.output IS 'The value the workflow received, as WAVE';
COMMENT ON COLUMN step_calls.output_json IS 'That value as JSON';
COMMENT ON COLUMN step_calls.attempts IS 'Attempts started so far';
COMMENT ON COLUMN step_calls.max_attempts IS 'Attempts allowed by the retry policy in force when the call started';
COMMENT ON COLUMN step_calls.started_at IS 'When its first attempt started';
COMMENT ON COLUMN step_calls.finished_at IS 'When the workflow received its value';

CREATE TABLE step_attempts (
    workflow_id text NOT NULL,
    seq         bigint NOT NULL,
    attempt     integer NOT NULL,
    executor    text NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    outcome     text CHECK (outcome IN ('ok', 'failed', 'rejected')),
    kind        text CHECK (kind IN ('returned-error', 'trapped', 'timed-out', 'out-of-memory', 'interrupted', 'result-too-large', 'cancelled')),
    message     text,
    retry_at    timestamptz,
    stdout      text,
    stderr      text,
    PRIMARY KEY (workflow_id, seq, attempt)
);
COMMENT ON TABLE step_attempts IS 'One row per attempt of a step call, written before the attempt runs and completed after';
COMMENT ON COLUMN step_attempts.workflow_id IS 'The calling workflow';
COMMENT ON COLUMN step_attempts.seq IS 'The step call (step_calls.workflow_id, step_calls.seq)';
COMMENT ON COLUMN step_attempts.attempt IS 'The attempt''s number, from 1, continued across processes';
COMMENT ON COLUMN step_attempts.executor IS 'The process that ran it';
COMMENT ON COLUMN step_attempts.started_at IS 'When the attempt started';
COMMENT ON COLUMN step_attempts.finished_at IS 'When it ended; NULL while it runs, or when the host stopped and its end is unknown';
COMMENT ON COLUMN step_attempts.outcome IS 'ok, failed (see kind) or rejected (the step''s permanent case); NULL while it runs';
COMMENT ON COLUMN step_attempts.kind IS 'Why it failed: returned-error, trapped, timed-out, out-of-memory, interrupted, result-too-large or cancelled';
COMMENT ON COLUMN step_attempts.message IS 'The returned error as WAVE, or the trap with the guest''s stderr and backtrace';
COMMENT ON COLUMN step_attempts.retry_at IS 'When the next attempt is due, for a failed attempt that is retried';
COMMENT ON COLUMN step_attempts.stdout IS 'What the attempt wrote to stdout (captured, up to its output limit)';
COMMENT ON COLUMN step_attempts.stderr IS 'What the attempt wrote to stderr (captured, up to its output limit)';

CREATE TABLE workflow_events (
    id          bigserial PRIMARY KEY,
    workflow_id text NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL,
    kind        text NOT NULL,
    detail      jsonb NOT NULL,
    executor    text
);
CREATE INDEX workflow_events_by_workflow ON workflow_events (workflow_id, id);
COMMENT ON TABLE workflow_events IS 'What happened to a workflow besides its steps: cancel requests, forks, overrides, reclaims';
COMMENT ON COLUMN workflow_events.id IS 'Order of the events';
COMMENT ON COLUMN workflow_events.workflow_id IS 'The workflow';
COMMENT ON COLUMN workflow_events.at IS 'When it happened';
COMMENT ON COLUMN workflow_events.kind IS 'What happened, e.g. cancel-requested, steps-changed, policy-overridden, forked-from, reclaimed';
COMMENT ON COLUMN workflow_events.detail IS 'The particulars, as JSON';
COMMENT ON COLUMN workflow_events.executor IS 'The process that recorded it, if any';

CREATE TABLE workers (
    id           text PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    queues       jsonb NOT NULL,
    concurrency  integer NOT NULL,
    running      integer NOT NULL DEFAULT 0,
    started_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    stopped_at   timestamptz
);
COMMENT ON TABLE workers IS 'One row per host worker process, for operators';
COMMENT ON COLUMN workers.id IS 'The worker''s executor id (host:pid:nonce)';
COMMENT ON COLUMN workers.host IS 'The machine';
COMMENT ON COLUMN workers.pid IS 'The process id';
COMMENT ON COLUMN workers.queues IS 'The queues it claims from, a JSON array';
COMMENT ON COLUMN workers.concurrency IS 'Most workflows it runs at once';
COMMENT ON COLUMN workers.running IS 'Workflows it ran at its last heartbeat';
COMMENT ON COLUMN workers.started_at IS 'When it started';
COMMENT ON COLUMN workers.last_seen_at IS 'Its last heartbeat';
COMMENT ON COLUMN workers.stopped_at IS 'When it stopped cleanly; NULL while it runs or if it died';
