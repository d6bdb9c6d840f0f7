-- Durable workflows: what is needed to resume a workflow without its command
-- line, and a lease so two processes never run the same workflow at once.

-- The run options (component and step paths, entry, arguments, policy) as JSON.
ALTER TABLE workflows ADD COLUMN options TEXT NOT NULL DEFAULT '{}';
-- Milliseconds since the epoch until which `executor` owns the workflow.
ALTER TABLE workflows ADD COLUMN lease_expires_at BIGINT;

CREATE INDEX workflows_by_lease ON workflows (status, lease_expires_at);
