//! The documents of the operations: what `host … -o json` prints and what
//! the HTTP API answers, the same typed values for both (and the schemas of
//! the OpenAPI document).

use serde::Serialize;
use serde_json::Value as Json;

use crate::Disposition;
use crate::journal::{QueueRecord, ScheduleRecord, Timestamp, WorkerRecord, WorkflowRecord, WorkflowStatus};

/// A page of workflows, newest first, and the cursor of the next page.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkflowList {
    pub workflows: Vec<WorkflowRecord>,
    /// Pass as `after` (`--after`) for the next page; `null` on the last.
    pub next: Option<String>,
}

/// Where a workflow stands, with its output once it succeeded.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WorkflowResult {
    pub id: String,
    pub status: WorkflowStatus,
    /// The entry function's result as JSON, once succeeded.
    #[schema(value_type = serde_json::Value)]
    pub output: Option<Json>,
    /// The same result as WAVE text.
    pub output_wave: Option<String>,
    /// Why it failed, was cancelled, timed out or died.
    pub error: Option<String>,
}

impl WorkflowResult {
    /// The result document of `workflow`.
    pub fn of(workflow: &WorkflowRecord) -> Self {
        Self {
            id: workflow.id.clone(),
            status: workflow.status,
            output: workflow.output_json.clone(),
            output_wave: workflow.output.clone(),
            error: workflow.error.clone(),
        }
    }
}

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CancelKind {
    /// Nobody was running it: it is cancelled now.
    Done,
    /// The process running it was asked to stop it (at once through NOTIFY, else at its next renewal).
    Requested,
}

/// A cancel request and, once known, how the workflow ended.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CancelReceipt {
    pub id: String,
    pub cancel: CancelKind,
    /// The process asked to stop it, for a request.
    pub executor: Option<String>,
    /// How it ended, if it has (within the wait asked for).
    pub status: Option<WorkflowStatus>,
}

/// A workflow handed back to a queue, for a worker to resume from its journal.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Requeued {
    pub id: String,
    pub status: WorkflowStatus,
    pub queue: String,
}

/// A fork: a new workflow with its original's inputs and first calls.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ForkReceipt {
    /// The new workflow.
    pub id: String,
    pub forked_from: String,
    pub from_step: i64,
    /// Its queue, when workers run it.
    pub queue: Option<String>,
    pub status: WorkflowStatus,
}

/// Workflows deleted with all their rows.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Deletion {
    pub deleted: Vec<String>,
}

/// What a prune removed.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Pruned {
    /// Workflows removed, with their rows.
    pub deleted: u64,
    /// Every workflow that finished before this went.
    pub finished_before: Timestamp,
}

/// The queues with work or limits.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QueueList {
    pub queues: Vec<QueueRecord>,
}

/// The worker processes, the live ones first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkerList {
    pub workers: Vec<WorkerRecord>,
}

/// An operation that failed: what to tell a person, and what kind of failure it is.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Failure {
    pub error: String,
    pub disposition: Disposition,
}

/// A workflow handed to a queue.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SubmitReceipt {
    /// The new workflow's id, or the live one's holding the dedup key.
    pub id: String,
    /// True when a live workflow held the dedup key: nothing was submitted.
    pub deduplicated: bool,
    pub status: WorkflowStatus,
    pub queue: Option<String>,
    /// When it may start.
    pub run_at: Option<Timestamp>,
}

/// A component stored in the journal, once per digest.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct UploadReceipt {
    /// Hex SHA-256 of its bytes: what submissions name it by.
    pub digest: String,
    pub name: String,
    pub size: usize,
    /// False when it was stored already.
    pub stored: bool,
}

/// A message handed to a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SendReceipt {
    /// The recipient.
    pub id: String,
    pub topic: String,
    /// The message's number (its order of sending).
    pub message: i64,
    /// True when a message with the same idempotency key was sent before: nothing new was sent.
    pub duplicate: bool,
}

/// A value a workflow published with `set-event`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct EventValue {
    pub id: String,
    pub key: String,
    /// The value, parsed.
    pub value: Json,
    /// The value as the workflow wrote it (JSON text).
    pub value_text: String,
    /// When it was set (a later `set-event` replaces it).
    pub set_at: Timestamp,
    /// Where the workflow stands.
    pub status: WorkflowStatus,
}

/// The schedules, by name.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleRecord>,
}
