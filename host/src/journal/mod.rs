//! The journal: workflows, step calls and every attempt, in SQLite (the
//! default, embedded) or PostgreSQL, each through its native sqlx driver and
//! its own migrations. One API for both: the statements are written once and
//! run on either backend's connection (`with_conn!`); what differs lives in
//! `sqlite.rs` and `postgres.rs`. Every operation rides through transient
//! database faults (`faults.rs`); attempt writes go through group commit.
//! Knows SQL, nothing of wasmtime.

mod faults;
mod group_commit;
mod postgres;
mod queue;
mod records;
mod schema;
mod sqlite;
mod statement;
mod target;
mod time;
mod vocabulary;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value as Json;

pub use faults::DEFAULT_OUTAGE_BUDGET;
pub use group_commit::{LAZY_WINDOW, PendingWrite};
use queue::notify;
pub use queue::{
    Claimed, DEFAULT_QUEUE, EVENTS, Listener, NewSubmission, PROGRESS, QueueLimits, QueueRecord, Reaped, Requeued,
    Submitted, WorkerInfo, WorkerRecord,
};
pub use records::{AttemptRecord, CallHistory, EventRecord, StepCallRecord, WorkflowHistory, WorkflowRecord};
pub use target::{DEFAULT_SCHEMA, PostgresTarget, SqliteTarget, Target, TargetError, redact};
pub use time::Timestamp;
pub use vocabulary::{AttemptOutcome, CallStatus, FailureKind, WorkflowStatus};

use faults::{Outage, Weather};
use group_commit::{Change, NewCall, Write, Writer};
use postgres::PgDb;
use sqlite::SqliteDb;

/// The columns of [`WorkflowRecord`], as a literal for `concat!`.
macro_rules! workflow_columns {
    () => {
        "id, name, component, component_digest, entry, input, input_json, status, output, output_json, error, \
         options, queue, priority, partition_key, dedup_key, run_at, deadline_at, executor, lease_epoch, \
         lease_expires_at, claims, cancel_requested_at, created_at, started_at, updated_at, finished_at"
    };
}
pub(crate) use workflow_columns;

/// The columns of [`StepCallRecord`], as a literal for `concat!`.
macro_rules! call_columns {
    () => {
        "seq, step, input, input_json, status, output, output_json, attempts, max_attempts, started_at, finished_at"
    };
}

/// The columns of [`AttemptRecord`], as a literal for `concat!`.
macro_rules! attempt_columns {
    () => {
        "seq, attempt, executor, started_at, finished_at, outcome, kind, message, retry_at, stdout, stderr"
    };
}

/// How long a lease release on the way out retries through an outage.
pub const RELEASE_BUDGET: Duration = Duration::from_secs(2);

/// The journal used when neither `--journal` nor `STEPBOX_JOURNAL` is given.
pub const DEFAULT_JOURNAL: &str = "stepbox.db";

/// The journal could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("cannot open the journal {location}: {cause}. {hint}")]
    Open { location: String, cause: String, hint: String },
    #[error("cannot use the journal {location}: {message}")]
    Schema { location: String, message: String },
    #[error("journal {what} failed in {location}: {source}")]
    Failed { location: String, what: &'static str, source: sqlx::Error },
    #[error(
        "the journal {location} stayed unreachable for {} ({what}): {source}",
        humantime::format_duration(*lasted)
    )]
    Unreachable { location: String, what: &'static str, lasted: Duration, source: sqlx::Error },
    #[error(
        "this process no longer owns workflow {id} in {location} (another executor took over its lease); \
         it stopped without writing"
    )]
    NotOwner { location: String, id: String },
    #[error("journal write failed (group commit) in {location}: {message}")]
    Batch { location: String, message: String },
    #[error("the journal writer of {location} stopped; nothing more can be written")]
    WriterGone { location: String },
}

impl JournalError {
    /// True when the database was unreachable (not a refusal): the workflow can be resumed once it is back.
    pub fn is_outage(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Batch { .. } | Self::WriterGone { .. })
    }
}

