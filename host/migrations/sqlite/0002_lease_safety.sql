-- Lease safety: a worker's row says how long its leases last (it is lost once
-- silent for longer).
ALTER TABLE workers ADD COLUMN lease_ms INTEGER NOT NULL DEFAULT 10000 CHECK (lease_ms > 0);
