//! The journal: workflows, step calls and every attempt, in SQLite (default)
//! or PostgreSQL through one schema and one set of parameterized statements.
//! Knows SQL, nothing of wasmtime.

mod group_commit;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use group_commit::{Change, NewCall, Write, Writer};
pub use group_commit::{CommitCounters, LAZY_WINDOW, PendingWrite};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor as _, Row as _};

/// The journal used when neither `--journal` nor `STEPBOX_JOURNAL` is given.
pub const DEFAULT_JOURNAL: &str = "stepbox.db";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The journal could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open the journal {location}: {source}. {hint}")]
    Open { location: String, hint: &'static str, source: sqlx::Error },
    #[error(
        "cannot use {location} as a journal: `{scheme}://` is not supported; use a postgres:// URL, a sqlite: URL \
         or a file path"
    )]
    Scheme { location: String, scheme: String },
    #[error("cannot prepare the journal schema in {location}: {source}")]
    Migrate { location: String, source: sqlx::migrate::MigrateError },
    #[error("journal write failed ({what}) in {location}: {source}")]
    Write { location: String, what: &'static str, source: sqlx::Error },
    #[error("journal read failed ({what}) in {location}: {source}")]
    Read { location: String, what: &'static str, source: sqlx::Error },
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

const SQLITE_HINT: &str = "Check that the directory exists and is writable, or pass another path with --journal.";
const POSTGRES_HINT: &str = "Check that PostgreSQL is running and the URL's host, port, user and database are right \
     (start a local server with `pg_ctlcluster <version> main start`), or pass another --journal URL.";

/// A workflow's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkflowStatus {
    Running,
    Succeeded,
    Failed,
}

impl WorkflowStatus {
    /// The value stored in `workflows.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    /// Reads `workflows.status`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "running" => Some(Self::Running),
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// How a step call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepCallStatus {
    Succeeded,
    /// The step returned its `permanent` case.
    Failed,
    /// Every attempt failed; the workflow got `retries-exhausted`.
    Exhausted,
}

impl StepCallStatus {
    /// The value stored in `step_calls.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Exhausted => "exhausted",
        }
    }
}

/// Which step call a write is for, and who writes it.
#[derive(Debug, Clone, Copy)]
pub struct CallRef<'a> {
    pub workflow_id: &'a str,
    /// The call's position in the workflow, from 1.
    pub seq: i64,
    /// The executor that must still own the workflow.
    pub executor: &'a str,
}

/// A step call's first row, written with its first attempt.
#[derive(Debug, Clone, Copy)]
pub struct NewStepCall<'a> {
    /// Qualified step name.
    pub step: &'a str,
    /// Arguments as a WAVE tuple.
    pub input: &'a str,
    pub max_attempts: u32,
}

/// The outcome of one attempt as journaled.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptOutcome {
    /// `ok`, `failed` or `permanent`.
    pub outcome: &'static str,
    /// The failure kind, for failed attempts.
    pub kind: Option<&'static str>,
    pub message: Option<String>,
    /// The wait before the next attempt, when one follows.
    pub next_delay: Option<Duration>,
    /// Captured output, if any.
    pub stdout: Option<String>,
    pub stderr: Option<String>,
}

impl AttemptOutcome {
    /// `next_delay` in the journal's unit.
    fn next_delay_ms(&self) -> Option<i64> {
        self.next_delay.map(|delay| i64::try_from(delay.as_millis()).unwrap_or(i64::MAX))
    }
}

/// How the journal commits attempt writes.
#[derive(Debug, Clone, Copy)]
pub struct JournalOptions {
    /// Batch the writes of concurrent workflows (and an attempt's start with
    /// its finish) into shared transactions. Off, every write is its own
    /// transaction: kept to measure group commit against.
    pub group_commit: bool,
}

impl Default for JournalOptions {
    fn default() -> Self {
        Self { group_commit: true }
    }
}