/// Runs `$body` (an expression of type `Result<T, sqlx::Error>` that may
/// `.await` and use `?`) with `$conn` bound to a connection of the journal's
/// database: `&mut SqliteConnection` or `&mut PgConnection`. The statements
/// are written once and run on either backend.
macro_rules! with_conn {
    ($backend:expr, |$conn:ident| $body:expr) => {
        async {
            match $backend {
                $crate::journal::Backend::Sqlite(db) => {
                    let mut connection = db.pool.acquire().await?;
                    let result = {
                        let $conn: &mut sqlx::SqliteConnection = &mut *connection;
                        async { $body }.await
                    };
                    // A connection that failed may be left inside a transaction: never reuse it.
                    if result.is_err() {
                        connection.close_on_drop();
                    }
                    result
                }
                $crate::journal::Backend::Postgres(db) => {
                    let mut connection = db.pool().acquire().await?;
                    let result = if db.pooler() {
                        // Through a pooler: one transaction, so one server connection, per operation.
                        async {
                            let mut tx = sqlx::Connection::begin(&mut *connection).await?;
                            db.enter_schema(&mut tx).await?;
                            let value = {
                                let $conn: &mut sqlx::PgConnection = &mut *tx;
                                let result: Result<_, sqlx::Error> = async { $body }.await;
                                result
                            }?;
                            tx.commit().await?;
                            Ok::<_, sqlx::Error>(value)
                        }
                        .await
                    } else {
                        let $conn: &mut sqlx::PgConnection = &mut *connection;
                        async { $body }.await
                    };
                    if result.is_err() {
                        connection.close_on_drop();
                    }
                    result
                }
            }
        }
    };
}
pub(crate) use with_conn;

/// The database behind a journal.
#[derive(Clone)]
pub(crate) enum Backend {
    Sqlite(SqliteDb),
    Postgres(PgDb),
}

impl Backend {
    /// After a transient fault: fresh connections (PostgreSQL may pick another host).
    async fn reconnect(&self) {
        if let Self::Postgres(db) = self {
            db.reconnect().await;
        }
    }
}

/// Which database a journal is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Sqlite,
    Postgres,
}

/// How the journal commits and rides through faults.
#[derive(Debug, Clone, Copy)]
pub struct JournalOptions {
    /// Batch the writes of concurrent workflows (and an attempt's start with
    /// its finish) into shared transactions. Off, every write is its own
    /// transaction: kept to measure group commit against.
    pub group_commit: bool,
    /// How long operations retry through a database outage before giving up.
    pub outage_budget: Duration,
}

impl Default for JournalOptions {
    fn default() -> Self {
        Self { group_commit: true, outage_budget: DEFAULT_OUTAGE_BUDGET }
    }
}

/// Transactions the journal committed so far in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitCount {
    /// Group-commit transactions carrying attempt writes.
    pub attempt_batches: u64,
    /// Attempt writes (starts and finishes) those carried.
    pub attempt_writes: u64,
    /// Time those transactions took, from sending to commit acknowledged.
    pub attempt_commit_time: Duration,
    /// Workflow-level transactions: create, claim, lease renewal, finish.
    pub workflow_commits: u64,
}

/// The right to write a workflow's rows: its owner and the fencing epoch its
/// claim set. Every write checks the epoch in its own transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub workflow_id: String,
    pub executor: String,
    pub epoch: i64,
}

/// A new workflow row, started by `host run` (running, owned at once).
#[derive(Debug, Clone)]
pub struct NewWorkflow {
    pub id: String,
    pub name: String,
    pub component: String,
    pub component_digest: String,
    pub entry: String,
    pub input: String,
    pub input_json: Json,
    pub options: Json,
    pub created_at: Timestamp,
}

/// How a running workflow ended, for its row.
#[derive(Debug, Clone)]
pub struct Finish {
    pub status: WorkflowStatus,
    pub output: Option<String>,
    pub output_json: Option<Json>,
    pub error: Option<String>,
}

/// What `claim_workflow` found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This executor owns the workflow now.
    Claimed(Lease),
    /// Another executor holds a live lease.
    Owned { executor: String },
    /// The workflow is not running (finished, or waiting in a queue).
    NotRunning(WorkflowStatus),
    /// No such workflow.
    Unknown,
}

/// A held lease as the last renewal found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed; `cancel` when someone asked the workflow to stop.
    Held { cancel: bool },
    /// Another executor took the workflow over, or it ended elsewhere.
    Lost,
}

/// What `request_cancel` did.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// The workflow runs under a live lease: its owner was asked to stop it.
    Requested { executor: String },
    /// Nobody was running it (queued, delayed, or its owner is gone): it is cancelled now.
    Cancelled,
    /// It had already ended with this status.
    Finished(WorkflowStatus),
    /// No such workflow.
    Unknown,
}

