//! Rows as the journal returns them, and what callers hand it to write. The
//! same structs serialize to the JSON of `host show -o json` and the HTTP API.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value as Json;

use super::messages::{MessageRecord, PublishedEvent};
use super::time::Timestamp;
use super::vocabulary::{AttemptOutcome, CallStatus, FailureKind, WaitKind, WorkerState, WorkflowStatus};

/// A workflow row.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct WorkflowRecord {
    pub id: String,
    /// The workflow component's file name without `.wasm`.
    pub name: String,
    /// The workflow component as given: a path, or a stored component's name.
    pub component: String,
    pub component_digest: String,
    pub entry: String,
    /// The arguments, a WAVE tuple.
    pub input: String,
    /// The arguments as a JSON array.
    pub input_json: Json,
    pub status: WorkflowStatus,
    /// The result as WAVE, once succeeded.
    pub output: Option<String>,
    /// Any JSON value (null until it has one): one schema, not `null` or any.
    #[schema(value_type = serde_json::Value)]
    pub output_json: Option<Json>,
    /// Why it failed, was cancelled, timed out or died.
    pub error: Option<String>,
    /// What it runs with, by value (components, entry, each step's settings).
    pub options: Json,
    pub queue: Option<String>,
    pub priority: i32,
    pub partition_key: Option<String>,
    pub dedup_key: Option<String>,
    pub run_at: Option<Timestamp>,
    pub deadline_at: Option<Timestamp>,
    /// The process that owns (or last owned) it.
    pub executor: Option<String>,
    /// The fencing token of the current owner.
    pub lease_epoch: i64,
    pub lease_expires_at: Option<Timestamp>,
    /// Claims since it last made progress.
    pub claims: i32,
    pub cancel_requested_at: Option<Timestamp>,
    /// When it was started or submitted: also the workflow's frozen wall clock.
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub updated_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// What a `waiting` workflow waits for (until `run_at`, if set).
    pub waiting_for: Option<WaitKind>,
    /// The topic a workflow waiting for a message listens on.
    pub wait_topic: Option<String>,
    /// The schedule whose tick started it.
    pub schedule: Option<String>,
    /// The tick it was started for.
    pub scheduled_at: Option<Timestamp>,
    /// The workflow whose `start-child` started it.
    pub parent_id: Option<String>,
    /// Started detached: its parent neither awaits it nor takes it along when cancelled.
    pub parent_detached: bool,
}

/// A step call row.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct StepCallRecord {
    pub seq: i64,
    /// `interface.function`.
    pub step: String,
    /// The arguments, a WAVE tuple.
    pub input: String,
    pub input_json: Json,
    pub status: CallStatus,
    /// The value the workflow received, as WAVE.
    pub output: Option<String>,
    /// Any JSON value (null until it has one): one schema, not `null` or any.
    #[schema(value_type = serde_json::Value)]
    pub output_json: Option<Json>,
    /// Attempts started so far (in JSON, the attempt list says it).
    #[serde(skip)]
    pub attempts: i32,
    pub max_attempts: i32,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

/// An attempt row.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AttemptRecord {
    /// The step call it belongs to.
    pub seq: i64,
    pub attempt: i32,
    pub executor: String,
    pub started_at: Timestamp,
    /// `None` while it runs, or when the host stopped and its end is unknown.
    pub finished_at: Option<Timestamp>,
    /// `None` while it runs.
    pub outcome: Option<AttemptOutcome>,
    pub kind: Option<FailureKind>,
    pub message: Option<String>,
    /// When the next attempt is due, for a failed attempt that is retried.
    pub retry_at: Option<Timestamp>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
}

/// Something that happened to a workflow besides its steps.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct EventRecord {
    pub at: Timestamp,
    /// e.g. `cancel-requested`, `steps-changed`, `forked-from`.
    pub kind: String,
    pub detail: Json,
    pub executor: Option<String>,
}

/// A workflow with its step calls, their attempts and its events: what
/// `host show` prints and the API's workflow resource.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WorkflowHistory {
    #[serde(flatten)]
    pub workflow: WorkflowRecord,
    pub calls: Vec<CallHistory>,
    pub events: Vec<EventRecord>,
    /// The messages sent to it, in the order sent (received or not).
    pub messages: Vec<MessageRecord>,
    /// The values it published (`set-event`), by key.
    pub published: Vec<PublishedEvent>,
    /// The workflows it started (`start-child`), oldest first.
    pub children: Vec<ChildRecord>,
}

/// A child workflow as its parent's history lists it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ChildRecord {
    pub id: String,
    /// The function of the parent's component it runs.
    pub entry: String,
    pub status: WorkflowStatus,
    /// Started detached: not awaited, not cancelled with the parent.
    #[serde(rename = "detached")]
    pub parent_detached: bool,
    pub created_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

/// A step call with its attempts.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CallHistory {
    #[serde(flatten)]
    pub call: StepCallRecord,
    pub attempts: Vec<AttemptRecord>,
}

