//! A workflow's own operations (a sleep, a `recv`, a `send`, a `set-event`)
//! as rows of `step_calls`, in the sequence of its step calls, so a resume
//! replays them like steps; and a wait that gives the worker's slot back
//! (`waiting`, until its time or a message). Every write is fenced by the
//! lease, in the same transaction.

use serde_json::Value as Json;

use super::leases::live;
use super::notify::notify;
use super::{Backend, Journal, JournalError, Lease, Timestamp, WaitKind, statement, with_conn};

/// A workflow operation's first row.
#[derive(Debug, Clone)]
pub struct NewOperation {
    /// Its position in the workflow, from 1 (shared with step calls).
    pub seq: i64,
    /// The function called, `stepbox:runtime/workflow-context.sleep`.
    pub name: String,
    /// The arguments, a WAVE tuple.
    pub input: String,
    pub input_json: Json,
}

/// Why a running workflow gives its slot back, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub kind: WaitKind,
    /// The topic a message wait listens on.
    pub topic: Option<String>,
    /// When the wait ends by itself; `None`: only a message ends it.
    pub until: Option<Timestamp>,
}

/// What `wait_workflow` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// The workflow is `waiting`; its lease is released.
    Parked,
    /// What it waits for is already there (a message, a child's end): it runs on.
    MessageWaiting,
}

/// The fence of a write under a lease, as SQL: the workflow's row if the
/// lease still holds it (its epoch, unexpired by the database's clock),
/// locked for the transaction (on SQLite the transaction holds the file's
/// write lock already).
pub(super) fn fence_sql(backend: &Backend) -> String {
    format!(
        "SELECT id FROM workflows WHERE id = $1 AND lease_epoch = $2 AND status = 'running' AND {}{}",
        live(backend),
        backend.for_update()
    )
}

/// Whether `$lease` still holds its workflow, its row locked in `$tx` (see [`fence_sql`]).
macro_rules! fenced {
    ($backend:expr, $tx:expr, $lease:expr) => {
        statement::query_scalar::<_, String>(sqlx::AssertSqlSafe($crate::journal::waits::fence_sql($backend)))
            .bind(&$lease.workflow_id)
            .bind($lease.epoch)
            .fetch_optional(&mut *$tx)
            .await?
            .is_some()
    };
}
pub(super) use fenced;

/// Writes `$operation`'s call row in `$tx`, ended with `$output` and
/// `$output_json` (a row that exists is left as it is).
macro_rules! write_ended {
    ($tx:expr, $lease:expr, $operation:expr, $output:expr, $output_json:expr) => {{
        let now = $crate::journal::Timestamp::now();
        statement::query(
            "INSERT INTO step_calls (workflow_id, seq, step, input, input_json, status, output, output_json, \
             attempts, max_attempts, started_at, finished_at) VALUES ($1, $2, $3, $4, $5, 'succeeded', $6, $7, 0, 0, \
             $8, $8) ON CONFLICT (workflow_id, seq) DO NOTHING",
        )
        .bind(&$lease.workflow_id)
        .bind($operation.seq)
        .bind(&$operation.name)
        .bind(&$operation.input)
        .bind(&$operation.input_json)
        .bind($output)
        .bind($output_json)
        .bind(now)
        .execute(&mut *$tx)
        .await?;
    }};
}
pub(super) use write_ended;

/// Begins a write transaction on `conn`: `BEGIN IMMEDIATE` on SQLite.
macro_rules! begin_write {
    ($backend:expr, $conn:expr) => {
        match $backend.begin_write() {
            Some(begin) => sqlx::Connection::begin_with(&mut *$conn, begin).await?,
            None => sqlx::Connection::begin(&mut *$conn).await?,
        }
    };
}
pub(super) use begin_write;