/// What `delete_workflow` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The workflow and all its rows are gone.
    Deleted,
    /// Refused: it has not finished (it is in this status).
    NotFinished(WorkflowStatus),
    /// No such workflow.
    Unknown,
}

/// What `fork_workflow` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forked {
    /// The new workflow exists, with this many step calls copied.
    Forked { copied: i64 },
    /// No such workflow to fork.
    Unknown,
    /// The new id is taken.
    Exists,
    /// A call before the fork point has not finished in the original (its seq).
    Unfinished(i64),
}

/// The final statuses as an SQL list: `'succeeded', 'failed', …`, from the vocabulary.
fn final_statuses() -> String {
    WorkflowStatus::ALL
        .iter()
        .filter(|status| status.is_final())
        .map(|status| format!("'{}'", status.as_column()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Which step call a write is for, under which lease.
#[derive(Debug, Clone, Copy)]
pub struct CallRef<'a> {
    pub lease: &'a Lease,
    /// The call's position in the workflow, from 1.
    pub seq: i64,
}

/// A step call's first row, written with its first attempt.
#[derive(Debug, Clone, Copy)]
pub struct NewStepCall<'a> {
    /// Qualified step name.
    pub step: &'a str,
    /// Arguments as a WAVE tuple.
    pub input: &'a str,
    pub input_json: &'a Json,
    pub max_attempts: u32,
}

/// How one attempt ended, as journaled.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptEnd {
    pub outcome: AttemptOutcome,
    /// For failed attempts.
    pub kind: Option<FailureKind>,
    pub message: Option<String>,
    /// When the next attempt is due, when one follows.
    pub retry_at: Option<Timestamp>,
    /// When it ended; `None` when unknown (the host stopped during it).
    pub finished_at: Option<Timestamp>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
}

/// How a call ended, for its row: its status and the value the workflow
/// received (none for a cancelled call).
#[derive(Debug, Clone, PartialEq)]
pub struct CallEnd {
    pub status: CallStatus,
    pub output: Option<String>,
    pub output_json: Option<Json>,
}

/// Which workflows `list_workflows` returns: newest first, after the cursor.
#[derive(Debug, Clone, Default)]
pub struct WorkflowFilter {
    pub status: Option<WorkflowStatus>,
    /// The workflow's name (its component's file name without `.wasm`).
    pub name: Option<String>,
    pub queue: Option<String>,
    pub id_prefix: Option<String>,
    pub created_after: Option<Timestamp>,
    pub created_before: Option<Timestamp>,
    /// Keyset pagination: only workflows after this one, newest first.
    pub after: Option<(Timestamp, String)>,
    pub limit: u32,
}

/// A connection pool to the journal database, migrated on open, and the
/// group-commit writer its attempt writes go through.
#[derive(Clone)]
pub struct Journal {
    backend: Backend,
    location: Arc<str>,
    writer: Writer,
    weather: Weather,
    /// Workflow-level writes (create, claim, lease, finish), each its own transaction.
    workflow_commits: Arc<AtomicU64>,
}

/// A workflow's rows that no foreign key removes with it on PostgreSQL (the
/// schema says why): deleting a workflow deletes them in its transaction.
const WORKFLOW_ROWS: [&str; 2] = ["step_attempts", "step_calls"];

impl Journal {
    /// Opens (creating if needed) the journal at `target`: a `postgres://`
    /// URL, a `sqlite:` URL or a file path.
    pub async fn open(target: &str) -> Result<Self, JournalError> {
        Self::open_with(target, JournalOptions::default()).await
    }

    /// Opens a journal that must already exist, without changing its schema:
    /// for commands that only read or request (`list`, `show`, `cancel`).
    pub async fn open_existing(target: &str) -> Result<Self, JournalError> {
        Self::connect(target, JournalOptions::default(), false).await
    }

    /// [`Journal::open`] with explicit options.
    pub async fn open_with(target: &str, options: JournalOptions) -> Result<Self, JournalError> {
        Self::connect(target, options, true).await
    }

    async fn connect(target: &str, options: JournalOptions, create: bool) -> Result<Self, JournalError> {
        let location = redact(target);
        let backend = match Target::parse(target)? {
            Target::Sqlite(sqlite) => Backend::Sqlite(SqliteDb::open(&sqlite, &location, create).await?),
            Target::Postgres(postgres) => Backend::Postgres(PgDb::open(&postgres, &location, create).await?),
        };
        let weather = Weather::new(&location, options.outage_budget);
        let writer = Writer::spawn(backend.clone(), &location, options.group_commit, weather.clone());
        Ok(Self { backend, location: location.into(), writer, weather, workflow_commits: Arc::default() })
    }

