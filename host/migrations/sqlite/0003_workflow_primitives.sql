-- Workflows that wait and talk: a `waiting` status (a sleep or a recv that
-- gave its worker's slot back), the messages sent to workflows, the values
-- they publish (set-event), and the schedules that start them. SQLite cannot
-- change a CHECK in place: the workflows table is rebuilt, in the one
-- transaction of the migration. Dropping the old table deletes its calls,
-- attempts and events through their foreign keys, so they are kept aside and
-- put back.

CREATE TEMP TABLE kept_calls AS SELECT * FROM step_calls;
CREATE TEMP TABLE kept_attempts AS SELECT * FROM step_attempts;
CREATE TEMP TABLE kept_events AS SELECT * FROM workflow_events;

CREATE TABLE workflows_new (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    component           TEXT NOT NULL,
    component_digest    TEXT NOT NULL,
    entry               TEXT NOT NULL,
    input               TEXT NOT NULL,
    input_json          TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('enqueued', 'delayed', 'waiting', 'running', 'succeeded', 'failed', 'cancelled', 'timed-out', 'dead')),
    output              TEXT,
    output_json         TEXT,
    error               TEXT,
    options             TEXT NOT NULL,
    queue               TEXT,
    priority            INTEGER NOT NULL DEFAULT 0,
    partition_key       TEXT,
    dedup_key           TEXT,
    run_at              INTEGER,
    deadline_at         INTEGER,
    executor            TEXT,
    lease_epoch         INTEGER NOT NULL DEFAULT 0,
    lease_expires_at    INTEGER,
    claims              INTEGER NOT NULL DEFAULT 0,
    progress_at_claim   INTEGER NOT NULL DEFAULT 0,
    cancel_requested_at INTEGER,
    created_at          INTEGER NOT NULL,
    started_at          INTEGER,
    updated_at          INTEGER NOT NULL,
    finished_at         INTEGER,
    waiting_for         TEXT,
    wait_topic          TEXT,
    schedule            TEXT,
    scheduled_at        INTEGER
);

INSERT INTO workflows_new (id, name, component, component_digest, entry, input, input_json, status, output, output_json, error, options, queue, priority, partition_key, dedup_key, run_at, deadline_at, executor, lease_epoch, lease_expires_at, claims, progress_at_claim, cancel_requested_at, created_at, started_at, updated_at, finished_at)
    SELECT id, name, component, component_digest, entry, input, input_json, status, output, output_json, error, options, queue, priority, partition_key, dedup_key, run_at, deadline_at, executor, lease_epoch, lease_expires_at, claims, progress_at_claim, cancel_requested_at, created_at, started_at, updated_at, finished_at FROM workflows;
DROP TABLE workflows;
ALTER TABLE workflows_new RENAME TO workflows;
INSERT INTO step_calls SELECT * FROM kept_calls;
INSERT INTO step_attempts SELECT * FROM kept_attempts;
INSERT INTO workflow_events SELECT * FROM kept_events;
DROP TABLE kept_calls;
DROP TABLE kept_attempts;
DROP TABLE kept_events;

CREATE INDEX workflows_by_created ON workflows (created_at DESC, id DESC);
CREATE INDEX workflows_by_status ON workflows (status, created_at DESC, id DESC);
CREATE INDEX workflows_by_name ON workflows (name, created_at DESC, id DESC);
CREATE INDEX workflows_by_queue ON workflows (queue, created_at DESC, id DESC);
CREATE INDEX workflows_claimable ON workflows (queue, priority, run_at, id) WHERE status IN ('enqueued', 'delayed', 'waiting');
CREATE INDEX workflows_by_lease ON workflows (lease_expires_at) WHERE status = 'running';
CREATE INDEX workflows_by_executor ON workflows (executor) WHERE status = 'running';
CREATE INDEX workflows_starts ON workflows (queue, started_at) WHERE queue IS NOT NULL;
CREATE UNIQUE INDEX workflows_dedup ON workflows (queue, dedup_key)
    WHERE dedup_key IS NOT NULL AND status IN ('enqueued', 'delayed', 'waiting', 'running');
CREATE UNIQUE INDEX workflows_by_tick ON workflows (schedule, scheduled_at) WHERE schedule IS NOT NULL;

CREATE TABLE messages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id     TEXT NOT NULL,
    topic           TEXT NOT NULL,
    value           TEXT NOT NULL,
    sender          TEXT NOT NULL,
    idempotency_key TEXT,
    sent_at         INTEGER NOT NULL,
    received_seq    INTEGER,
    received_at     INTEGER
);
CREATE INDEX messages_pending ON messages (workflow_id, topic, id) WHERE received_seq IS NULL;
CREATE UNIQUE INDEX messages_idempotent ON messages (workflow_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE published_events (
    workflow_id TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    set_at      INTEGER NOT NULL,
    PRIMARY KEY (workflow_id, key)
);

CREATE TABLE schedules (
    name         TEXT PRIMARY KEY,
    cron         TEXT NOT NULL,
    timezone     TEXT NOT NULL,
    catch_up     TEXT NOT NULL CHECK (catch_up IN ('skip', 'latest', 'all')),
    queue        TEXT NOT NULL,
    priority     INTEGER NOT NULL DEFAULT 0,
    timeout_ms   INTEGER CHECK (timeout_ms > 0),
    component    TEXT NOT NULL,
    entry        TEXT NOT NULL,
    input        TEXT NOT NULL,
    template     TEXT NOT NULL,
    paused       INTEGER NOT NULL DEFAULT 0,
    next_tick_at INTEGER NOT NULL,
    last_tick_at INTEGER,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_tick_at) WHERE paused = 0;