/// A workflow row (times in ms since the Unix epoch; input and output as WAVE).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowRecord {
    pub id: String,
    pub component: String,
    pub component_digest: String,
    pub entry: String,
    pub input: String,
    pub status: WorkflowStatus,
    pub output: Option<String>,
    pub error: Option<String>,
    /// The run options as JSON, enough to resume without the command line.
    pub options: String,
    pub executor: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A step call row (times in ms since the Unix epoch; input and output as WAVE;
/// status `running`, `succeeded`, `failed` or `exhausted`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StepCallRecord {
    pub seq: i64,
    pub step: String,
    pub input: String,
    pub status: String,
    pub output: Option<String>,
    pub attempts: i64,
    pub max_attempts: i64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

/// An attempt row (times in ms since the Unix epoch; outcome `ok`, `failed` or
/// `permanent`; kind a `failure-kind` case).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AttemptRecord {
    pub seq: i64,
    pub attempt: i64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub outcome: Option<String>,
    pub kind: Option<String>,
    pub message: Option<String>,
    pub next_delay_ms: Option<i64>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
}

/// A connection pool to the journal database, migrated on open, and the
/// group-commit writer its attempt writes go through.
#[derive(Clone)]
pub struct Journal {
    pool: AnyPool,
    location: String,
    writer: Writer,
    /// Workflow-level writes (create, claim, lease, finish), each its own transaction.
    workflow_commits: Arc<std::sync::atomic::AtomicU64>,
}

/// Transactions the journal committed so far in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitCount {
    /// Group-commit transactions carrying attempt writes.
    pub attempt_batches: u64,
    /// Attempt writes (starts and finishes) those carried.
    pub attempt_writes: u64,
    /// Workflow-level transactions: create, claim, lease renewal, finish.
    pub workflow_commits: u64,
}

impl Journal {
    /// Opens (creating if needed) the journal at `target`: a `postgres://`
    /// URL, a `sqlite:` URL or a file path.
    pub async fn open(target: &str) -> Result<Self, JournalError> {
        Self::open_with(target, JournalOptions::default()).await
    }

    /// [`Journal::open`] with explicit commit options.
    pub async fn open_with(target: &str, journal_options: JournalOptions) -> Result<Self, JournalError> {
        sqlx::any::install_default_drivers();
        let is_postgres = target.starts_with("postgres://") || target.starts_with("postgresql://");
        if let Some((scheme, _)) = target.split_once("://").filter(|_| !is_postgres && !target.starts_with("sqlite:")) {
            return Err(JournalError::Scheme { location: redact(target), scheme: scheme.to_string() });
        }
        let (url, hint) =
            if is_postgres { (target.to_string(), POSTGRES_HINT) } else { (sqlite_url(target), SQLITE_HINT) };
        let location = redact(target);
        // No ping before each use: a dead connection fails the statement, which is reported.
        let options = AnyPoolOptions::new().max_connections(if is_postgres { 8 } else { 4 }).test_before_acquire(false);
        let options = if is_postgres {
            options
        } else {
            options.after_connect(|connection, _| {
                Box::pin(async move {
                    connection
                        .execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
                        .await?;
                    Ok(())
                })
            })
        };
        let pool = options
            .acquire_timeout(Duration::from_secs(10))
            .connect(&url)
            .await
            .map_err(|source| JournalError::Open { location: location.clone(), hint, source })?;
        migrate(&pool, is_postgres)
            .await
            .map_err(|source| JournalError::Migrate { location: location.clone(), source })?;
        let writer = Writer::spawn(pool.clone(), &location, journal_options.group_commit, is_postgres);
        Ok(Self { pool, location, writer, workflow_commits: Arc::default() })
    }

    /// What this process has committed so far, to measure commits per step.
    pub fn commit_count(&self) -> CommitCount {
        let counters: &CommitCounters = &self.writer.counters;
        CommitCount {
            attempt_batches: counters.batches.load(Ordering::Relaxed),
            attempt_writes: counters.writes.load(Ordering::Relaxed),
            workflow_commits: self.workflow_commits.load(Ordering::Relaxed),
        }
    }

    fn count_workflow_commit(&self) {
        self.workflow_commits.fetch_add(1, Ordering::Relaxed);
    }

