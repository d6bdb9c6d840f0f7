//! What operators do to workflows: cancel, delete, prune and fork them, and
//! record what happened to them (`workflow_events`).

use serde_json::Value as Json;

use super::deployments::{self, store_deployment};
use super::notify::notify;
use super::{CancelOutcome, Deleted, Forked, Journal, JournalError, Timestamp, WorkflowStatus, statement, with_conn};

/// The final statuses as an SQL list: `'succeeded', 'failed', …`, from the vocabulary.
fn final_statuses() -> String {
    WorkflowStatus::ALL
        .iter()
        .filter(|status| status.is_final())
        .map(|status| format!("'{}'", status.as_column()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A workflow's rows that no foreign key removes with it (the schema says
/// why): deleting a workflow deletes them in its transaction.
const WORKFLOW_ROWS: [&str; 4] = ["step_attempts", "step_calls", "messages", "published_events"];

impl Journal {
    /// Cancels a workflow wherever it is: at once if nobody runs it, else by
    /// asking its owner, which sees the request at its next lease renewal
    /// (at once on PostgreSQL, through NOTIFY) and interrupts its attempt.
    /// The children it started and did not detach are cancelled with it
    /// (theirs too), even when it had ended: cancelling again finishes the job.
    pub async fn request_cancel(&self, id: &str) -> Result<CancelOutcome, JournalError> {
        let outcome = self.cancel_one(id).await?;
        for child in self.attached_descendants(id).await? {
            self.cancel_one(&child).await?;
        }
        Ok(outcome)
    }

    /// Cancels workflow `id` alone; a parent waiting for it hears of it.
    async fn cancel_one(&self, id: &str) -> Result<CancelOutcome, JournalError> {
        let now = Timestamp::now();
        let cancel = format!(
            "UPDATE workflows SET status = 'cancelled', error = 'cancelled on request', finished_at = $1, \
             updated_at = $1, cancel_requested_at = COALESCE(cancel_requested_at, $1), \
             lease_epoch = lease_epoch + 1, lease_expires_at = NULL WHERE id = $2 \
             AND (status IN ('enqueued', 'delayed', 'waiting') OR (status = 'running' AND {}))",
            super::leases::lapsed(&self.backend)
        );
        let outcome = self
            .commit("cancel of a workflow", || {
                with_conn!(&self.backend, |conn| {
                    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                    let cancelled = statement::query(sqlx::AssertSqlSafe(cancel.clone()))
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    let outcome = if cancelled.rows_affected() == 1 {
                        statement::query(
                            "UPDATE step_attempts SET outcome = 'failed', kind = 'interrupted', message = \
                             'the host stopped during this attempt; the workflow was cancelled afterwards' \
                             WHERE workflow_id = $1 AND outcome IS NULL",
                        )
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                        statement::query(
                            "UPDATE step_calls SET status = 'cancelled', finished_at = $1 \
                             WHERE workflow_id = $2 AND status = 'running'",
                        )
                        .bind(now)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                        CancelOutcome::Cancelled
                    } else {
                        let owner: Option<Option<String>> = statement::query_scalar(
                            "UPDATE workflows SET cancel_requested_at = COALESCE(cancel_requested_at, $1) \
                             WHERE id = $2 AND status = 'running' RETURNING executor",
                        )
                        .bind(now)
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                        match owner {
                            Some(executor) => {
                                // Its owner stops it at once (PostgreSQL), else at its next renewal.
                                notify(&mut *tx, &format!("cancel:{id}")).await?;
                                CancelOutcome::Requested { executor: executor.unwrap_or_default() }
                            }
                            None => {
                                let status: Option<WorkflowStatus> =
                                    statement::query_scalar("SELECT status FROM workflows WHERE id = $1")
                                        .bind(id)
                                        .fetch_optional(&mut *tx)
                                        .await?;
                                status.map_or(CancelOutcome::Unknown, CancelOutcome::Finished)
                            }
                        }
                    };
                    if matches!(outcome, CancelOutcome::Cancelled | CancelOutcome::Requested { .. }) {
                        statement::query(
                            "INSERT INTO workflow_events (workflow_id, at, kind, detail) VALUES ($1, $2, 'cancel-requested', $3)",
                        )
                        .bind(id)
                        .bind(now)
                        .bind(serde_json::json!({ "cancelled_at_once": outcome == CancelOutcome::Cancelled }))
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(outcome)
                })
            })
            .await?;
        if outcome == CancelOutcome::Cancelled {
            self.woke_parent(id).await;
        }
        Ok(outcome)
    }

    /// Removes a finished workflow and all its rows, in one transaction.
    pub async fn delete_workflow(&self, id: &str) -> Result<Deleted, JournalError> {
        let delete = format!("DELETE FROM workflows WHERE id = $1 AND status IN ({})", final_statuses());
        self.commit("delete of a workflow", || {
            with_conn!(&self.backend, |conn| {
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                let deleted = statement::query(sqlx::AssertSqlSafe(delete.clone())).bind(id).execute(&mut *tx).await?;
                let outcome = if deleted.rows_affected() == 1 {
                    for table in WORKFLOW_ROWS {
                        let delete = format!("DELETE FROM {table} WHERE workflow_id = $1");
                        statement::query(sqlx::AssertSqlSafe(delete)).bind(id).execute(&mut *tx).await?;
                    }
                    Deleted::Deleted
                } else {
                    let status: Option<WorkflowStatus> =
                        statement::query_scalar("SELECT status FROM workflows WHERE id = $1")
                            .bind(id)
                            .fetch_optional(&mut *tx)
                            .await?;
                    status.map_or(Deleted::Unknown, Deleted::NotFinished)
                };
                tx.commit().await?;
                Ok(outcome)
            })
        })
        .await
    }

    /// Removes every workflow that finished before `before`, with all its
    /// rows, a bounded batch per transaction; returns how many.
    pub async fn prune_workflows(&self, before: Timestamp) -> Result<u64, JournalError> {
        // The workflow rows go first, each checked (and locked) by the delete itself: one that
        // changed meanwhile (a dead workflow requeued) is skipped, and so are its calls and attempts.
        // `before` is in the past, so a workflow finishing meanwhile does not join the batch.
        let finals = final_statuses();
        let delete = format!(
            "DELETE FROM workflows WHERE id IN (SELECT id FROM workflows WHERE status IN ({finals}) \
             AND finished_at < $1 ORDER BY finished_at, id LIMIT 500) AND status IN ({finals}) RETURNING id"
        );
        let mut total = 0;
        loop {
            let deleted = self
                .commit("prune of workflows", || {
                    with_conn!(&self.backend, |conn| {
                        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                        let ids: Vec<String> = statement::query_scalar(sqlx::AssertSqlSafe(delete.clone()))
                            .bind(before)
                            .fetch_all(&mut *tx)
                            .await?;
                        for table in WORKFLOW_ROWS.iter().filter(|_| !ids.is_empty()) {
                            let mut rows =
                                sqlx::QueryBuilder::new(format!("DELETE FROM {table} WHERE workflow_id IN ("));
                            let mut list = rows.separated(", ");
                            for id in &ids {
                                list.push_bind(id);
                            }
                            rows.push(")");
                            rows.build().persistent(false).execute(&mut *tx).await?;
                        }
                        tx.commit().await?;
                        Ok(u64::try_from(ids.len()).unwrap_or(u64::MAX))
                    })
                })
                .await?;
            total += deleted;
            if deleted == 0 {
                return Ok(total);
            }
        }
    }

    /// Creates workflow `new_id` as a copy of `original` whose step calls
    /// before `from_step` (and their attempts) are copied, so it replays them
    /// and runs the rest; `options` are the new workflow's recorded options.
    /// It is enqueued on `queue` (else on the original's queue) for workers,
    /// or, when neither is set, left running without an owner, ready to be resumed.
    pub async fn fork_workflow(
        &self,
        original: &str,
        new_id: &str,
        from_step: i64,
        options: &Json,
        queue: Option<&str>,
    ) -> Result<Forked, JournalError> {
        let now = Timestamp::now();
        let stored = deployments::split(options);
        self.commit("fork of a workflow", || {
            with_conn!(&self.backend, |conn| {
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                let exists: Option<String> = statement::query_scalar("SELECT id FROM workflows WHERE id = $1")
                    .bind(new_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if exists.is_some() {
                    return Ok(Forked::Exists);
                }
                let unfinished: Option<i64> = statement::query_scalar(
                    "SELECT min(seq) FROM step_calls WHERE workflow_id = $1 AND seq < $2 \
                     AND status IN ('running', 'cancelled')",
                )
                .bind(original)
                .bind(from_step)
                .fetch_one(&mut *tx)
                .await?;
                if let Some(seq) = unfinished {
                    return Ok(Forked::Unfinished(seq));
                }
                // Epoch 1, as if its copied journal had been written under a lease of its own:
                // its first claim (epoch 2) reads that journal (`Claimed::first_lease`).
                store_deployment!(tx, stored);
                let created: Option<Option<String>> = statement::query_scalar(
                    "INSERT INTO workflows (id, name, component, component_digest, entry, input, input_json, status, \
                     options, queue, priority, partition_key, run_at, lease_epoch, created_at, updated_at, \
                     deployment) SELECT $1, name, component, component_digest, entry, input, input_json, \
                     CASE WHEN COALESCE($5, queue) IS NULL THEN 'running' ELSE 'enqueued' END, $2, \
                     COALESCE($5, queue), priority, partition_key, $3, 1, $3, $3, $6 FROM workflows WHERE id = $4 \
                     RETURNING queue",
                )
                .bind(new_id)
                .bind(&stored.own)
                .bind(now)
                .bind(original)
                .bind(queue)
                .bind(stored.digest.as_deref())
                .fetch_optional(&mut *tx)
                .await?;
                let Some(queued) = created else {
                    return Ok(Forked::Unknown);
                };
                let copied = statement::query(
                    "INSERT INTO step_calls (workflow_id, seq, step, input, input_json, status, output, output_json, \
                     attempts, max_attempts, started_at, finished_at) SELECT $1, seq, step, input, input_json, status, \
                     output, output_json, attempts, max_attempts, started_at, finished_at FROM step_calls \
                     WHERE workflow_id = $2 AND seq < $3",
                )
                .bind(new_id)
                .bind(original)
                .bind(from_step)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                statement::query(
                    "INSERT INTO step_attempts (workflow_id, seq, attempt, executor, started_at, finished_at, outcome, \
                     kind, message, retry_at, stdout, stderr) SELECT $1, seq, attempt, executor, started_at, \
                     finished_at, outcome, kind, message, retry_at, stdout, stderr FROM step_attempts \
                     WHERE workflow_id = $2 AND seq < $3",
                )
                .bind(new_id)
                .bind(original)
                .bind(from_step)
                .execute(&mut *tx)
                .await?;
                for (workflow, kind, detail) in [
                    (new_id, "forked-from", serde_json::json!({ "workflow": original, "from_step": from_step })),
                    (original, "forked-to", serde_json::json!({ "workflow": new_id, "from_step": from_step })),
                ] {
                    statement::query(
                        "INSERT INTO workflow_events (workflow_id, at, kind, detail) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(workflow)
                    .bind(now)
                    .bind(kind)
                    .bind(detail)
                    .execute(&mut *tx)
                    .await?;
                }
                if let Some(queue) = queued {
                    notify(&mut *tx, &format!("submit:{queue}")).await?;
                }
                tx.commit().await?;
                Ok(Forked::Forked { copied: i64::try_from(copied).unwrap_or(i64::MAX) })
            })
        })
        .await
    }

    /// Records that `kind` happened to a workflow, with its particulars.
    pub async fn record_event(
        &self,
        workflow_id: &str,
        kind: &str,
        detail: &Json,
        executor: Option<&str>,
    ) -> Result<(), JournalError> {
        let now = Timestamp::now();
        self.commit("record of an event", || {
            with_conn!(&self.backend, |conn| {
                statement::query(
                    "INSERT INTO workflow_events (workflow_id, at, kind, detail, executor) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(workflow_id)
                .bind(now)
                .bind(kind)
                .bind(detail)
                .bind(executor)
                .execute(conn)
                .await
                .map(|_| ())
            })
        })
        .await
    }
}