impl Journal {
    /// Writes operation `operation`'s row (running) unless it exists, under
    /// `lease`; its start time (the first one, on a resume).
    pub async fn start_operation(&self, lease: &Lease, operation: &NewOperation) -> Result<Timestamp, JournalError> {
        let backend = &self.backend;
        let started: Option<Timestamp> = self
            .commit("start of a workflow operation", || {
                with_conn!(backend, |conn| {
                    let mut tx = begin_write!(backend, conn);
                    if !fenced!(backend, tx, lease) {
                        return Ok(None);
                    }
                    statement::query(
                        "INSERT INTO step_calls (workflow_id, seq, step, input, input_json, status, attempts, \
                         max_attempts, started_at) VALUES ($1, $2, $3, $4, $5, 'running', 0, 0, $6) \
                         ON CONFLICT (workflow_id, seq) DO NOTHING",
                    )
                    .bind(&lease.workflow_id)
                    .bind(operation.seq)
                    .bind(&operation.name)
                    .bind(&operation.input)
                    .bind(&operation.input_json)
                    .bind(Timestamp::now())
                    .execute(&mut *tx)
                    .await?;
                    let started: Timestamp = statement::query_scalar(
                        "SELECT started_at FROM step_calls WHERE workflow_id = $1 AND seq = $2",
                    )
                    .bind(&lease.workflow_id)
                    .bind(operation.seq)
                    .fetch_one(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(Some(started))
                })
            })
            .await?;
        started.ok_or_else(|| self.not_owner(lease))
    }

    /// Ends operation `seq` (succeeded) with what the workflow received,
    /// under `lease`; its end time (the first one, if it had ended).
    pub async fn finish_operation(
        &self,
        lease: &Lease,
        seq: i64,
        output: Option<&str>,
        output_json: &Json,
    ) -> Result<Timestamp, JournalError> {
        let backend = &self.backend;
        let finished: Option<Timestamp> = self
            .commit("end of a workflow operation", || {
                with_conn!(backend, |conn| {
                    let mut tx = begin_write!(backend, conn);
                    if !fenced!(backend, tx, lease) {
                        return Ok(None);
                    }
                    statement::query(
                        "UPDATE step_calls SET status = 'succeeded', output = $1, output_json = $2, finished_at = $3 \
                         WHERE workflow_id = $4 AND seq = $5 AND status = 'running'",
                    )
                    .bind(output)
                    .bind(output_json)
                    .bind(Timestamp::now())
                    .bind(&lease.workflow_id)
                    .bind(seq)
                    .execute(&mut *tx)
                    .await?;
                    let finished: Option<Timestamp> = statement::query_scalar(
                        "SELECT finished_at FROM step_calls WHERE workflow_id = $1 AND seq = $2",
                    )
                    .bind(&lease.workflow_id)
                    .bind(seq)
                    .fetch_one(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(finished)
                })
            })
            .await?;
        finished.ok_or_else(|| self.not_owner(lease))
    }

    /// Parks a queued workflow whose own code waits: `waiting`, its lease
    /// released, claimable again when `waiting.until` passes or (for a message
    /// wait) when a message on its topic arrives. A message already there
    /// keeps it running instead. The row is locked first, so a send either
    /// sees it waiting (and wakes it) or comes before this looks.
    pub async fn wait_workflow(&self, lease: &Lease, waiting: &Waiting) -> Result<Waited, JournalError> {
        let backend = &self.backend;
        let update = format!(
            "UPDATE workflows SET status = 'waiting', run_at = $1, waiting_for = $2, wait_topic = $3, \
             lease_expires_at = NULL, updated_at = $4 WHERE id = $5 AND lease_epoch = $6 AND status = 'running' \
             AND queue IS NOT NULL AND {}",
            live(backend)
        );
        let waited: Option<Waited> = self
            .commit("park of a waiting workflow", || {
                with_conn!(backend, |conn| {
                    let mut tx = begin_write!(backend, conn);
                    if !fenced!(backend, tx, lease) {
                        return Ok(None);
                    }
                    let pending: i64 = match (waiting.kind, &waiting.topic) {
                        (WaitKind::Message, Some(topic)) => {
                            statement::query_scalar(
                                "SELECT count(*) FROM messages WHERE workflow_id = $1 AND topic = $2 \
                                 AND received_seq IS NULL",
                            )
                            .bind(&lease.workflow_id)
                            .bind(topic)
                            .fetch_one(&mut *tx)
                            .await?
                        }
                        // The child ended already: its end woke nobody, so nothing would.
                        (WaitKind::Child, Some(child)) => {
                            statement::query_scalar(sqlx::AssertSqlSafe(format!(
                                "SELECT count(*) FROM workflows WHERE id = $1 AND status NOT IN ({})",
                                super::queue::LIVE
                            )))
                            .bind(child)
                            .fetch_one(&mut *tx)
                            .await?
                        }
                        _ => 0,
                    };
                    if pending > 0 {
                        return Ok(Some(Waited::MessageWaiting));
                    }
                    let parked = statement::query(sqlx::AssertSqlSafe(update.clone()))
                        .bind(waiting.until)
                        .bind(waiting.kind)
                        .bind(&waiting.topic)
                        .bind(Timestamp::now())
                        .bind(&lease.workflow_id)
                        .bind(lease.epoch)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if parked == 0 {
                        return Ok(None);
                    }
                    // Other workers' poll learns the new due time; NOTIFY tells them at once.
                    notify(&mut *tx, "release:*").await?;
                    tx.commit().await?;
                    Ok(Some(Waited::Parked))
                })
            })
            .await?;
        waited.ok_or_else(|| self.not_owner(lease))
    }

    /// The error of a write refused by the fence.
    pub(super) fn not_owner(&self, lease: &Lease) -> JournalError {
        JournalError::NotOwner { location: self.location.to_string(), id: lease.workflow_id.clone() }
    }
}
