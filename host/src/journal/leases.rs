//! Leases: who may write a workflow's rows. A workflow is created owned
//! (`host run`), taken over once its owner's lease lapsed, renewed by its
//! owner's heartbeat, released on the way out, and finished under it. Every
//! write under a lease checks, in the same statement, its epoch and that it
//! has not expired by the database's clock: a holder cut off past its lease
//! can never write again, even before anyone else claims the workflow.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use super::coalesce::firsts;
use super::deployments::{self, store_deployment};
use super::ends::ENDED;
use super::faults::Outage;
use super::notify::notify;
use super::{
    Backend, BackendKind, Claim, Finish, Journal, JournalError, Lease, NewWorkflow, Renewal, Timestamp, WorkflowStatus,
    statement, with_conn,
};

/// The finish of every workflow of `$1` (epochs `$2`) its lease still holds:
/// status, output, output as JSON, error and when (`$3`–`$7`), one element per workflow.
const FINISH_MANY: &str = "UPDATE workflows w SET status = v.status, output = v.output, output_json = v.output_json, \
     error = v.error, updated_at = v.at, finished_at = v.at, lease_expires_at = NULL \
     FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::jsonb[], $6::text[], $7::timestamptz[]) \
     AS v (id, epoch, status, output, output_json, error, at) \
     WHERE w.id = v.id AND w.lease_epoch = v.epoch AND w.status = 'running' \
     AND w.lease_expires_at > statement_timestamp() RETURNING w.id, w.parent_id, w.parent_detached";

/// A PostgreSQL finish statement (`RETURNING id, …` first) whose ended
/// workflows are announced on the `ended` channel, their ids one per line
/// (ids have no control characters) in as few notices as fit PostgreSQL's
/// 8,000-byte payload: each notice starts under 3,900 bytes and an id has
/// at most 4,000. Returns the other columns.
fn announcing_ends(update: &str, columns: &str) -> String {
    format!(
        "WITH ended AS ({update}) SELECT {columns} FROM ended CROSS JOIN \
         (SELECT count(pg_notify(current_schema() || '_{ENDED}', ids)) FROM \
          (SELECT string_agg(id, E'\\n') AS ids FROM \
           (SELECT id, (sum(octet_length(id) + 1) OVER (ORDER BY id) - octet_length(id) - 1) / 3900 AS notice \
            FROM ended) AS placed GROUP BY notice) AS notices) AS announced"
    )
}

/// A workflow's finish, queued for a batch.
pub(super) struct Ending {
    id: String,
    epoch: i64,
    finish: Finish,
    at: Timestamp,
}

/// What a batch did with one finish.
pub(super) enum Finished {
    /// Ended under its lease: its parent, and whether it is detached.
    Ended((Option<String>, bool)),
    /// Not updated: the lease is lost, or an earlier try already finished it.
    NotHere,
    /// Left out of the batch: to be written alone.
    Alone,
}

/// How long a lease release on the way out retries through an outage.
pub const RELEASE_BUDGET: Duration = Duration::from_secs(2);

/// `lease` in milliseconds, as bound to the lease statements.
pub(super) fn millis(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)
}

/// The condition that the lease `workflows` carries has not expired, as SQL
/// (the fence of every write under a lease, with its epoch).
pub(super) fn live(backend: &Backend) -> String {
    format!("lease_expires_at > {}", backend.now())
}

/// The condition that nobody holds a live lease on the row, as SQL.
pub(super) fn lapsed(backend: &Backend) -> String {
    format!("(lease_expires_at IS NULL OR lease_expires_at <= {})", backend.now())
}

