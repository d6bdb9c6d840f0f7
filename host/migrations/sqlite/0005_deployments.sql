-- Deployments stored once, as on PostgreSQL: a workflow's row keeps only its
-- own part of its options (its arguments) and the digest of its deployment.
CREATE TABLE deployments (
    digest     TEXT PRIMARY KEY,
    deployment TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

ALTER TABLE workflows ADD COLUMN deployment TEXT;
