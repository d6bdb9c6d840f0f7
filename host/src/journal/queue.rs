//! The journal as a queue for workers on any number of machines: submit
//! (a dedup key per queue), claim with `FOR UPDATE SKIP LOCKED` in
//! (priority, run_at, id) order within the queue's limits, park a workflow
//! until a retry far away, give up on one that cannot run, reap the
//! workflows of workers that died (dead after too many crashes without
//! progress), and requeue one by hand.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use sqlx::Connection as _;

use super::coalesce::firsts;
use super::deployments::{self, store_deployment};
use super::faults::Outage;
use super::leases::{held, lapsed, live, millis};
use super::notify::{EVENTS, notify};
use super::{
    Backend, BackendKind, Claimed, Journal, JournalError, Lease, NewSubmission, QueueLimits, QueueRecord, Reaped,
    Requeued, Submitted, Timestamp, WorkflowRecord, WorkflowStatus, statement, with_conn, workflow_columns,
};

/// The queue a workflow is submitted to when none is named.
pub const DEFAULT_QUEUE: &str = "default";

/// PostgreSQL's SQLSTATE for a lock not granted within `lock_timeout`.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// The SQL list of live statuses (one live workflow per dedup key).
pub(super) const LIVE: &str = "'enqueued', 'delayed', 'waiting', 'running'";

/// A submitted workflow's row, unless its id (or its live dedup key) is taken
/// (`$17`: its deployment's digest, stored before).
const SUBMIT_INSERT: &str = "INSERT INTO workflows (id, name, component, component_digest, entry, input, input_json, \
     status, options, queue, priority, partition_key, dedup_key, run_at, deadline_at, created_at, updated_at, \
     deployment) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16, $17) \
     ON CONFLICT DO NOTHING";

/// The rows of several submits, one array per column (`$1`–`$17`, in
/// [`SUBMIT_INSERT`]'s order), unless an id or a live dedup key is taken,
/// with the deployments they name (`$18` digests, `$19` JSON) unless stored;
/// the ids that went in, and one NOTIFY per queue that got work.
static SUBMIT_MANY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH stored AS (INSERT INTO deployments (digest, deployment, created_at) \
         SELECT digest, deployment, statement_timestamp() FROM unnest($18::text[], $19::jsonb[]) \
         AS d (digest, deployment) ON CONFLICT (digest) DO NOTHING), \
         inserted AS (INSERT INTO workflows (id, name, component, component_digest, entry, input, input_json, \
         status, options, queue, priority, partition_key, dedup_key, run_at, deadline_at, created_at, deployment, \
         updated_at) \
         SELECT *, created_at FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
         $7::jsonb[], $8::text[], $9::jsonb[], $10::text[], $11::integer[], $12::text[], $13::text[], \
         $14::timestamptz[], $15::timestamptz[], $16::timestamptz[], $17::text[]) AS v (id, name, component, \
         component_digest, entry, input, input_json, status, options, queue, priority, partition_key, dedup_key, \
         run_at, deadline_at, created_at, deployment) ON CONFLICT DO NOTHING RETURNING id, queue), \
         woken AS (SELECT count(pg_notify(current_schema() || '_{EVENTS}', 'submit:' || queue)) AS queues \
         FROM (SELECT DISTINCT queue FROM inserted) AS q) \
         SELECT id FROM inserted, woken"
    )
});

/// Progress of a workflow: its finished step calls, as an SQL expression on `workflows`.
const CALLS_DONE: &str =
    "(SELECT count(*) FROM step_calls c WHERE c.workflow_id = workflows.id AND c.status <> 'running')";

