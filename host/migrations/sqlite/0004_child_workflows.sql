-- Child workflows: the workflow that started one (its parent), and whether
-- the parent let it go (detached: not awaited, not cancelled with it).
ALTER TABLE workflows ADD COLUMN parent_id TEXT;
ALTER TABLE workflows ADD COLUMN parent_detached INTEGER NOT NULL DEFAULT 0;
CREATE INDEX workflows_by_parent ON workflows (parent_id, created_at) WHERE parent_id IS NOT NULL;