impl Journal {
    /// Records a workflow started by `host run` as running, owned by
    /// `executor` for `lease` from now (the database's clock), before any of
    /// its code runs. `None` if the id exists.
    pub async fn create_workflow(
        &self,
        workflow: &NewWorkflow,
        executor: &str,
        lease: Duration,
    ) -> Result<Option<Lease>, JournalError> {
        let granted_at = Instant::now();
        let stored = deployments::split(&workflow.options);
        let postgres = self.backend.kind() == BackendKind::Postgres;
        let insert = format!(
            "INSERT INTO workflows (id, name, component, component_digest, entry, input, input_json, status, \
             options, executor, lease_epoch, lease_expires_at, created_at, started_at, updated_at, deployment) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'running', $8, $9, 1, {}, $11, $11, $11, $12) \
             ON CONFLICT (id) DO NOTHING",
            self.backend.now_plus("$10")
        );
        let sql = if postgres {
            // Its deployment (`$13`) in the same statement: one round trip, one commit.
            format!("WITH {} {insert}", deployments::store_cte(12, 11))
        } else {
            insert
        };
        let inserted = self
            .commit("create of a workflow", || {
                with_conn!(&self.backend, |conn| {
                    let query = statement::query(sqlx::AssertSqlSafe(sql.clone()))
                        .bind(&workflow.id)
                        .bind(&workflow.name)
                        .bind(&workflow.component)
                        .bind(&workflow.component_digest)
                        .bind(&workflow.entry)
                        .bind(&workflow.input)
                        .bind(&workflow.input_json)
                        .bind(&stored.own)
                        .bind(executor)
                        .bind(millis(lease))
                        .bind(workflow.created_at)
                        .bind(stored.digest.as_deref());
                    let result = if postgres {
                        query.bind(&stored.deployment).execute(&mut *conn).await?
                    } else {
                        // A deployment stored without its row is only not yet shared.
                        store_deployment!(conn, stored);
                        query.execute(&mut *conn).await?
                    };
                    Ok(result.rows_affected() == 1)
                })
            })
            .await?;
        // A retry after an unknown commit outcome finds the row its first try wrote.
        if !inserted {
            let existing = self.workflow(&workflow.id).await?;
            let ours = existing.is_some_and(|row| row.executor.as_deref() == Some(executor) && row.lease_epoch == 1);
            return Ok(ours.then(|| held(&workflow.id, executor, 1, granted_at)));
        }
        Ok(Some(held(&workflow.id, executor, 1, granted_at)))
    }

