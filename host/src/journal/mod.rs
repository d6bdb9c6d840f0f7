//! The journal: workflows, step calls and every attempt, in SQLite (the
//! default, embedded) or PostgreSQL, each through its native sqlx driver and
//! its own migrations. Knows SQL, nothing of wasmtime.
//!
//! This file is the facade: the `Journal` handle, how it opens, and the
//! curated surface. Each room holds one job:
//! - `backend` (the database and its dialect), `postgres`, `sqlite`,
//!   `target` (URLs), `schema` (migrations), `statement` (pooler-safe statements);
//! - `records` (every type of the API), `vocabulary` (statuses, outcomes,
//!   kinds), `time`, `error`;
//! - `leases` (create, claim, renew, release, finish), `attempts` (the
//!   attempt-write API) over `group_commit` (the writer, its pure batch plan
//!   and its SQL), `reads`, `operations` (cancel, delete, prune, fork,
//!   events), `components`, `deployments` (what workflows run with, stored
//!   once), `queue` (submit, claim, park, reap, limits),
//!   `workers`, `notify` (LISTEN/NOTIFY);
//! - a workflow's own operations: `waits` (operations as call rows, the
//!   fence, a wait that gives the slot back), `messages` (send, recv,
//!   published events), `schedules` (cron ticks that start workflows);
//! - `faults`: every operation rides through transient database faults.

mod attempts;
mod backend;
mod children;
mod coalesce;
mod components;
mod deployments;
mod ends;
mod error;
mod faults;
mod group_commit;
mod leases;
mod messages;
mod notify;
mod operations;
mod postgres;
mod queue;
mod reads;
mod records;
mod schedules;
mod schema;
mod sqlite;
mod statement;
mod target;
mod time;
mod vocabulary;
mod waits;
mod workers;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use backend::BackendKind;
pub(crate) use backend::{Backend, with_conn};
pub use children::ChildStart;
pub use components::digest;
pub use ends::{ENDED, EndWatch};
pub use error::JournalError;
pub use faults::{DEFAULT_OUTAGE_BUDGET, DEFAULT_STATEMENT_WAIT};
pub use group_commit::{LAZY_WINDOW, PendingWrite};
pub use leases::RELEASE_BUDGET;
pub use messages::{MessageRecord, NewMessage, PublishedEvent, Received, SendCall, Sent};
pub use notify::{EVENTS, Listener, PROGRESS};
pub use queue::DEFAULT_QUEUE;
pub use reads::JournalCounts;
pub use records::{
    AttemptEnd, AttemptRecord, CallEnd, CallHistory, CallRef, CancelOutcome, ChildRecord, Claim, Claimed, Deleted,
    EventRecord, Finish, Forked, Lease, NewStepCall, NewSubmission, NewWorkflow, QueueLimits, QueueRecord, Reaped,
    Renewal, Requeued, StepCallRecord, Submitted, WorkerInfo, WorkerRecord, WorkflowFilter, WorkflowHistory,
    WorkflowRecord,
};
pub use schedules::{Fired, Firing, NewSchedule, ScheduleRecord, ScheduleTemplate, tick_workflow_id};
pub use target::{DEFAULT_SCHEMA, PostgresTarget, SqliteTarget, Target, TargetError, redact};
pub use time::Timestamp;
pub use vocabulary::{AttemptOutcome, CallStatus, CatchUp, FailureKind, WaitKind, WorkerState, WorkflowStatus};
pub use waits::{NewOperation, Waited, Waiting};

use faults::{Outage, Weather};
use group_commit::Writer;
use postgres::PgDb;
use sqlite::SqliteDb;

/// The columns of [`WorkflowRecord`], as a literal for `concat!`, given the
/// `options` column's expression (`options_postgres!()` or `options_sqlite!()`:
/// a row's options are put back together with its deployment's).
macro_rules! workflow_columns {
    ($($options:tt)*) => {
        concat!(
            "id, name, component, component_digest, entry, input, input_json, status, output, output_json, error, ",
            $($options)*,
            ", queue, priority, partition_key, dedup_key, run_at, deadline_at, executor, lease_epoch, \
         lease_expires_at, claims, cancel_requested_at, created_at, started_at, updated_at, finished_at, \
         waiting_for, wait_topic, schedule, scheduled_at, parent_id, parent_detached"
        )
    };
}
pub(crate) use workflow_columns;