impl Journal {
    /// Hands a workflow to its queue (enqueued, or delayed until `run_at`);
    /// wakes the workers. A dedup key already held by a live workflow of the
    /// queue gives that workflow's id instead.
    pub async fn submit_workflow(&self, submission: &NewSubmission) -> Result<Submitted, JournalError> {
        let workflow = &submission.workflow;
        let now = Timestamp::now();
        let status = if submission.run_at > now { WorkflowStatus::Delayed } else { WorkflowStatus::Enqueued };
        // Through a pooler a statement cannot be prepared once for every batch: alone.
        if matches!(self.backend, Backend::Postgres(_)) && statement::persistent() {
            let batched = self.submits.call((submission.clone(), status), |batch| self.submit_many(batch)).await;
            match batched {
                Some(Ok(true)) => return Ok(Submitted::New),
                Some(Err(error)) => return Err(error),
                // Its id or dedup key is taken (or its batch was dropped): alone, which says by whom.
                Some(Ok(false)) | None => {}
            }
        }
        let stored = deployments::split(&workflow.options);
        // The row's values, bound to either statement below.
        macro_rules! row {
            ($query:expr) => {
                $query
                    .bind(&workflow.id)
                    .bind(&workflow.name)
                    .bind(&workflow.component)
                    .bind(&workflow.component_digest)
                    .bind(&workflow.entry)
                    .bind(&workflow.input)
                    .bind(&workflow.input_json)
                    .bind(status)
                    .bind(&stored.own)
                    .bind(&submission.queue)
                    .bind(submission.priority)
                    .bind(submission.partition_key.as_deref())
                    .bind(submission.dedup_key.as_deref())
                    .bind(submission.run_at)
                    .bind(submission.deadline_at)
                    .bind(workflow.created_at)
                    .bind(stored.digest.as_deref())
            };
        }
        let postgres = self.backend.kind() == BackendKind::Postgres;
        let insert_new = if postgres {
            // Its deployment (`$18`), the insert and its wake-up in one statement: one round trip, one commit.
            format!(
                "WITH {}, inserted AS ({SUBMIT_INSERT} RETURNING queue) \
                 SELECT pg_notify(current_schema() || '_{EVENTS}', 'submit:' || queue) FROM inserted",
                deployments::store_cte(17, 16)
            )
        } else {
            SUBMIT_INSERT.to_string()
        };
        self.commit("submit of a workflow", || {
            with_conn!(&self.backend, |conn| {
                // A new row, as nearly every submit is, costs no transaction around it
                // (on SQLite, a deployment stored without its row is only not yet shared).
                let query = row!(statement::query(sqlx::AssertSqlSafe(insert_new.clone())));
                let inserted = if postgres {
                    query.bind(&stored.deployment).execute(&mut *conn).await?
                } else {
                    store_deployment!(conn, stored);
                    query.execute(&mut *conn).await?
                };
                if inserted.rows_affected() == 1 {
                    return Ok(Submitted::New);
                }
                // Its id or dedup key is taken: insert again beside the reads that say by whom.
                let mut tx = conn.begin().await?;
                store_deployment!(tx, stored);
                let inserted = row!(statement::query(SUBMIT_INSERT)).execute(&mut *tx).await?;
                let outcome = if inserted.rows_affected() == 1 {
                    notify(&mut *tx, &format!("submit:{}", submission.queue)).await?;
                    Submitted::New
                } else {
                    let deduplicated: Option<String> =
                        match &submission.dedup_key {
                            Some(key) => statement::query_scalar(sqlx::AssertSqlSafe(format!(
                                "SELECT id FROM workflows WHERE queue = $1 AND dedup_key = $2 AND status IN ({LIVE})"
                            )))
                            .bind(&submission.queue)
                            .bind(key)
                            .fetch_optional(&mut *tx)
                            .await?,
                            None => None,
                        };
                    match deduplicated {
                        Some(id) => Submitted::Deduplicated(id),
                        None => {
                            // The same submission again (an unknown commit outcome retried) is not a conflict.
                            let same: Option<(String, String, Option<String>)> = statement::query_as(
                                "SELECT component_digest, input, queue FROM workflows WHERE id = $1",
                            )
                            .bind(&workflow.id)
                            .fetch_optional(&mut *tx)
                            .await?;
                            match same {
                                Some((digest, input, Some(queue)))
                                    if digest == workflow.component_digest
                                        && input == workflow.input
                                        && queue == submission.queue =>
                                {
                                    Submitted::New
                                }
                                _ => Submitted::IdTaken,
                            }
                        }
                    }
                };
                tx.commit().await?;
                Ok(outcome)
            })
        })
        .await
    }

