//! Worker processes' own rows, for operators: registered at start,
//! renewed by a heartbeat, marked stopped on a clean exit, and lost once
//! silent for longer than their lease (by the database's clock).

use super::{Journal, JournalError, WorkerInfo, WorkerRecord, statement, with_conn};

impl Journal {
    /// Records a worker that started.
    pub async fn register_worker(&self, worker: &WorkerInfo) -> Result<(), JournalError> {
        let queues = serde_json::json!(worker.queues);
        let sql = format!(
            "INSERT INTO workers (id, host, pid, queues, concurrency, running, started_at, last_seen_at, lease_ms) \
             VALUES ($1, $2, $3, $4, $5, 0, {now}, {now}, $6) ON CONFLICT (id) DO NOTHING",
            now = self.backend.now()
        );
        self.commit("register of a worker", || {
            with_conn!(&self.backend, |conn| {
                statement::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(&worker.id)
                    .bind(&worker.host)
                    .bind(worker.pid)
                    .bind(&queues)
                    .bind(worker.concurrency)
                    .bind(super::leases::millis(worker.lease))
                    .execute(conn)
                    .await
                    .map(drop)
            })
        })
        .await
    }

    /// A worker's heartbeat: it lives and runs `running` workflows (`stopped`: it stopped cleanly).
    /// A stopped worker's row no longer changes, so a heartbeat still in flight at the stop
    /// cannot undo it.
    /// Times are the database's clock, as the lease its state is judged by.
    pub async fn worker_seen(&self, id: &str, running: i32, stopped: bool) -> Result<(), JournalError> {
        let sql = format!(
            "UPDATE workers SET last_seen_at = {now}, running = $1, stopped_at = CASE WHEN $2 THEN {now} END \
             WHERE id = $3 AND stopped_at IS NULL",
            now = self.backend.now()
        );
        self.commit("heartbeat of a worker", || {
            with_conn!(&self.backend, |conn| {
                statement::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(running)
                    .bind(stopped)
                    .bind(id)
                    .execute(conn)
                    .await
                    .map(drop)
            })
        })
        .await
    }

    /// The workers, the live ones first. A worker is `lost` once its last
    /// heartbeat (every third of its lease) is older than its lease: the leases
    /// of its workflows have lapsed then, and the other workers reap them.
    pub async fn workers(&self) -> Result<Vec<WorkerRecord>, JournalError> {
        let backend = &self.backend;
        let sql = format!(
            "SELECT id, host, pid, queues, concurrency, running, started_at, last_seen_at, stopped_at, lease_ms, \
             CASE WHEN stopped_at IS NOT NULL THEN 'stopped' WHEN {} < {} THEN 'lost' ELSE 'live' END AS state \
             FROM workers ORDER BY stopped_at IS NOT NULL, last_seen_at DESC LIMIT 200",
            backend.plus_millis("last_seen_at", "lease_ms"),
            backend.now()
        );
        self.run("read of workers", || {
            with_conn!(backend, |conn| statement::query_as(sqlx::AssertSqlSafe(sql.clone())).fetch_all(conn).await)
        })
        .await
    }
}
