-- Child workflows: the workflow that started one (its parent), and whether
-- the parent let it go (detached: not awaited, not cancelled with it).
ALTER TABLE workflows ADD COLUMN parent_id text;
ALTER TABLE workflows ADD COLUMN parent_detached boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN workflows.parent_id IS 'The workflow whose start-child started it (workflows.id)';
COMMENT ON COLUMN workflows.parent_detached IS 'Started detached: its parent does not await it, and cancelling the parent leaves it running';
CREATE INDEX workflows_by_parent ON workflows (parent_id, created_at) WHERE parent_id IS NOT NULL;