    /// Where the journal is, with any password hidden.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn write_error(&self, what: &'static str) -> impl FnOnce(sqlx::Error) -> JournalError + '_ {
        move |source| JournalError::Write { location: self.location.clone(), what, source }
    }

    fn read_error(&self, what: &'static str) -> impl FnOnce(sqlx::Error) -> JournalError + '_ {
        move |source| JournalError::Read { location: self.location.clone(), what, source }
    }

    /// The workflow `id`, if it was ever started.
    pub async fn workflow(&self, id: &str) -> Result<Option<WorkflowRecord>, JournalError> {
        let row = sqlx::query(
            "SELECT id, component, component_digest, entry, input, status, output, error, options, executor, \
             created_at, updated_at FROM workflows WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.read_error("workflow"))?;
        row.map(|row| workflow_record(&row)).transpose().map_err(self.read_error("workflow"))
    }

    /// Records a workflow as running, owned by `workflow.executor` until
    /// `lease_until`, before any of its code runs. False if the id exists.
    pub async fn create_workflow(&self, workflow: &WorkflowRecord, lease_until: i64) -> Result<bool, JournalError> {
        // The record's own start time: the workflow's frozen clock on every run.
        let now = workflow.created_at;
        let result = sqlx::query(
            "INSERT INTO workflows (id, component, component_digest, entry, input, status, options, executor, \
             lease_expires_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'running', $6, $7, $8, $9, $9) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&workflow.id)
        .bind(&workflow.component)
        .bind(&workflow.component_digest)
        .bind(&workflow.entry)
        .bind(&workflow.input)
        .bind(&workflow.options)
        .bind(&workflow.executor)
        .bind(lease_until)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(self.write_error("create workflow"))?;
        self.count_workflow_commit();
        Ok(result.rows_affected() == 1)
    }

    /// Takes over a running workflow whose lease has expired (or that
    /// `executor` already owns). False when another live executor owns it.
    pub async fn claim_workflow(&self, id: &str, executor: &str, lease_until: i64) -> Result<bool, JournalError> {
        let now = now_ms();
        let result = sqlx::query(
            "UPDATE workflows SET executor = $1, lease_expires_at = $2, updated_at = $3 \
             WHERE id = $4 AND status = 'running' \
             AND (executor = $1 OR lease_expires_at IS NULL OR lease_expires_at < $3)",
        )
        .bind(executor)
        .bind(lease_until)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(self.write_error("claim workflow"))?;
        self.count_workflow_commit();
        Ok(result.rows_affected() == 1)
    }

    /// Extends `executor`'s lease; false if it no longer owns the workflow.
    pub async fn renew_lease(&self, id: &str, executor: &str, lease_until: i64) -> Result<bool, JournalError> {
        let result = sqlx::query(
            "UPDATE workflows SET lease_expires_at = $1 WHERE id = $2 AND executor = $3 AND status = 'running'",
        )
        .bind(lease_until)
        .bind(id)
        .bind(executor)
        .execute(&self.pool)
        .await
        .map_err(self.write_error("renew lease"))?;
        self.count_workflow_commit();
        Ok(result.rows_affected() == 1)
    }

    /// Running workflows whose owner's lease has expired: interrupted, free to resume.
    pub async fn interrupted_workflows(&self) -> Result<Vec<String>, JournalError> {
        let rows = sqlx::query(
            "SELECT id FROM workflows WHERE status = 'running' \
             AND (lease_expires_at IS NULL OR lease_expires_at < $1) ORDER BY created_at",
        )
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await
        .map_err(self.read_error("interrupted workflows"))?;
        rows.iter()
            .map(|row| row.try_get("id"))
            .collect::<Result<_, _>>()
            .map_err(self.read_error("interrupted workflows"))
    }

    /// Workflows, newest first, optionally only those with `status`.
    pub async fn list_workflows(
        &self,
        status: Option<WorkflowStatus>,
        limit: i64,
    ) -> Result<Vec<WorkflowRecord>, JournalError> {
        let rows = sqlx::query(
            "SELECT id, component, component_digest, entry, input, status, output, error, options, executor, \
             created_at, updated_at FROM workflows WHERE ($1 = '' OR status = $1) \
             ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .bind(status.map_or("", WorkflowStatus::as_str))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(self.read_error("workflows"))?;
        rows.iter().map(workflow_record).collect::<Result<_, _>>().map_err(self.read_error("workflows"))
    }

    /// Records how a workflow ended, if `executor` still owns it; done
    /// before its output is shown. False if the lease was lost.
    pub async fn finish_workflow(
        &self,
        id: &str,
        executor: &str,
        status: WorkflowStatus,
        output: Option<&str>,
        error: Option<&str>,
    ) -> Result<bool, JournalError> {
        let result = sqlx::query(
            "UPDATE workflows SET status = $1, output = $2, error = $3, updated_at = $4, lease_expires_at = NULL \
             WHERE id = $5 AND executor = $6 AND status = 'running'",
        )
        .bind(status.as_str())
        .bind(output)
        .bind(error)
        .bind(now_ms())
        .bind(id)
        .bind(executor)
        .execute(&self.pool)
        .await
        .map_err(self.write_error("finish workflow"))?;
        self.count_workflow_commit();
        Ok(result.rows_affected() == 1)
    }

    /// Queues the record that an attempt started (for a call's first attempt,
    /// with the call row). Lazy: it is committed with the attempt's outcome
    /// or within [`LAZY_WINDOW`], whichever comes first.
    pub fn start_attempt(&self, call: CallRef<'_>, attempt: u32, new_call: Option<&NewStepCall<'_>>) -> PendingWrite {
        let new_call = new_call.map(|call| NewCall {
            step: call.step.to_string(),
            input: call.input.to_string(),
            max_attempts: i64::from(call.max_attempts),
        });
        self.send(call, attempt, Change::Start { at: now_ms(), new_call })
    }

    /// Queues an attempt's outcome and, when it ends the call, the call's
    /// result; the workflow may see either only once the write is durable.
    pub fn finish_attempt(
        &self,
        call: CallRef<'_>,
        attempt: u32,
        outcome: AttemptOutcome,
        call_result: Option<(StepCallStatus, &str)>,
    ) -> PendingWrite {
        let call_result = call_result.map(|(status, output)| (status, output.to_string()));
        self.send(call, attempt, Change::Finish { at: now_ms(), outcome, call_result })
    }

    fn send(&self, call: CallRef<'_>, attempt: u32, change: Change) -> PendingWrite {
        self.writer.send(Write {
            workflow_id: call.workflow_id.to_string(),
            executor: call.executor.to_string(),
            seq: call.seq,
            attempt: i64::from(attempt),
            change,
        })
    }

    /// The step calls of a workflow, in call order.
    pub async fn step_calls(&self, workflow_id: &str) -> Result<Vec<StepCallRecord>, JournalError> {
        self.read_step_calls(workflow_id, None).await
    }

    /// Step call `seq` of a workflow, if it was made.
    pub async fn step_call(&self, workflow_id: &str, seq: i64) -> Result<Option<StepCallRecord>, JournalError> {
        Ok(self.read_step_calls(workflow_id, Some(seq)).await?.pop())
    }

    async fn read_step_calls(&self, workflow_id: &str, seq: Option<i64>) -> Result<Vec<StepCallRecord>, JournalError> {
        const COLUMNS: &str = "SELECT seq, step, input, status, output, attempts, max_attempts, started_at, finished_at \
                               FROM step_calls WHERE workflow_id = $1";
        let query = match seq {
            Some(seq) => {
                sqlx::query(sqlx::AssertSqlSafe(format!("{COLUMNS} AND seq = $2"))).bind(workflow_id).bind(seq)
            }
            None => sqlx::query(sqlx::AssertSqlSafe(format!("{COLUMNS} ORDER BY seq"))).bind(workflow_id),
        };
        let rows = query.fetch_all(&self.pool).await.map_err(self.read_error("step calls"))?;
        rows.iter().map(step_call_record).collect::<Result<_, _>>().map_err(self.read_error("step calls"))
    }

    /// Every attempt of a workflow, by call and attempt number.
    pub async fn attempts(&self, workflow_id: &str) -> Result<Vec<AttemptRecord>, JournalError> {
        self.read_attempts(workflow_id, None).await
    }

    /// The attempts of step call `seq`, in order.
    pub async fn call_attempts(&self, workflow_id: &str, seq: i64) -> Result<Vec<AttemptRecord>, JournalError> {
        self.read_attempts(workflow_id, Some(seq)).await
    }

    async fn read_attempts(&self, workflow_id: &str, seq: Option<i64>) -> Result<Vec<AttemptRecord>, JournalError> {
        const COLUMNS: &str = "SELECT seq, attempt, started_at, finished_at, outcome, kind, message, next_delay_ms, \
                               stdout, stderr FROM step_attempts WHERE workflow_id = $1";
        let query = match seq {
            Some(seq) => sqlx::query(sqlx::AssertSqlSafe(format!("{COLUMNS} AND seq = $2 ORDER BY attempt")))
                .bind(workflow_id)
                .bind(seq),
            None => sqlx::query(sqlx::AssertSqlSafe(format!("{COLUMNS} ORDER BY seq, attempt"))).bind(workflow_id),
        };
        let rows = query.fetch_all(&self.pool).await.map_err(self.read_error("attempts"))?;
        rows.iter().map(attempt_record).collect::<Result<_, _>>().map_err(self.read_error("attempts"))
    }
}

fn step_call_record(row: &AnyRow) -> Result<StepCallRecord, sqlx::Error> {
    Ok(StepCallRecord {
        seq: row.try_get("seq")?,
        step: row.try_get("step")?,
        input: row.try_get("input")?,
        status: row.try_get("status")?,
        output: row.try_get("output")?,
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

fn attempt_record(row: &AnyRow) -> Result<AttemptRecord, sqlx::Error> {
    Ok(AttemptRecord {
        seq: row.try_get("seq")?,
        attempt: row.try_get("attempt")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        outcome: row.try_get("outcome")?,
        kind: row.try_get("kind")?,
        message: row.try_get("message")?,
        next_delay_ms: row.try_get("next_delay_ms")?,
        stdout: row.try_get("stdout")?,
        stderr: row.try_get("stderr")?,
    })
}

/// Applies the embedded migrations. PostgreSQL serializes concurrent
/// migrators with an advisory lock; SQLite has none, so a process that loses
/// the race to create a fresh journal retries and finds the schema in place.
async fn migrate(pool: &AnyPool, is_postgres: bool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut tries = if is_postgres { 1 } else { 5 };
    loop {
        match MIGRATOR.run(pool).await {
            Err(_) if tries > 1 => {
                tries -= 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            result => return result,
        }
    }
}

fn workflow_record(row: &AnyRow) -> Result<WorkflowRecord, sqlx::Error> {
    Ok(WorkflowRecord {
        id: row.try_get("id")?,
        component: row.try_get("component")?,
        component_digest: row.try_get("component_digest")?,
        entry: row.try_get("entry")?,
        input: row.try_get("input")?,
        status: {
            let status: String = row.try_get("status")?;
            WorkflowStatus::parse(&status)
                .ok_or_else(|| sqlx::Error::Decode(format!("unknown status {status:?}").into()))?
        },
        output: row.try_get("output")?,
        error: row.try_get("error")?,
        options: row.try_get("options")?,
        executor: row.try_get("executor")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// `path` or `sqlite:path` as a URL that creates the file if needed.
fn sqlite_url(target: &str) -> String {
    let base = if target.starts_with("sqlite:") { target.to_string() } else { format!("sqlite://{target}") };
    if base.contains("mode=") {
        base
    } else if base.contains('?') {
        format!("{base}&mode=rwc")
    } else {
        format!("{base}?mode=rwc")
    }
}

/// `url` with its password, if any, replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let Some((credentials, host)) = rest.rsplit_once('@') else { return url.to_string() };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// Wall-clock milliseconds since the Unix epoch, the journal's time unit.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://u:p@ss@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("stepbox.db"), "stepbox.db");
    }

    #[test]
    fn sqlite_paths_become_creating_urls() {
        assert_eq!(sqlite_url("stepbox.db"), "sqlite://stepbox.db?mode=rwc");
        assert_eq!(sqlite_url("sqlite:x.db?mode=ro"), "sqlite:x.db?mode=ro");
    }
}
