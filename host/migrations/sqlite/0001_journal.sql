-- The stepbox journal on SQLite: the same tables as on PostgreSQL. Times are
-- milliseconds since the Unix epoch; JSON columns are text. Values are WAVE
-- text, the source of truth, with a JSON rendering beside them.

CREATE TABLE components (
    digest    TEXT PRIMARY KEY,
    name      TEXT NOT NULL,
    size      INTEGER NOT NULL,
    bytes     BLOB NOT NULL,
    stored_at INTEGER NOT NULL
);

CREATE TABLE queues (
    name                  TEXT PRIMARY KEY,
    concurrency           INTEGER CHECK (concurrency > 0),
    partition_concurrency INTEGER CHECK (partition_concurrency > 0),
    rate_limit            INTEGER CHECK (rate_limit > 0),
    rate_period_ms        INTEGER CHECK (rate_period_ms > 0),
    updated_at            INTEGER NOT NULL
);

CREATE TABLE workflows (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    component           TEXT NOT NULL,
    component_digest    TEXT NOT NULL,
    entry               TEXT NOT NULL,
    input               TEXT NOT NULL,
    input_json          TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('enqueued', 'delayed', 'running', 'succeeded', 'failed', 'cancelled', 'timed-out', 'dead')),
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
    finished_at         INTEGER
);

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

CREATE TABLE step_calls (
    workflow_id  TEXT NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    seq          INTEGER NOT NULL,
    step         TEXT NOT NULL,
    input        TEXT NOT NULL,
    input_json   TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'rejected', 'exhausted', 'cancelled')),
    output       TEXT,
    output_json  TEXT,
    attempts     INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    PRIMARY KEY (workflow_id, seq)
);

CREATE TABLE step_attempts (
    workflow_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    executor    TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    outcome     TEXT CHECK (outcome IN ('ok', 'failed', 'rejected')),
    kind        TEXT CHECK (kind IN ('returned-error', 'trapped', 'timed-out', 'out-of-memory', 'interrupted', 'result-too-large', 'cancelled')),
    message     TEXT,
    retry_at    INTEGER,
    stdout      TEXT,
    stderr      TEXT,
    PRIMARY KEY (workflow_id, seq, attempt),
    FOREIGN KEY (workflow_id, seq) REFERENCES step_calls (workflow_id, seq) ON DELETE CASCADE
);

CREATE TABLE workflow_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id TEXT NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    detail      TEXT NOT NULL,
    executor    TEXT
);
CREATE INDEX workflow_events_by_workflow ON workflow_events (workflow_id, id);

CREATE TABLE workers (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    queues       TEXT NOT NULL,
    concurrency  INTEGER NOT NULL,
    running      INTEGER NOT NULL DEFAULT 0,
    started_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    stopped_at   INTEGER
);