    /// New workflows of several submits in one statement (PostgreSQL), with
    /// one wake-up per queue; true for each whose row went in. Through
    /// outages as group commit does.
    async fn submit_many(&self, batch: Vec<(NewSubmission, WorkflowStatus)>) -> Vec<Result<bool, JournalError>> {
        let Backend::Postgres(db) = &self.backend else {
            return batch.iter().map(|_| Ok(false)).collect();
        };
        // An id twice in one batch goes alone the second time, to be told it is taken.
        let batched = firsts(&batch, |(submission, _)| submission.workflow.id.clone());
        let rows: Vec<&(NewSubmission, WorkflowStatus)> =
            batch.iter().zip(&batched).filter(|(_, in_batch)| **in_batch).map(|(row, _)| row).collect();
        let column = |value: fn(&NewSubmission) -> &str| rows.iter().map(|(s, _)| value(s)).collect::<Vec<_>>();
        let stored: Vec<deployments::StoredOptions> =
            rows.iter().map(|(s, _)| deployments::split(&s.workflow.options)).collect();
        let named: BTreeMap<&str, &serde_json::Value> =
            stored.iter().filter_map(|stored| Some((stored.digest.as_deref()?, &stored.deployment))).collect();
        let write = || async {
            let mut connection = db.pool().acquire().await?;
            let inserted = statement::query_scalar::<_, String>(SUBMIT_MANY.as_str())
                .bind(column(|s| &s.workflow.id))
                .bind(column(|s| &s.workflow.name))
                .bind(column(|s| &s.workflow.component))
                .bind(column(|s| &s.workflow.component_digest))
                .bind(column(|s| &s.workflow.entry))
                .bind(column(|s| &s.workflow.input))
                .bind(rows.iter().map(|(s, _)| &s.workflow.input_json).collect::<Vec<_>>())
                .bind(rows.iter().map(|(_, status)| status.as_column()).collect::<Vec<_>>())
                .bind(stored.iter().map(|stored| &stored.own).collect::<Vec<_>>())
                .bind(column(|s| &s.queue))
                .bind(rows.iter().map(|(s, _)| s.priority).collect::<Vec<_>>())
                .bind(rows.iter().map(|(s, _)| s.partition_key.as_deref()).collect::<Vec<_>>())
                .bind(rows.iter().map(|(s, _)| s.dedup_key.as_deref()).collect::<Vec<_>>())
                .bind(rows.iter().map(|(s, _)| s.run_at).collect::<Vec<_>>())
                .bind(rows.iter().map(|(s, _)| s.deadline_at).collect::<Vec<_>>())
                .bind(rows.iter().map(|(s, _)| s.workflow.created_at).collect::<Vec<_>>())
                .bind(stored.iter().map(|stored| stored.digest.as_deref()).collect::<Vec<_>>())
                .bind(named.keys().copied().collect::<Vec<_>>())
                .bind(named.values().collect::<Vec<_>>())
                .fetch_all(&mut *connection)
                .await;
            if inserted.is_err() {
                // It may be left mid-statement: never reuse it.
                connection.close_on_drop();
            }
            inserted
        };
        let written = self.weather.retry(write, || self.backend.reconnect()).await;
        self.workflow_commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match written {
            Ok(inserted) => {
                let inserted: HashSet<String> = inserted.into_iter().collect();
                batch
                    .iter()
                    .zip(batched)
                    .map(|((submission, _), in_batch)| Ok(in_batch && inserted.contains(&submission.workflow.id)))
                    .collect()
            }
            Err(Outage { lasted: Some(lasted), error }) => {
                batch.iter().map(|_| Err(self.unreachable_for_each("submit of a workflow", lasted, &error))).collect()
            }
            // Refused (not an outage): each alone, to get its own error.
            Err(Outage { lasted: None, .. }) => batch.iter().map(|_| Ok(false)).collect(),
        }
    }

