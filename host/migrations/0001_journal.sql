-- The stepbox journal, one schema for SQLite and PostgreSQL. Times are
-- milliseconds since the Unix epoch; values (inputs, outputs) are WAVE text,
-- readable with psql.

CREATE TABLE workflows (
    id               TEXT PRIMARY KEY,
    component        TEXT NOT NULL,
    component_digest TEXT NOT NULL,
    entry            TEXT NOT NULL,
    input            TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    output           TEXT,
    error            TEXT,
    executor         TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);

CREATE INDEX workflows_by_status ON workflows (status, created_at);

-- One row per step call: the checkpoint a resumed workflow replays.
CREATE TABLE step_calls (
    workflow_id  TEXT NOT NULL REFERENCES workflows (id),
    seq          BIGINT NOT NULL,
    step         TEXT NOT NULL,
    input        TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'exhausted')),
    output       TEXT,
    attempts     BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    started_at   BIGINT NOT NULL,
    finished_at  BIGINT,
    PRIMARY KEY (workflow_id, seq)
);

-- One row per attempt, written before the attempt runs and completed after.
CREATE TABLE step_attempts (
    workflow_id   TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    attempt       BIGINT NOT NULL,
    started_at    BIGINT NOT NULL,
    finished_at   BIGINT,
    outcome       TEXT CHECK (outcome IN ('ok', 'failed', 'permanent')),
    kind          TEXT,
    message       TEXT,
    next_delay_ms BIGINT,
    PRIMARY KEY (workflow_id, seq, attempt),
    FOREIGN KEY (workflow_id, seq) REFERENCES step_calls (workflow_id, seq)
);