    /// Takes over a running workflow whose lease expired (or was released),
    /// for `lease` from now: bumps its epoch, so the previous owner can never
    /// write again. Taking over a lease that lapsed (not one released) is
    /// recorded as a `taken-over` event naming the previous owner.
    pub async fn claim_workflow(&self, id: &str, executor: &str, lease: Duration) -> Result<Claim, JournalError> {
        let granted_at = Instant::now();
        let now = Timestamp::now();
        let backend = &self.backend;
        let select = format!(
            "SELECT executor, lease_expires_at IS NOT NULL FROM workflows WHERE id = $1{}",
            backend.for_update()
        );
        let update = format!(
            "UPDATE workflows SET executor = $1, lease_epoch = lease_epoch + 1, lease_expires_at = {}, \
             updated_at = $3 WHERE id = $4 AND status = 'running' AND {} RETURNING lease_epoch",
            backend.now_plus("$2"),
            lapsed(backend)
        );
        let epoch: Option<i64> = self
            .commit("claim of a workflow", || {
                with_conn!(backend, |conn| {
                    let mut tx = match backend.begin_write() {
                        Some(begin) => sqlx::Connection::begin_with(&mut *conn, begin).await?,
                        None => sqlx::Connection::begin(&mut *conn).await?,
                    };
                    let before: Option<(Option<String>, bool)> =
                        statement::query_as(sqlx::AssertSqlSafe(select.clone()))
                            .bind(id)
                            .fetch_optional(&mut *tx)
                            .await?;
                    let epoch: Option<i64> = statement::query_scalar(sqlx::AssertSqlSafe(update.clone()))
                        .bind(executor)
                        .bind(millis(lease))
                        .bind(now)
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if let (Some(epoch), Some((Some(previous), true))) = (epoch, &before) {
                        statement::query(
                            "INSERT INTO workflow_events (workflow_id, at, kind, detail, executor) \
                             VALUES ($1, $2, 'taken-over', $3, $4)",
                        )
                        .bind(id)
                        .bind(now)
                        .bind(serde_json::json!({ "from": previous, "epoch": epoch, "why": "its lease lapsed" }))
                        .bind(executor)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(epoch)
                })
            })
            .await?;
        if let Some(epoch) = epoch {
            return Ok(Claim::Claimed(held(id, executor, epoch, granted_at)));
        }
        Ok(match self.workflow(id).await? {
            None => Claim::Unknown,
            Some(existing) if existing.status != WorkflowStatus::Running => Claim::NotRunning(existing.status),
            // A retry after an unknown commit outcome: the first try claimed it.
            Some(existing) if existing.executor.as_deref() == Some(executor) => {
                Claim::Claimed(held(id, executor, existing.lease_epoch, granted_at))
            }
            Some(existing) => Claim::Owned { executor: existing.executor.unwrap_or_default() },
        })
    }

    /// Takes back, under a new epoch and for `lease` from now, a workflow
    /// whose lease this process let lapse (it could not renew it in time),
    /// if nobody else took it meanwhile: its owner and epoch are still
    /// `held`'s. Nothing queued under the old epoch can land after this.
    /// Recorded as a `taken-back` event. `None` if it is no longer ours.
    pub async fn take_back(&self, held_before: &Lease, lease: Duration) -> Result<Option<Lease>, JournalError> {
        let granted_at = Instant::now();
        let now = Timestamp::now();
        let sql = format!(
            "UPDATE workflows SET lease_epoch = lease_epoch + 1, lease_expires_at = {}, updated_at = $2 \
             WHERE id = $3 AND executor = $4 AND lease_epoch = $5 AND status = 'running' RETURNING lease_epoch",
            self.backend.now_plus("$1")
        );
        let (id, executor) = (&held_before.workflow_id, &held_before.executor);
        let epoch: Option<i64> = self
            .commit("take-back of a lapsed lease", || {
                with_conn!(&self.backend, |conn| {
                    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                    let epoch: Option<i64> = statement::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
                        .bind(millis(lease))
                        .bind(now)
                        .bind(id)
                        .bind(executor)
                        .bind(held_before.epoch)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if let Some(epoch) = epoch {
                        statement::query(
                            "INSERT INTO workflow_events (workflow_id, at, kind, detail, executor) \
                             VALUES ($1, $2, 'taken-back', $3, $4)",
                        )
                        .bind(id)
                        .bind(now)
                        .bind(serde_json::json!({
                            "epoch": epoch,
                            "why": "its lease could not be renewed in time; nobody took it over meanwhile"
                        }))
                        .bind(executor)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(epoch)
                })
            })
            .await?;
        let epoch = match epoch {
            Some(epoch) => Some(epoch),
            // A retry after an unknown commit outcome finds the epoch its first try set.
            None => self
                .workflow(id)
                .await?
                .filter(|row| {
                    row.executor.as_deref() == Some(executor)
                        && row.lease_epoch == held_before.epoch + 1
                        && row.status == WorkflowStatus::Running
                })
                .map(|row| row.lease_epoch),
        };
        Ok(epoch.map(|epoch| held(id, executor, epoch, granted_at)))
    }

    /// Renews exactly the leases in `held` (workflow and epoch) that are
    /// still live, for `lease` from now, in one statement that gets at most
    /// `within` (retries included): a renewal that cannot succeed before the
    /// holder's deadline is worth nothing after it. Says for each whether it
    /// is still held (and whether a cancel was asked), and when the statement
    /// was first sent: the new expiry counts from a moment no earlier.
    pub async fn renew_leases(
        &self,
        executor: &str,
        held: &[Lease],
        lease: Duration,
        within: Duration,
    ) -> Result<(Vec<Renewal>, Instant), JournalError> {
        let sent = Instant::now();
        let backend = &self.backend;
        // The held (workflow, epoch) pairs, as one JSON array of pairs.
        let pairs = match backend {
            Backend::Postgres(_) => "SELECT pair->>0, (pair->>1)::bigint FROM jsonb_array_elements($1::jsonb) AS pair",
            Backend::Sqlite(_) => "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each($1)",
        };
        let sql = format!(
            "UPDATE workflows SET lease_expires_at = {} WHERE (id, lease_epoch) IN ({pairs}) AND executor = $3 \
             AND status = 'running' AND {} RETURNING id, lease_epoch, cancel_requested_at IS NOT NULL",
            backend.now_plus("$2"),
            live(backend)
        );
        let pairs = serde_json::to_string(
            &held.iter().map(|lease| (lease.workflow_id.as_str(), lease.epoch)).collect::<Vec<_>>(),
        )
        .unwrap_or_default();
        let renewed: Vec<(String, i64, bool)> = self
            .commit_within("lease renewal", within, || {
                with_conn!(backend, |conn| {
                    statement::query_as(sqlx::AssertSqlSafe(sql.clone()))
                        .bind(&pairs)
                        .bind(millis(lease))
                        .bind(executor)
                        .fetch_all(conn)
                        .await
                })
            })
            .await?;
        let renewals = held
            .iter()
            .map(|lease| {
                match renewed.iter().find(|(id, epoch, _)| *id == lease.workflow_id && *epoch == lease.epoch) {
                    Some((_, _, cancel)) => Renewal::Held { cancel: *cancel },
                    None => Renewal::Lost,
                }
            })
            .collect();
        Ok((renewals, sent))
    }

    /// Gives up a live lease at once, so the workflow can be resumed without
    /// waiting for it to lapse. False if it was no longer held. On the way
    /// out, it tries through an outage for [`RELEASE_BUDGET`] only.
    pub async fn release(&self, lease: &Lease) -> Result<bool, JournalError> {
        let now = Timestamp::now();
        // A queued workflow goes back to its queue, for any worker to claim at once (its
        // `run_at` is kept: it was due long ago, and goes before newer work).
        let sql = format!(
            "UPDATE workflows SET lease_expires_at = NULL, updated_at = $1, \
             status = CASE WHEN queue IS NULL THEN status ELSE 'enqueued' END \
             WHERE id = $2 AND lease_epoch = $3 AND status = 'running' AND {} RETURNING queue",
            live(&self.backend)
        );
        let attempt = || {
            with_conn!(&self.backend, |conn| {
                let result = statement::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(now)
                    .bind(&lease.workflow_id)
                    .bind(lease.epoch)
                    .fetch_optional(&mut *conn)
                    .await?;
                let released: Option<(Option<String>,)> =
                    result.map(|row| sqlx::FromRow::from_row(&row)).transpose()?;
                if let Some((Some(queue),)) = &released {
                    notify(&mut *conn, &format!("release:{queue}")).await?;
                }
                Ok(released.is_some())
            })
        };
        self.workflow_commits.fetch_add(1, Ordering::Relaxed);
        self.weather
            .retry_for(RELEASE_BUDGET, attempt, || self.backend.reconnect())
            .await
            .map_err(|outage| self.error("release of a lease", outage))
    }

    /// Records how a workflow ended, if `lease` still holds it; done before
    /// its output is shown. False if the lease was lost. On PostgreSQL the
    /// finishes of this process's workflows that end at once share one
    /// statement and one commit.
    pub async fn finish_workflow(&self, lease: &Lease, finish: &Finish) -> Result<bool, JournalError> {
        let now = Timestamp::now();
        let batched = match &self.backend {
            // Through a pooler a statement cannot be prepared once for every batch: alone.
            Backend::Postgres(_) if statement::persistent() => {
                let ending =
                    Ending { id: lease.workflow_id.clone(), epoch: lease.epoch, finish: finish.clone(), at: now };
                self.finishes.call(ending, |endings| self.finish_many(endings)).await
            }
            _ => None,
        };
        let finished = match batched {
            Some(Ok(Finished::Ended(parent))) => Some(parent),
            Some(Ok(Finished::NotHere)) => None,
            Some(Err(error)) => return Err(error),
            // Not batched, or its batch was dropped (or held the same workflow twice): alone.
            Some(Ok(Finished::Alone)) | None => self.finish_one(lease, finish, now).await?,
        };
        if let Some((parent, detached)) = finished {
            if parent.is_some() && !detached {
                self.woke_parent(&lease.workflow_id).await;
            }
            return Ok(true);
        }
        // A retry after an unknown commit outcome finds it finished by this lease.
        let existing = self.workflow(&lease.workflow_id).await?;
        Ok(existing.is_some_and(|row| row.lease_epoch == lease.epoch && row.status == finish.status))
    }

    /// One workflow's finish in a statement of its own: its parent, if it ended here.
    async fn finish_one(
        &self,
        lease: &Lease,
        finish: &Finish,
        now: Timestamp,
    ) -> Result<Option<(Option<String>, bool)>, JournalError> {
        let update = |returning: &str| {
            format!(
                "UPDATE workflows SET status = $1, output = $2, output_json = $3, error = $4, updated_at = $5, \
                 finished_at = $5, lease_expires_at = NULL WHERE id = $6 AND lease_epoch = $7 \
                 AND status = 'running' AND {} RETURNING {returning}",
                live(&self.backend)
            )
        };
        let sql = match &self.backend {
            Backend::Postgres(_) => {
                announcing_ends(&update("id, parent_id, parent_detached"), "parent_id, parent_detached")
            }
            Backend::Sqlite(_) => update("parent_id, parent_detached"),
        };
        self.commit("finish of a workflow", || {
            with_conn!(&self.backend, |conn| {
                statement::query_as(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(finish.status)
                    .bind(finish.output.as_deref())
                    .bind(finish.output_json.as_ref())
                    .bind(finish.error.as_deref())
                    .bind(now)
                    .bind(&lease.workflow_id)
                    .bind(lease.epoch)
                    .fetch_optional(conn)
                    .await
            })
        })
        .await
    }

    /// The finishes of several workflows in one statement (PostgreSQL), each
    /// under its own lease's fence; through outages as group commit does.
    async fn finish_many(&self, endings: Vec<Ending>) -> Vec<Result<Finished, JournalError>> {
        // A workflow twice in one batch (never, with one finish per lease) goes alone.
        let batched = firsts(&endings, |ending| ending.id.clone());
        let chosen: Vec<&Ending> =
            endings.iter().zip(&batched).filter(|(_, in_batch)| **in_batch).map(|(ending, _)| ending).collect();
        let Backend::Postgres(db) = &self.backend else {
            return endings.iter().map(|_| Ok(Finished::Alone)).collect();
        };
        let finish_many = announcing_ends(FINISH_MANY, "id, parent_id, parent_detached");
        let write = || async {
            let mut connection = db.pool().acquire().await?;
            let rows =
                statement::query_as::<_, (String, Option<String>, bool)>(sqlx::AssertSqlSafe(finish_many.clone()))
                    .bind(chosen.iter().map(|ending| ending.id.as_str()).collect::<Vec<_>>())
                    .bind(chosen.iter().map(|ending| ending.epoch).collect::<Vec<_>>())
                    .bind(chosen.iter().map(|ending| ending.finish.status.as_column()).collect::<Vec<_>>())
                    .bind(chosen.iter().map(|ending| ending.finish.output.as_deref()).collect::<Vec<_>>())
                    .bind(chosen.iter().map(|ending| ending.finish.output_json.as_ref()).collect::<Vec<_>>())
                    .bind(chosen.iter().map(|ending| ending.finish.error.as_deref()).collect::<Vec<_>>())
                    .bind(chosen.iter().map(|ending| ending.at).collect::<Vec<_>>())
                    .fetch_all(&mut *connection)
                    .await;
            if rows.is_err() {
                // It may be left mid-statement: never reuse it.
                connection.close_on_drop();
            }
            rows
        };
        let written = self.weather.retry(write, || self.backend.reconnect()).await;
        self.workflow_commits.fetch_add(1, Ordering::Relaxed);
        match written {
            Ok(rows) => {
                let ended: std::collections::HashMap<String, (Option<String>, bool)> =
                    rows.into_iter().map(|(id, parent, detached)| (id, (parent, detached))).collect();
                endings
                    .iter()
                    .zip(batched)
                    .map(|(ending, in_batch)| match (in_batch, ended.get(&ending.id)) {
                        (false, _) => Ok(Finished::Alone),
                        (true, Some(parent)) => Ok(Finished::Ended(parent.clone())),
                        (true, None) => Ok(Finished::NotHere),
                    })
                    .collect()
            }
            Err(Outage { lasted: Some(lasted), error }) => {
                endings.iter().map(|_| Err(self.unreachable_for_each("finish of a workflow", lasted, &error))).collect()
            }
            // Refused (not an outage): each alone, to get its own error.
            Err(Outage { lasted: None, .. }) => endings.iter().map(|_| Ok(Finished::Alone)).collect(),
        }
    }

    /// Replaces a running workflow's recorded options (after a resume that
    /// was allowed to run changed step components).
    pub async fn update_options(&self, lease: &Lease, options: &Json) -> Result<(), JournalError> {
        let stored = deployments::split(options);
        let sql = format!(
            "UPDATE workflows SET options = $1, deployment = $2 WHERE id = $3 AND lease_epoch = $4 AND {}",
            live(&self.backend)
        );
        self.commit("update of a workflow's options", || {
            with_conn!(&self.backend, |conn| {
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                store_deployment!(tx, stored);
                statement::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(&stored.own)
                    .bind(stored.digest.as_deref())
                    .bind(&lease.workflow_id)
                    .bind(lease.epoch)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await
            })
        })
        .await
    }

    /// Gives the unfinished calls of `step` in the workflow `lease` holds a
    /// new attempt budget (a resume with retry-policy overrides).
    pub async fn set_max_attempts(&self, lease: &Lease, step: &str, max_attempts: u32) -> Result<(), JournalError> {
        let max_attempts = i32::try_from(max_attempts).unwrap_or(i32::MAX);
        let sql = format!(
            "UPDATE step_calls SET max_attempts = $1 WHERE workflow_id = $2 AND step = $3 AND status = 'running' \
             AND EXISTS (SELECT 1 FROM workflows WHERE id = $2 AND lease_epoch = $4 AND {})",
            live(&self.backend)
        );
        self.commit("update of a call's attempt budget", || {
            with_conn!(&self.backend, |conn| {
                statement::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(max_attempts)
                    .bind(&lease.workflow_id)
                    .bind(step)
                    .bind(lease.epoch)
                    .execute(conn)
                    .await
                    .map(|_| ())
            })
        })
        .await
    }
}

/// The lease `executor` holds on workflow `id` under `epoch`, granted no earlier than `granted_at`.
pub(super) fn held(id: &str, executor: &str, epoch: i64, granted_at: Instant) -> Lease {
    Lease { workflow_id: id.to_string(), executor: executor.to_string(), epoch, granted_at }
}