impl WorkflowHistory {
    /// Groups `attempts` under their calls.
    pub fn new(
        workflow: WorkflowRecord,
        calls: Vec<StepCallRecord>,
        attempts: Vec<AttemptRecord>,
        events: Vec<EventRecord>,
    ) -> Self {
        let mut attempts = attempts.into_iter().peekable();
        let calls = calls
            .into_iter()
            .map(|call| {
                let mut own = Vec::new();
                while let Some(attempt) = attempts.next_if(|attempt| attempt.seq <= call.seq) {
                    if attempt.seq == call.seq {
                        own.push(attempt);
                    }
                }
                CallHistory { call, attempts: own }
            })
            .collect();
        Self { workflow, calls, events, messages: Vec::new(), published: Vec::new(), children: Vec::new() }
    }

    /// Every attempt, in call and attempt order.
    pub fn attempts(&self) -> impl Iterator<Item = &AttemptRecord> {
        self.calls.iter().flat_map(|call| &call.attempts)
    }
}

/// The right to write a workflow's rows: its owner and the fencing epoch its
/// claim set. Every write checks the epoch, and that the lease has not
/// expired by the database's clock, in its own statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub workflow_id: String,
    pub executor: String,
    pub epoch: i64,
    /// A local instant no later than when the database set this lease's
    /// expiry (taken before the statement was first sent): the holder counts
    /// its own deadline from it, so it stops before anyone else may start.
    pub granted_at: std::time::Instant,
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

/// A workflow handed to the queue.
#[derive(Debug, Clone)]
pub struct NewSubmission {
    pub workflow: NewWorkflow,
    pub queue: String,
    /// Lower runs first.
    pub priority: i32,
    pub partition_key: Option<String>,
    pub dedup_key: Option<String>,
    /// When it may start.
    pub run_at: Timestamp,
    /// When it times out if not finished.
    pub deadline_at: Option<Timestamp>,
}

/// What `submit_workflow` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// A new workflow with the id asked for.
    New,
    /// A live workflow of the queue has the dedup key already: its id.
    Deduplicated(String),
    /// The id belongs to another workflow.
    IdTaken,
}

/// A queued workflow a worker now owns.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub lease: Lease,
    pub workflow: WorkflowRecord,
}

impl Claimed {
    /// Whether this is the workflow's first lease ever: epochs only grow and
    /// every write is fenced by one, so nothing is journaled for it yet and
    /// its history need not be read. (A fork, whose journal is copied when it
    /// is made, starts at epoch 1: its first claim is its second lease.)
    pub fn first_lease(&self) -> bool {
        self.lease.epoch == 1
    }
}

/// What one reaper pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Back in their queue (their worker's lease lapsed).
    pub requeued: Vec<String>,
    /// Given up: their leases lapsed too often without progress.
    pub dead: Vec<String>,
    /// Waiting in their queue past their deadline: ended `timed-out`.
    pub timed_out: Vec<String>,
}

/// What `requeue_workflow` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requeued {
    /// Back in this queue, to be claimed by a worker.
    Enqueued { queue: String },
    /// No such workflow.
    Unknown,
    /// A live process holds its lease: it is running now.
    Live { executor: String },
    /// It is in a queue already (enqueued or delayed), or it ended.
    Not(WorkflowStatus),
}

/// A queue's limits, holding across every worker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct QueueLimits {
    pub name: String,
    /// Most workflows of the queue running at once.
    pub concurrency: Option<i32>,
    /// Most workflows of one partition key running at once.
    pub partition_concurrency: Option<i32>,
    /// Most starts per `rate_period_ms`.
    pub rate_limit: Option<i32>,
    pub rate_period_ms: Option<i64>,
}

/// A queue as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct QueueRecord {
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub limits: QueueLimits,
    /// Enqueued and due.
    pub ready: i64,
    /// Waiting for a time (delayed start, a retry far away).
    pub delayed: i64,
    /// Waiting in their own code (a sleep, a `recv`), their slots given back.
    pub waiting: i64,
    pub running: i64,
    /// Started within the last rate period (or minute).
    pub recent_starts: i64,
}

/// A worker process, for its row.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerInfo {
    pub id: String,
    pub host: String,
    pub pid: i32,
    pub queues: Vec<String>,
    pub concurrency: i32,
    /// The lease its workflows are held under: silent longer than this, it is lost.
    pub lease: Duration,
}

/// A worker's row.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct WorkerRecord {
    pub id: String,
    pub host: String,
    pub pid: i32,
    pub queues: serde_json::Value,
    pub concurrency: i32,
    pub running: i32,
    pub started_at: Timestamp,
    pub last_seen_at: Timestamp,
    pub stopped_at: Option<Timestamp>,
    /// Its lease, in milliseconds.
    pub lease_ms: i64,
    /// From its row and the database's clock: lost once silent for longer than its lease.
    pub state: WorkerState,
}

impl WorkerRecord {
    /// Its queues, comma-separated.
    pub fn queue_names(&self) -> String {
        self.queues.as_array().map_or_else(String::new, |queues| {
            queues.iter().filter_map(|queue| queue.as_str()).collect::<Vec<_>>().join(",")
        })
    }
}