    /// Claims up to `limit` workflows of `queue` that are due, for `executor`
    /// and `lease` from now, within the queue's limits (which hold across
    /// workers: claims of a limited queue serialize on its row). Each claim
    /// bumps the lease epoch. On PostgreSQL the claim is one statement (the
    /// `claim_workflows` function of the schema): no lock other workers need
    /// is held across a round trip to this process, so a worker that stalls
    /// in the middle of its claim delays nobody; a claim that waited past
    /// `lock_timeout` for the queue's row claims nothing this time.
    pub async fn claim_workflows(
        &self,
        queue: &str,
        executor: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<Claimed>, JournalError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let granted_at = Instant::now();
        let claimed = match &self.backend {
            Backend::Postgres(_) => self.claim_in_one_statement(queue, executor, limit, lease).await?,
            Backend::Sqlite(_) => self.claim_in_a_transaction(queue, executor, limit, lease).await?,
        };
        Ok(claimed
            .into_iter()
            .map(|workflow| Claimed { lease: held(&workflow.id, executor, workflow.lease_epoch, granted_at), workflow })
            .collect())
    }

    /// The claim on PostgreSQL: the schema's `claim_workflows` function.
    async fn claim_in_one_statement(
        &self,
        queue: &str,
        executor: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<WorkflowRecord>, JournalError> {
        // The function answers the options put back together already (its UPDATE sees the deployment
        // a submit committed with the row; this statement's own snapshot may predate that submit).
        let sql = concat!("SELECT ", workflow_columns!("options"), " FROM claim_workflows($1, $2, $3, $4)");
        self.commit("claim of queued workflows", || {
            with_conn!(&self.backend, |conn| {
                let claimed = statement::query_as(sql)
                    .bind(queue)
                    .bind(executor)
                    .bind(i32::try_from(limit).unwrap_or(i32::MAX))
                    .bind(millis(lease))
                    .fetch_all(conn)
                    .await;
                match claimed {
                    // The queue's row was held past `lock_timeout` (by a stalled session): next time.
                    Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some(LOCK_NOT_AVAILABLE) => {
                        Ok(Vec::new())
                    }
                    other => other,
                }
            })
        })
        .await
    }

    /// The claim on SQLite, whose write lock (taken first) serializes claimers.
    async fn claim_in_a_transaction(
        &self,
        queue: &str,
        executor: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<WorkflowRecord>, JournalError> {
        let (lock_queue, skip_locked) = (self.backend.for_update(), self.backend.skip_locked());
        let lease_until = self.backend.now_plus("$2");
        let claimed: Vec<WorkflowRecord> = self
            .commit("claim of queued workflows", || {
                with_conn!(&self.backend, |conn| {
                    // SQLite: take the write lock first, so two claimers never interleave.
                    let mut tx = match self.backend.begin_write() {
                        Some(begin) => conn.begin_with(begin).await?,
                        None => conn.begin().await?,
                    };
                    let limits: Option<QueueLimits> = statement::query_as(sqlx::AssertSqlSafe(format!(
                        "SELECT name, concurrency, partition_concurrency, rate_limit, rate_period_ms FROM queues \
                         WHERE name = $1{lock_queue}"
                    )))
                    .bind(queue)
                    .fetch_optional(&mut *tx)
                    .await?;
                    // Read after the queue's lock: what other claims and finishes committed is counted.
                    let now = Timestamp::now();
                    let limits = limits.unwrap_or_default();
                    let mut available = i64::from(limit);
                    if let Some(concurrency) = limits.concurrency {
                        let running: i64 = statement::query_scalar(
                            "SELECT count(*) FROM workflows WHERE queue = $1 AND status = 'running'",
                        )
                        .bind(queue)
                        .fetch_one(&mut *tx)
                        .await?;
                        available = available.min(i64::from(concurrency) - running);
                    }
                    let mut starts_left = i64::MAX;
                    if let (Some(rate), Some(period)) = (limits.rate_limit, limits.rate_period_ms) {
                        let since = now.minus(Duration::from_millis(u64::try_from(period).unwrap_or(0)));
                        let started: i64 = statement::query_scalar(
                            "SELECT count(*) FROM workflows WHERE queue = $1 AND started_at > $2",
                        )
                        .bind(queue)
                        .bind(since)
                        .fetch_one(&mut *tx)
                        .await?;
                        starts_left = i64::from(rate) - started;
                    }
                    if available <= 0 {
                        return Ok(Vec::new());
                    }
                    let partitioned = limits.partition_concurrency.is_some() || starts_left < available;
                    let scan = if partitioned { available * 4 + 16 } else { available };
                    let candidates: Vec<(String, Option<String>, bool)> =
                        statement::query_as(sqlx::AssertSqlSafe(format!(
                            "SELECT id, partition_key, started_at IS NULL FROM workflows WHERE queue = $1 \
                             AND status IN ('enqueued', 'delayed', 'waiting') AND run_at <= $2 \
                             ORDER BY priority, run_at, id LIMIT $3{skip_locked}"
                        )))
                        .bind(queue)
                        .bind(now)
                        .bind(scan)
                        .fetch_all(&mut *tx)
                        .await?;
                    let mut per_partition: HashMap<String, i64> = HashMap::new();
                    if let Some(per) = limits.partition_concurrency {
                        let keys: Vec<&str> = candidates.iter().filter_map(|(_, key, _)| key.as_deref()).collect();
                        for key in keys {
                            if per_partition.contains_key(key) {
                                continue;
                            }
                            let running: i64 = statement::query_scalar(
                                "SELECT count(*) FROM workflows WHERE queue = $1 AND partition_key = $2 \
                                 AND status = 'running'",
                            )
                            .bind(queue)
                            .bind(key)
                            .fetch_one(&mut *tx)
                            .await?;
                            per_partition.insert(key.to_string(), i64::from(per) - running);
                        }
                    }
                    let mut chosen = Vec::new();
                    for (id, key, first_start) in candidates {
                        if chosen.len() as i64 >= available {
                            break;
                        }
                        if first_start && starts_left <= 0 {
                            continue;
                        }
                        if let Some(left) = key.as_ref().and_then(|key| per_partition.get_mut(key)) {
                            if *left <= 0 {
                                continue;
                            }
                            *left -= 1;
                        }
                        if first_start {
                            starts_left -= 1;
                        }
                        chosen.push(id);
                    }
                    if chosen.is_empty() {
                        return Ok(Vec::new());
                    }
                    // Stamped after every count: a start never precedes the end it waited for.
                    let started = Timestamp::now();
                    let ids = (0..chosen.len()).map(|n| format!("${}", n + 4)).collect::<Vec<_>>().join(", ");
                    let mut update = statement::query_as(sqlx::AssertSqlSafe(format!(
                        "UPDATE workflows SET status = 'running', executor = $1, lease_epoch = lease_epoch + 1, \
                         lease_expires_at = {lease_until}, started_at = COALESCE(started_at, $3), updated_at = $3, \
                         waiting_for = NULL, wait_topic = NULL, progress_at_claim = {CALLS_DONE} \
                         WHERE id IN ({ids}) RETURNING {}",
                        workflow_columns!(deployments::options_sqlite!())
                    )))
                    .bind(executor)
                    .bind(millis(lease))
                    .bind(started);
                    for id in &chosen {
                        update = update.bind(id);
                    }
                    let claimed: Vec<WorkflowRecord> = update.fetch_all(&mut *tx).await?;
                    tx.commit().await?;
                    Ok(claimed)
                })
            })
            .await?;
        Ok(claimed)
    }

    /// Parks a queued workflow until `until` (a retry far away): it leaves its
    /// worker's slot, and any worker claims it again then.
    pub async fn park_workflow(&self, lease: &Lease, until: Timestamp) -> Result<bool, JournalError> {
        let now = Timestamp::now();
        let sql = format!(
            "UPDATE workflows SET status = 'delayed', run_at = $1, lease_expires_at = NULL, updated_at = $2 \
             WHERE id = $3 AND lease_epoch = $4 AND status = 'running' AND queue IS NOT NULL AND {}",
            live(&self.backend)
        );
        self.commit("park of a workflow", || {
            with_conn!(&self.backend, |conn| {
                let result = statement::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(until)
                    .bind(now)
                    .bind(&lease.workflow_id)
                    .bind(lease.epoch)
                    .execute(conn)
                    .await?;
                Ok(result.rows_affected() == 1)
            })
        })
        .await
    }

    /// Gives up on a queued workflow that cannot run (its components cannot
    /// be loaded, its replay diverged): `dead`, with the reason, unless
    /// another claim took it since `lease` (a release keeps the epoch).
    pub async fn bury(&self, lease: &Lease, reason: &str) -> Result<bool, JournalError> {
        let now = Timestamp::now();
        // Running: only under a live lease. Enqueued: handed back by a release, which keeps the epoch.
        let sql = format!(
            "UPDATE workflows SET status = 'dead', error = $1, finished_at = $2, updated_at = $2, \
             lease_expires_at = NULL WHERE id = $3 AND lease_epoch = $4 \
             AND ((status = 'running' AND {}) OR status = 'enqueued')",
            live(&self.backend)
        );
        let buried = self
            .commit("give-up of a workflow", || {
                with_conn!(&self.backend, |conn| {
                    let result = statement::query(sqlx::AssertSqlSafe(sql.clone()))
                        .bind(reason)
                        .bind(now)
                        .bind(&lease.workflow_id)
                        .bind(lease.epoch)
                        .execute(conn)
                        .await?;
                    Ok(result.rows_affected() == 1)
                })
            })
            .await?;
        if buried {
            self.woke_parent(&lease.workflow_id).await;
        }
        Ok(buried)
    }

    /// Puts queued workflows whose worker's lease lapsed back in their queue,
    /// ahead of newer work (their `run_at` is kept), in bounded batches with
    /// `SKIP LOCKED` (any worker may reap, no leader), and
    /// gives up on those whose leases lapsed `crash_loop_cap` times in a row
    /// without progress. Each reap bumps the epoch: the old owner is fenced.
    pub async fn reap_workflows(&self, crash_loop_cap: i32) -> Result<Reaped, JournalError> {
        let now = Timestamp::now();
        let skip_locked = self.backend.skip_locked();
        let sql = format!(
            "UPDATE workflows SET \
             claims = CASE WHEN {CALLS_DONE} > progress_at_claim THEN 1 ELSE claims + 1 END, \
             status = CASE WHEN {CALLS_DONE} <= progress_at_claim AND claims + 1 >= $1 THEN 'dead' ELSE 'enqueued' END, \
             error = CASE WHEN {CALLS_DONE} <= progress_at_claim AND claims + 1 >= $1 \
             THEN 'its worker stopped ' || (claims + 1) || ' times in a row without progress (crash-loop cap)' \
             ELSE error END, \
             finished_at = CASE WHEN {CALLS_DONE} <= progress_at_claim AND claims + 1 >= $1 THEN $2 ELSE NULL END, \
             lease_epoch = lease_epoch + 1, lease_expires_at = NULL, updated_at = $2 \
             WHERE id IN (SELECT id FROM workflows WHERE status = 'running' AND queue IS NOT NULL \
             AND lease_expires_at <= {now} ORDER BY lease_expires_at LIMIT 100{skip_locked}) \
             RETURNING id, status, executor, lease_epoch",
            now = self.backend.now()
        );
        let expire = format!(
            "UPDATE workflows SET status = 'timed-out', error = 'its deadline passed before a worker started it', \
             finished_at = $1, updated_at = $1, lease_epoch = lease_epoch + 1 \
             WHERE id IN (SELECT id FROM workflows WHERE status IN ('enqueued', 'delayed', 'waiting') AND deadline_at < $1 \
             ORDER BY deadline_at LIMIT 100{skip_locked}) RETURNING id, status, executor, lease_epoch"
        );
        let reaped: Vec<(String, WorkflowStatus, Option<String>, i64)> = self
            .commit("reap of lapsed leases", || {
                with_conn!(&self.backend, |conn| {
                    let mut tx = conn.begin().await?;
                    let mut reaped: Vec<(String, WorkflowStatus, Option<String>, i64)> =
                        statement::query_as(sqlx::AssertSqlSafe(sql.clone()))
                            .bind(crash_loop_cap)
                            .bind(now)
                            .fetch_all(&mut *tx)
                            .await?;
                    let lapsed = reaped.len();
                    let expired: Vec<(String, WorkflowStatus, Option<String>, i64)> =
                        statement::query_as(sqlx::AssertSqlSafe(expire.clone())).bind(now).fetch_all(&mut *tx).await?;
                    reaped.extend(expired);
                    // What happened to each is one of its events (`host show`, the dashboard).
                    for (index, (id, status, executor, epoch)) in reaped.iter().enumerate() {
                        let (kind, detail) = if index < lapsed {
                            let kind = if *status == WorkflowStatus::Dead { "dead" } else { "reclaimed" };
                            (kind, serde_json::json!({ "from": executor, "epoch": epoch, "why": "its lease lapsed" }))
                        } else {
                            (
                                "timed-out",
                                serde_json::json!({ "why": "its deadline passed before a worker started it" }),
                            )
                        };
                        statement::query(
                            "INSERT INTO workflow_events (workflow_id, at, kind, detail) VALUES ($1, $2, $3, $4)",
                        )
                        .bind(id)
                        .bind(now)
                        .bind(kind)
                        .bind(detail)
                        .execute(&mut *tx)
                        .await?;
                    }
                    if !reaped.is_empty() {
                        notify(&mut *tx, "release:*").await?;
                    }
                    tx.commit().await?;
                    Ok(reaped)
                })
            })
            .await?;
        let mut outcome = Reaped::default();
        for (id, status, _, _) in reaped {
            match status {
                WorkflowStatus::Dead => outcome.dead.push(id),
                WorkflowStatus::TimedOut => outcome.timed_out.push(id),
                _ => outcome.requeued.push(id),
            }
        }
        Ok(outcome)
    }

    /// Hands a workflow nobody runs back to a queue (`queue`, else its own,
    /// else the default): an interrupted one (running, its lease lapsed) or
    /// a dead one, with its crash-loop count reset. Workers resume it from
    /// its journal; the old owner, if it comes back, is fenced.
    pub async fn requeue_workflow(&self, id: &str, queue: Option<&str>) -> Result<Requeued, JournalError> {
        let now = Timestamp::now();
        let sql = format!(
            "UPDATE workflows SET status = 'enqueued', queue = COALESCE($3, queue, $4), claims = 0, \
             error = NULL, finished_at = NULL, run_at = $1, lease_epoch = lease_epoch + 1, \
             lease_expires_at = NULL, updated_at = $1 WHERE id = $2 AND (status = 'dead' \
             OR (status = 'running' AND {})) RETURNING queue",
            lapsed(&self.backend)
        );
        self.commit("requeue of a workflow", || {
            with_conn!(&self.backend, |conn| {
                let mut tx = conn.begin().await?;
                let queued: Option<String> = statement::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
                .bind(now)
                .bind(id)
                .bind(queue)
                .bind(DEFAULT_QUEUE)
                .fetch_optional(&mut *tx)
                .await?;
                let outcome = match queued {
                    Some(queue) => {
                        statement::query(
                            "INSERT INTO workflow_events (workflow_id, at, kind, detail) VALUES ($1, $2, 'requeued', $3)",
                        )
                        .bind(id)
                        .bind(now)
                        .bind(serde_json::json!({ "queue": queue }))
                        .execute(&mut *tx)
                        .await?;
                        notify(&mut *tx, &format!("submit:{queue}")).await?;
                        Requeued::Enqueued { queue }
                    }
                    None => {
                        let row: Option<(WorkflowStatus, Option<String>)> =
                            statement::query_as("SELECT status, executor FROM workflows WHERE id = $1")
                                .bind(id)
                                .fetch_optional(&mut *tx)
                                .await?;
                        match row {
                            None => Requeued::Unknown,
                            Some((WorkflowStatus::Running, executor)) => {
                                Requeued::Live { executor: executor.unwrap_or_default() }
                            }
                            Some((status, _)) => Requeued::Not(status),
                        }
                    }
                };
                tx.commit().await?;
                Ok(outcome)
            })
        })
        .await
    }

    /// When the next waiting workflow of `queues` becomes due (`None`: none waits).
    pub async fn next_due(&self, queues: &[String]) -> Result<Option<Timestamp>, JournalError> {
        self.run("read of the next due workflow", || {
            with_conn!(&self.backend, |conn| {
                let mut query = sqlx::QueryBuilder::new(
                    "SELECT min(run_at) FROM workflows WHERE status IN ('enqueued', 'delayed', 'waiting') AND queue IN (",
                );
                let mut names = query.separated(", ");
                for queue in queues {
                    names.push_bind(queue);
                }
                query.push(")");
                query.build_query_scalar().persistent(statement::persistent()).fetch_one(conn).await
            })
        })
        .await
    }

    /// Sets (or clears, with `None`) a queue's limits.
    pub async fn set_queue(&self, limits: &QueueLimits) -> Result<(), JournalError> {
        let now = Timestamp::now();
        self.commit("set of a queue", || {
            with_conn!(&self.backend, |conn| {
                statement::query(
                    "INSERT INTO queues (name, concurrency, partition_concurrency, rate_limit, rate_period_ms, \
                     updated_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO UPDATE SET \
                     concurrency = excluded.concurrency, partition_concurrency = excluded.partition_concurrency, \
                     rate_limit = excluded.rate_limit, rate_period_ms = excluded.rate_period_ms, \
                     updated_at = excluded.updated_at",
                )
                .bind(&limits.name)
                .bind(limits.concurrency)
                .bind(limits.partition_concurrency)
                .bind(limits.rate_limit)
                .bind(limits.rate_period_ms)
                .bind(now)
                .execute(conn)
                .await
                .map(drop)
            })
        })
        .await
    }

    /// Every queue with work or limits: limits, depth and running.
    pub async fn queues(&self) -> Result<Vec<QueueRecord>, JournalError> {
        let now = Timestamp::now();
        let minute_ago = now.minus(Duration::from_secs(60));
        self.run("read of queues", || {
            with_conn!(&self.backend, |conn| {
                statement::query_as(
                    "WITH names AS (SELECT name FROM queues UNION SELECT DISTINCT queue FROM workflows \
                     WHERE queue IS NOT NULL AND status IN ('enqueued', 'delayed', 'waiting', 'running')) \
                     SELECT n.name, q.concurrency, q.partition_concurrency, q.rate_limit, q.rate_period_ms, \
                     (SELECT count(*) FROM workflows w WHERE w.queue = n.name \
                      AND w.status IN ('enqueued', 'delayed', 'waiting') AND w.run_at <= $1) AS ready, \
                     (SELECT count(*) FROM workflows w WHERE w.queue = n.name AND w.status IN ('enqueued', 'delayed') \
                      AND w.run_at > $1) AS delayed, \
                     (SELECT count(*) FROM workflows w WHERE w.queue = n.name AND w.status = 'waiting' \
                      AND (w.run_at IS NULL OR w.run_at > $1)) AS waiting, \
                     (SELECT count(*) FROM workflows w WHERE w.queue = n.name AND w.status = 'running') AS running, \
                     (SELECT count(*) FROM workflows w WHERE w.queue = n.name AND w.started_at > $2) AS recent_starts \
                     FROM names n LEFT JOIN queues q ON q.name = n.name ORDER BY n.name",
                )
                .bind(now)
                .bind(minute_ago)
                .fetch_all(conn)
                .await
            })
        })
        .await
    }
}