    /// Where the journal is, with any password hidden.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Which database it is in.
    pub fn kind(&self) -> BackendKind {
        match self.backend {
            Backend::Sqlite(_) => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// How long operations retry through an outage.
    pub fn outage_budget(&self) -> Duration {
        self.weather.budget()
    }

    /// What this process has committed so far, to measure commits per step.
    pub fn commit_count(&self) -> CommitCount {
        let counters = &self.writer.counters;
        CommitCount {
            attempt_batches: counters.batches.load(Ordering::Relaxed),
            attempt_writes: counters.writes.load(Ordering::Relaxed),
            attempt_commit_time: Duration::from_micros(counters.micros.load(Ordering::Relaxed)),
            workflow_commits: self.workflow_commits.load(Ordering::Relaxed),
        }
    }

    /// Runs `operation` through outages; `what` names it in errors.
    async fn run<T, Op, Fut>(&self, what: &'static str, operation: Op) -> Result<T, JournalError>
    where
        Op: FnMut() -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        self.weather.retry(operation, || self.backend.reconnect()).await.map_err(|outage| self.error(what, outage))
    }

    /// As [`Journal::run`], counting one workflow-level commit.
    async fn commit<T, Op, Fut>(&self, what: &'static str, operation: Op) -> Result<T, JournalError>
    where
        Op: FnMut() -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let result = self.run(what, operation).await;
        self.workflow_commits.fetch_add(1, Ordering::Relaxed);
        result
    }

    fn error(&self, what: &'static str, outage: Outage) -> JournalError {
        let location = self.location.to_string();
        match outage.lasted {
            Some(lasted) => JournalError::Unreachable { location, what, lasted, source: outage.error },
            None => JournalError::Failed { location, what, source: outage.error },
        }
    }

    /// The workflow `id`, if it was ever started.
    pub async fn workflow(&self, id: &str) -> Result<Option<WorkflowRecord>, JournalError> {
        self.run("read of a workflow", || {
            with_conn!(&self.backend, |conn| {
                statement::query_as(concat!("SELECT ", workflow_columns!(), " FROM workflows WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(conn)
                    .await
            })
        })
        .await
    }

    /// The workflow `id` with its calls, attempts and events.
    pub async fn history(&self, id: &str) -> Result<Option<WorkflowHistory>, JournalError> {
        let Some(workflow) = self.workflow(id).await? else { return Ok(None) };
        let calls = self.step_calls(id).await?;
        let attempts = self.attempts(id).await?;
        let events = self.events(id).await?;
        Ok(Some(WorkflowHistory::new(workflow, calls, attempts, events)))
    }

    /// Records a workflow started by `host run` as running, owned by
    /// `executor` until `lease_until`, before any of its code runs. `None` if
    /// the id exists.
    pub async fn create_workflow(
        &self,
        workflow: &NewWorkflow,
        executor: &str,
        lease_until: Timestamp,
    ) -> Result<Option<Lease>, JournalError> {
        let inserted = self
            .commit("create of a workflow", || {
                with_conn!(&self.backend, |conn| {
                    let result = statement::query(
                        "INSERT INTO workflows (id, name, component, component_digest, entry, input, input_json, \
                         status, options, executor, lease_epoch, lease_expires_at, created_at, started_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, 'running', $8, $9, 1, $10, $11, $11, $11) \
                         ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(&workflow.id)
                    .bind(&workflow.name)
                    .bind(&workflow.component)
                    .bind(&workflow.component_digest)
                    .bind(&workflow.entry)
                    .bind(&workflow.input)
                    .bind(&workflow.input_json)
                    .bind(&workflow.options)
                    .bind(executor)
                    .bind(lease_until)
                    .bind(workflow.created_at)
                    .execute(conn)
                    .await?;
                    Ok(result.rows_affected() == 1)
                })
            })
            .await?;
        // A retry after an unknown commit outcome finds the row its first try wrote.
        if !inserted {
            let existing = self.workflow(&workflow.id).await?;
            let ours = existing.is_some_and(|row| row.executor.as_deref() == Some(executor) && row.lease_epoch == 1);
            return Ok(ours.then(|| self.lease(&workflow.id, executor, 1)));
        }
        Ok(Some(self.lease(&workflow.id, executor, 1)))
    }

    fn lease(&self, id: &str, executor: &str, epoch: i64) -> Lease {
        Lease { workflow_id: id.to_string(), executor: executor.to_string(), epoch }
    }

    /// Takes over a running workflow whose lease expired (or was released):
    /// bumps its epoch, so the previous owner can never write again.
    pub async fn claim_workflow(
        &self,
        id: &str,
        executor: &str,
        lease_until: Timestamp,
    ) -> Result<Claim, JournalError> {
        let now = Timestamp::now();
        let epoch: Option<i64> = self
            .commit("claim of a workflow", || {
                with_conn!(&self.backend, |conn| {
                    statement::query_scalar(
                        "UPDATE workflows SET executor = $1, lease_epoch = lease_epoch + 1, lease_expires_at = $2, \
                         updated_at = $3 WHERE id = $4 AND status = 'running' \
                         AND (lease_expires_at IS NULL OR lease_expires_at < $3) RETURNING lease_epoch",
                    )
                    .bind(executor)
                    .bind(lease_until)
                    .bind(now)
                    .bind(id)
                    .fetch_optional(conn)
                    .await
                })
            })
            .await?;
        if let Some(epoch) = epoch {
            return Ok(Claim::Claimed(self.lease(id, executor, epoch)));
        }
        Ok(match self.workflow(id).await? {
            None => Claim::Unknown,
            Some(existing) if existing.status != WorkflowStatus::Running => Claim::NotRunning(existing.status),
            // A retry after an unknown commit outcome: the first try claimed it.
            Some(existing) if existing.executor.as_deref() == Some(executor) => {
                Claim::Claimed(self.lease(id, executor, existing.lease_epoch))
            }
            Some(existing) => Claim::Owned { executor: existing.executor.unwrap_or_default() },
        })
    }

    /// Renews every lease `executor` holds, in one statement; says for each
    /// of `held` whether it is still held (and whether a cancel was asked).
    pub async fn renew_leases(
        &self,
        executor: &str,
        held: &[Lease],
        lease_until: Timestamp,
    ) -> Result<Vec<Renewal>, JournalError> {
        let renewed: Vec<(String, i64, bool)> = self
            .commit("lease renewal", || {
                with_conn!(&self.backend, |conn| {
                    statement::query_as(
                        "UPDATE workflows SET lease_expires_at = $1 WHERE executor = $2 AND status = 'running' \
                         AND lease_expires_at IS NOT NULL \
                         RETURNING id, lease_epoch, cancel_requested_at IS NOT NULL",
                    )
                    .bind(lease_until)
                    .bind(executor)
                    .fetch_all(conn)
                    .await
                })
            })
            .await?;
        Ok(held
            .iter()
            .map(|lease| {
                match renewed.iter().find(|(id, epoch, _)| *id == lease.workflow_id && *epoch == lease.epoch) {
                    Some((_, _, cancel)) => Renewal::Held { cancel: *cancel },
                    None => Renewal::Lost,
                }
            })
            .collect())
    }

    /// Gives up a lease at once, so the workflow can be resumed without
    /// waiting for it to lapse. False if it was no longer held. On the way
    /// out, it tries through an outage for [`RELEASE_BUDGET`] only.
    pub async fn release(&self, lease: &Lease) -> Result<bool, JournalError> {
        let now = Timestamp::now();
        let attempt = || {
            with_conn!(&self.backend, |conn| {
                // A queued workflow goes back to its queue, for any worker to claim at once (its
                // `run_at` is kept: it was due long ago, and goes before newer work).
                let result = statement::query(
                    "UPDATE workflows SET lease_expires_at = NULL, updated_at = $1, \
                     status = CASE WHEN queue IS NULL THEN status ELSE 'enqueued' END \
                     WHERE id = $2 AND lease_epoch = $3 AND status = 'running' RETURNING queue",
                )
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
    /// its output is shown. False if the lease was lost.
    pub async fn finish_workflow(&self, lease: &Lease, finish: &Finish) -> Result<bool, JournalError> {
        let now = Timestamp::now();
        let finished = self
            .commit("finish of a workflow", || {
                with_conn!(&self.backend, |conn| {
                    let result = statement::query(
                        "UPDATE workflows SET status = $1, output = $2, output_json = $3, error = $4, updated_at = $5, \
                         finished_at = $5, lease_expires_at = NULL WHERE id = $6 AND lease_epoch = $7 \
                         AND status = 'running'",
                    )
                    .bind(finish.status)
                    .bind(finish.output.as_deref())
                    .bind(finish.output_json.as_ref())
                    .bind(finish.error.as_deref())
                    .bind(now)
                    .bind(&lease.workflow_id)
                    .bind(lease.epoch)
                    .execute(conn)
                    .await?;
                    Ok(result.rows_affected() == 1)
                })
            })
            .await?;
        if finished {
            return Ok(true);
        }
        // A retry after an unknown commit outcome finds it finished by this lease.
        let existing = self.workflow(&lease.workflow_id).await?;
        Ok(existing.is_some_and(|row| row.lease_epoch == lease.epoch && row.status == finish.status))
    }

    /// Running workflows nobody holds a live lease on: interrupted, free to resume.
    pub async fn interrupted_workflows(&self) -> Result<Vec<String>, JournalError> {
        let now = Timestamp::now();
        self.run("read of interrupted workflows", || {
            with_conn!(&self.backend, |conn| {
                statement::query_scalar(
                    "SELECT id FROM workflows WHERE status = 'running' AND queue IS NULL \
                     AND (lease_expires_at IS NULL OR lease_expires_at < $1) ORDER BY created_at, id",
                )
                .bind(now)
                .fetch_all(conn)
                .await
            })
        })
        .await
    }

    /// Workflows matching `filter`, newest first.
    pub async fn list_workflows(&self, filter: &WorkflowFilter) -> Result<Vec<WorkflowRecord>, JournalError> {
        self.run("list of workflows", || {
            with_conn!(&self.backend, |conn| {
                let mut query =
                    sqlx::QueryBuilder::new(concat!("SELECT ", workflow_columns!(), " FROM workflows WHERE true"));
                if let Some(status) = filter.status {
                    query.push(" AND status = ").push_bind(status);
                }
                if let Some(name) = &filter.name {
                    query.push(" AND name = ").push_bind(name);
                }
                if let Some(queue) = &filter.queue {
                    query.push(" AND queue = ").push_bind(queue);
                }
                if let Some(prefix) = &filter.id_prefix {
                    query.push(" AND substr(id, 1, ").push_bind(i64::try_from(prefix.len()).unwrap_or(0));
                    query.push(") = ").push_bind(prefix);
                }
                if let Some(after) = filter.created_after {
                    query.push(" AND created_at >= ").push_bind(after);
                }
                if let Some(before) = filter.created_before {
                    query.push(" AND created_at < ").push_bind(before);
                }
                if let Some((created_at, id)) = &filter.after {
                    // A row comparison, so the (created_at DESC, id DESC) index serves deep pages too.
                    query.push(" AND (created_at, id) < (").push_bind(*created_at);
                    query.push(", ").push_bind(id);
                    query.push(")");
                }
                query.push(" ORDER BY created_at DESC, id DESC LIMIT ").push_bind(i64::from(filter.limit));
                query.build_query_as().persistent(statement::persistent()).fetch_all(conn).await
            })
        })
        .await
    }

    /// Cancels a workflow wherever it is: at once if nobody runs it, else by
    /// asking its owner, which sees the request at its next lease renewal
    /// (at once on PostgreSQL, through NOTIFY) and interrupts its attempt.
    pub async fn request_cancel(&self, id: &str) -> Result<CancelOutcome, JournalError> {
        let now = Timestamp::now();
        let outcome = self
            .commit("cancel of a workflow", || {
                with_conn!(&self.backend, |conn| {
                    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                    let cancelled = statement::query(
                        "UPDATE workflows SET status = 'cancelled', error = 'cancelled on request', finished_at = $1, \
                         updated_at = $1, cancel_requested_at = COALESCE(cancel_requested_at, $1), \
                         lease_epoch = lease_epoch + 1, lease_expires_at = NULL WHERE id = $2 \
                         AND (status IN ('enqueued', 'delayed') \
                         OR (status = 'running' AND (lease_expires_at IS NULL OR lease_expires_at < $1)))",
                    )
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
        // The same batch from each table, the workflows last; `before` is in
        // the past, so a workflow finishing meanwhile does not join it.
        let batch = format!(
            "SELECT id FROM workflows WHERE status IN ({}) AND finished_at < $1 ORDER BY finished_at, id LIMIT 500",
            final_statuses()
        );
        let deletes: Vec<String> = WORKFLOW_ROWS
            .iter()
            .map(|table| format!("DELETE FROM {table} WHERE workflow_id IN ({batch})"))
            .chain([format!("DELETE FROM workflows WHERE id IN ({batch})")])
            .collect();
        let mut total = 0;
        loop {
            let deleted = self
                .commit("prune of workflows", || {
                    with_conn!(&self.backend, |conn| {
                        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                        let mut workflows = 0;
                        for delete in &deletes {
                            workflows = statement::query(sqlx::AssertSqlSafe(delete.clone()))
                                .bind(before)
                                .execute(&mut *tx)
                                .await?
                                .rows_affected();
                        }
                        tx.commit().await?;
                        Ok(workflows)
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
                let created: Option<Option<String>> = statement::query_scalar(
                    "INSERT INTO workflows (id, name, component, component_digest, entry, input, input_json, status, \
                     options, queue, priority, partition_key, run_at, created_at, updated_at) \
                     SELECT $1, name, component, component_digest, entry, input, input_json, \
                     CASE WHEN COALESCE($5, queue) IS NULL THEN 'running' ELSE 'enqueued' END, $2, \
                     COALESCE($5, queue), priority, partition_key, $3, $3, $3 FROM workflows WHERE id = $4 \
                     RETURNING queue",
                )
                .bind(new_id)
                .bind(options)
                .bind(now)
                .bind(original)
                .bind(queue)
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

    /// Gives the unfinished calls of `step` in the workflow `lease` holds a
    /// new attempt budget (a resume with retry-policy overrides).
    pub async fn set_max_attempts(&self, lease: &Lease, step: &str, max_attempts: u32) -> Result<(), JournalError> {
        let max_attempts = i32::try_from(max_attempts).unwrap_or(i32::MAX);
        self.commit("update of a call's attempt budget", || {
            with_conn!(&self.backend, |conn| {
                statement::query(
                    "UPDATE step_calls SET max_attempts = $1 WHERE workflow_id = $2 AND step = $3 AND status = 'running' \
                     AND EXISTS (SELECT 1 FROM workflows WHERE id = $2 AND lease_epoch = $4)",
                )
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

    /// Queues the record that an attempt started at `at` (for a call's first
    /// attempt, with the call row). Lazy: it is committed with the attempt's
    /// outcome or within [`LAZY_WINDOW`], whichever comes first.
    pub fn start_attempt(
        &self,
        call: CallRef<'_>,
        attempt: u32,
        at: Timestamp,
        new_call: Option<&NewStepCall<'_>>,
    ) -> PendingWrite {
        let new_call = new_call.map(|call| NewCall {
            step: call.step.to_string(),
            input: call.input.to_string(),
            input_json: call.input_json.clone(),
            max_attempts: i32::try_from(call.max_attempts).unwrap_or(i32::MAX),
        });
        self.send(call, attempt, Change::Start { at, new_call })
    }

    /// Queues an attempt's end and, when it ends the call, the call's result;
    /// the workflow may see either only once the write is durable.
    pub fn finish_attempt(
        &self,
        call: CallRef<'_>,
        attempt: u32,
        end: AttemptEnd,
        call_end: Option<CallEnd>,
    ) -> PendingWrite {
        self.send(call, attempt, Change::Finish { end, call_end })
    }

    fn send(&self, call: CallRef<'_>, attempt: u32, change: Change) -> PendingWrite {
        self.writer.send(Write {
            workflow_id: call.lease.workflow_id.clone(),
            executor: call.lease.executor.clone(),
            epoch: call.lease.epoch,
            seq: call.seq,
            attempt: i32::try_from(attempt).unwrap_or(i32::MAX),
            change,
        })
    }

    /// Closes a call that was waiting for its next attempt as cancelled, if
    /// `call.lease` still holds its workflow.
    pub async fn cancel_call(&self, call: CallRef<'_>) -> Result<(), JournalError> {
        let now = Timestamp::now();
        self.commit("cancel of a step call", || {
            with_conn!(&self.backend, |conn| {
                statement::query(
                    "UPDATE step_calls SET status = 'cancelled', finished_at = $1 WHERE workflow_id = $2 AND seq = $3 \
                     AND status = 'running' AND EXISTS (SELECT 1 FROM workflows WHERE id = $2 AND lease_epoch = $4 \
                     AND status = 'running')",
                )
                .bind(now)
                .bind(&call.lease.workflow_id)
                .bind(call.seq)
                .bind(call.lease.epoch)
                .execute(conn)
                .await
                .map(|_| ())
            })
        })
        .await
    }

    /// The component stored under `digest`, if any: its name and bytes.
    pub async fn component(&self, digest: &str) -> Result<Option<(String, Vec<u8>)>, JournalError> {
        self.run("read of a component", || {
            with_conn!(&self.backend, |conn| {
                statement::query_as("SELECT name, bytes FROM components WHERE digest = $1")
                    .bind(digest)
                    .fetch_optional(conn)
                    .await
            })
        })
        .await
    }

    /// Whether a component's bytes are stored under `digest`.
    pub async fn has_component(&self, digest: &str) -> Result<bool, JournalError> {
        self.run("read of a component", || {
            with_conn!(&self.backend, |conn| {
                statement::query_scalar("SELECT count(*) FROM components WHERE digest = $1")
                    .bind(digest)
                    .fetch_one(conn)
                    .await
                    .map(|count: i64| count > 0)
            })
        })
        .await
    }

    /// Stores a component's bytes under their digest, once.
    pub async fn store_component(&self, digest: &str, name: &str, bytes: &[u8]) -> Result<(), JournalError> {
        let now = Timestamp::now();
        let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
        self.commit("store of a component", || {
            with_conn!(&self.backend, |conn| {
                statement::query(
                    "INSERT INTO components (digest, name, size, bytes, stored_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (digest) DO NOTHING",
                )
                .bind(digest)
                .bind(name)
                .bind(size)
                .bind(bytes)
                .bind(now)
                .execute(conn)
                .await
                .map(|_| ())
            })
        })
        .await
    }

    /// Replaces a running workflow's recorded options (after a resume that
    /// was allowed to run changed step components).
    pub async fn update_options(&self, lease: &Lease, options: &Json) -> Result<(), JournalError> {
        self.commit("update of a workflow's options", || {
            with_conn!(&self.backend, |conn| {
                statement::query("UPDATE workflows SET options = $1 WHERE id = $2 AND lease_epoch = $3")
                    .bind(options)
                    .bind(&lease.workflow_id)
                    .bind(lease.epoch)
                    .execute(conn)
                    .await
                    .map(|_| ())
            })
        })
        .await
    }

    /// The step calls of a workflow, in call order.
    pub async fn step_calls(&self, workflow_id: &str) -> Result<Vec<StepCallRecord>, JournalError> {
        self.run("read of step calls", || {
            with_conn!(&self.backend, |conn| {
                statement::query_as(concat!(
                    "SELECT ",
                    call_columns!(),
                    " FROM step_calls WHERE workflow_id = $1 ORDER BY seq"
                ))
                .bind(workflow_id)
                .fetch_all(conn)
                .await
            })
        })
        .await
    }

    /// Every attempt of a workflow, by call and attempt number.
    pub async fn attempts(&self, workflow_id: &str) -> Result<Vec<AttemptRecord>, JournalError> {
        self.run("read of attempts", || {
            with_conn!(&self.backend, |conn| {
                statement::query_as(concat!(
                    "SELECT ",
                    attempt_columns!(),
                    " FROM step_attempts WHERE workflow_id = $1 ORDER BY seq, attempt"
                ))
                .bind(workflow_id)
                .fetch_all(conn)
                .await
            })
        })
        .await
    }

    /// The attempts of step call `seq`, in order.
    pub async fn call_attempts(&self, workflow_id: &str, seq: i64) -> Result<Vec<AttemptRecord>, JournalError> {
        self.run("read of attempts", || {
            with_conn!(&self.backend, |conn| {
                statement::query_as(concat!(
                    "SELECT ",
                    attempt_columns!(),
                    " FROM step_attempts WHERE workflow_id = $1 AND seq = $2 ORDER BY attempt"
                ))
                .bind(workflow_id)
                .bind(seq)
                .fetch_all(conn)
                .await
            })
        })
        .await
    }

    /// A workflow's events, oldest first.
    pub async fn events(&self, workflow_id: &str) -> Result<Vec<EventRecord>, JournalError> {
        self.run("read of events", || {
            with_conn!(&self.backend, |conn| {
                statement::query_as(
                    "SELECT at, kind, detail, executor FROM workflow_events WHERE workflow_id = $1 ORDER BY id",
                )
                .bind(workflow_id)
                .fetch_all(conn)
                .await
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
