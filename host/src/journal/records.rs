//! Rows as the journal returns them, and what callers hand it to write. The
//! same structs serialize to the JSON of `host show -o json` and the HTTP API.

use serde::Serialize;
use serde_json::Value as Json;

use super::time::Timestamp;
use super::vocabulary::{AttemptOutcome, CallStatus, FailureKind, WorkflowStatus};

/// A workflow row.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
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
}

/// A step call row.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
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
    pub output_json: Option<Json>,
    /// Attempts started so far (in JSON, the attempt list says it).
    #[serde(skip)]
    pub attempts: i32,
    pub max_attempts: i32,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

/// An attempt row.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
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
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct EventRecord {
    pub at: Timestamp,
    /// e.g. `cancel-requested`, `steps-changed`, `forked-from`.
    pub kind: String,
    pub detail: Json,
    pub executor: Option<String>,
}

/// A workflow with its step calls, their attempts and its events: what
/// `host show` prints and the API's workflow resource.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkflowHistory {
    #[serde(flatten)]
    pub workflow: WorkflowRecord,
    pub calls: Vec<CallHistory>,
    pub events: Vec<EventRecord>,
}

/// A step call with its attempts.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
        Self { workflow, calls, events }
    }

    /// Every attempt, in call and attempt order.
    pub fn attempts(&self) -> impl Iterator<Item = &AttemptRecord> {
        self.calls.iter().flat_map(|call| &call.attempts)
    }
}