/// The columns of [`WorkflowRecord`] as read from `kind`'s tables.
fn workflow_columns_on(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Postgres => workflow_columns!(deployments::options_postgres!()),
        BackendKind::Sqlite => workflow_columns!(deployments::options_sqlite!()),
    }
}

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
pub(crate) use {attempt_columns, call_columns};

/// The journal used when neither `--journal` nor `STEPBOX_JOURNAL` is given.
pub const DEFAULT_JOURNAL: &str = "stepbox.db";

/// How the journal commits and rides through faults.
#[derive(Debug, Clone, Copy)]
pub struct JournalOptions {
    /// Batch the writes of concurrent workflows (and an attempt's start with
    /// its finish) into shared transactions. Off, every write is its own
    /// transaction: kept to measure group commit against.
    pub group_commit: bool,
    /// How long operations retry through a database outage before giving up.
    pub outage_budget: Duration,
    /// How long one PostgreSQL statement may go unanswered before its
    /// connection counts as lost and the statement is sent again on a new one.
    pub statement_wait: Duration,
}

impl Default for JournalOptions {
    fn default() -> Self {
        Self { group_commit: true, outage_budget: DEFAULT_OUTAGE_BUDGET, statement_wait: DEFAULT_STATEMENT_WAIT }
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
    /// Finishes of this process's workflows on their way to a shared statement.
    finishes: Arc<coalesce::Coalescer<leases::Ending, Result<leases::Finished, JournalError>>>,
    /// Submits made in this process at once, on their way to a shared statement.
    submits: Arc<coalesce::Coalescer<(NewSubmission, WorkflowStatus), Result<bool, JournalError>>>,
    /// This process's waiters for workflows' ends.
    ends: Arc<ends::Ends>,
}

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
        // Only a server across a network can leave a statement unanswered without an error.
        let answer_within = matches!(backend, Backend::Postgres(_)).then_some(options.statement_wait);
        let weather = Weather::new(&location, options.outage_budget, answer_within);
        let writer = Writer::spawn(backend.clone(), &location, options.group_commit, weather.clone());
        Ok(Self {
            backend,
            location: location.into(),
            writer,
            weather,
            workflow_commits: Arc::default(),
            finishes: Arc::default(),
            submits: Arc::default(),
            ends: Arc::default(),
        })
    }

    /// Where the journal is, with any password hidden.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Which database it is in.
    pub fn kind(&self) -> BackendKind {
        self.backend.kind()
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

    /// As [`Journal::commit`], giving up (as an outage) after `within` instead
    /// of the outage budget: for what is worth nothing once late (a lease renewal).
    async fn commit_within<T, Op, Fut>(
        &self,
        what: &'static str,
        within: Duration,
        operation: Op,
    ) -> Result<T, JournalError>
    where
        Op: FnMut() -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let result = self.weather.retry_for(within, operation, || self.backend.reconnect()).await;
        self.workflow_commits.fetch_add(1, Ordering::Relaxed);
        result.map_err(|outage| self.error(what, outage))
    }

    /// Whether the journal answers a trivial statement within `within`: how a
    /// process that stopped its work in an outage learns that it is over.
    pub async fn answers(&self, within: Duration) -> bool {
        let ping = || with_conn!(&self.backend, |conn| statement::query("SELECT 1").execute(conn).await.map(drop));
        self.weather.retry_for(within, ping, || self.backend.reconnect()).await.is_ok()
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

    /// What each caller of a shared statement (a batch of finishes or
    /// submits) is told when the journal stayed unreachable through the
    /// outage budget: the error each would have got alone.
    fn unreachable_for_each(&self, what: &'static str, lasted: Duration, error: &sqlx::Error) -> JournalError {
        let source = match error {
            sqlx::Error::Io(io) => sqlx::Error::Io(std::io::Error::new(io.kind(), io.to_string())),
            sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed => sqlx::Error::WorkerCrashed,
            other => sqlx::Error::Io(std::io::Error::other(other.to_string())),
        };
        JournalError::Unreachable { location: self.location.to_string(), what, lasted, source }
    }

    fn error(&self, what: &'static str, outage: Outage) -> JournalError {
        let location = self.location.to_string();
        match outage.lasted {
            Some(lasted) => JournalError::Unreachable { location, what, lasted, source: outage.error },
            None => JournalError::Failed { location, what, source: outage.error },
        }
    }
}
