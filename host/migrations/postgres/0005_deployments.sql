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
