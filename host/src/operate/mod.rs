//! The operations people and programs run on a journal — list, show,
//! result, cancel, resume onto a queue, fork, delete, prune, queues,
//! workers, send, event, schedules — once, for the CLI and the HTTP API alike: each answers with a
//! typed document (such as [`WorkflowList`]) or an [`OperateError`] whose disposition
//! gives the exit code or the HTTP status. Nothing here prints or parses.

mod documents;

use std::time::{Duration, Instant};

pub use documents::{
    CancelKind, CancelReceipt, Deletion, EventValue, Failure, ForkReceipt, Pruned, QueueList, Requeued, ScheduleList,
    SendReceipt, SubmitReceipt, UploadReceipt, WorkerList, WorkflowList, WorkflowResult,
};

use crate::Disposition;
use crate::journal::{
    CancelOutcome, Deleted, Journal, JournalError, NewMessage, Requeued as JournalRequeued, Sent, Timestamp,
    WorkflowFilter, WorkflowHistory, WorkflowRecord, WorkflowStatus,
};
use crate::run::ForkError;

/// How often an operation that waits looks at the journal.
const POLL: Duration = Duration::from_millis(100);

/// Why an operation did not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum OperateError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Fork(#[from] ForkError),
    #[error("no workflow {id} in the journal {journal}")]
    NotFound { id: String, journal: String },
    #[error("workflow {id} already ended: {status}; {then}")]
    Ended { id: String, status: WorkflowStatus, then: &'static str },
    #[error("workflow {id} is running on {executor}, which holds its lease; there is nothing to resume")]
    Live { id: String, executor: String },
    #[error("workflow {id} is {status} already: a worker will run it")]
    Queued { id: String, status: WorkflowStatus },
    #[error("workflow {id} is {status}, not finished: cancel it first (`host cancel {id}`) or let it end")]
    NotFinished { id: String, status: WorkflowStatus },
    #[error("workflow {id} published no event {key:?} and has ended ({status}): it never will")]
    NoEvent { id: String, key: String, status: WorkflowStatus },
    #[error("no schedule {0}")]
    NoSchedule(String),
    #[error("{0}")]
    Refused(String),
}

impl OperateError {
    /// What the error means for whoever must act on it.
    pub fn disposition(&self) -> Disposition {
        match self {
            Self::Journal(error) => error.disposition(),
            Self::Fork(error) => error.disposition(),
            Self::NotFound { .. } | Self::NoEvent { .. } | Self::NoSchedule(_) => Disposition::NotFound,
            Self::Ended { .. } | Self::Live { .. } | Self::Queued { .. } | Self::NotFinished { .. } => {
                Disposition::Conflict
            }
            Self::Refused(_) => Disposition::Refused,
        }
    }

    /// The error as a document.
    pub fn document(&self) -> Failure {
        Failure { error: self.to_string(), disposition: self.disposition() }
    }
}

fn not_found(journal: &Journal, id: &str) -> OperateError {
    OperateError::NotFound { id: id.to_string(), journal: journal.location().to_string() }
}

/// A page of the workflows `filter` selects (`filter.limit` of them at
/// most), newest first, with the cursor of the next page.
pub async fn list(journal: &Journal, filter: &WorkflowFilter) -> Result<WorkflowList, OperateError> {
    let limit = filter.limit as usize;
    // One more than the page, to know whether there is a next one.
    let wider = WorkflowFilter { limit: filter.limit.saturating_add(1), ..filter.clone() };
    let mut workflows = journal.list_workflows(&wider).await?;
    let more = workflows.len() > limit;
    workflows.truncate(limit);
    let next = if more { workflows.last().map(cursor) } else { None };
    Ok(WorkflowList { workflows, next })
}

/// The keyset cursor after `workflow`: its creation time and id.
fn cursor(workflow: &WorkflowRecord) -> String {
    format!("{}|{}", workflow.created_at.rfc3339(), workflow.id)
}

/// Reads one end of a time range: an RFC 3339 time, or a duration meaning that long before now
/// (`1h`), so a list can be bounded both ways (`since`, `until`).
pub fn parse_point(name: &str, text: &str) -> Result<Timestamp, String> {
    if let Ok(at) = Timestamp::parse_rfc3339(text.trim()) {
        return Ok(at);
    }
    let ago = crate::config::parse_duration(text)
        .map_err(|_| format!("{name}: {text:?} is neither a duration (\"1h\": that long ago) nor an RFC 3339 time"))?;
    Ok(Timestamp::now().minus(ago))
}

/// Reads a cursor of [`list`]'s `next`.
pub fn parse_cursor(cursor: &str) -> Result<(Timestamp, String), String> {
    let (time, id) = cursor.split_once('|').ok_or("after: not a cursor from a previous page's `next`")?;
    Ok((Timestamp::parse_rfc3339(time)?, id.to_string()))
}

/// A workflow with its calls, every attempt and its events.
pub async fn show(journal: &Journal, id: &str) -> Result<WorkflowHistory, OperateError> {
    journal.history(id).await?.ok_or_else(|| not_found(journal, id))
}

/// Where a workflow stands, waiting up to `wait` for it to end: woken by
/// its finish's announcement on PostgreSQL, polling as well.
pub async fn result(journal: &Journal, id: &str, wait: Duration) -> Result<WorkflowResult, OperateError> {
    let started = Instant::now();
    let mut end: Option<crate::journal::EndWatch> = None;
    loop {
        let workflow = journal.workflow(id).await?.ok_or_else(|| not_found(journal, id))?;
        if workflow.status.is_final() || started.elapsed() >= wait {
            return Ok(WorkflowResult::of(&workflow));
        }
        match &mut end {
            Some(end) => end.notice_or(POLL.min(wait.saturating_sub(started.elapsed()))).await,
            // Watched from now on; the row is read again after, so an end in between is not missed.
            None => end = Some(journal.watch_end(id).await),
        }
    }
}

/// Cancels a workflow wherever it is; with `wait`, waits up to that long for it to end.
pub async fn cancel(journal: &Journal, id: &str, wait: Duration) -> Result<CancelReceipt, OperateError> {
    let (cancel, executor) = match journal.request_cancel(id).await? {
        CancelOutcome::Unknown => return Err(not_found(journal, id)),
        CancelOutcome::Finished(status) => {
            return Err(OperateError::Ended { id: id.into(), status, then: "there is nothing to cancel" });
        }
        CancelOutcome::Cancelled => (CancelKind::Done, None),
        CancelOutcome::Requested { executor } => (CancelKind::Requested, Some(executor)),
    };
    let mut status = (cancel == CancelKind::Done).then_some(WorkflowStatus::Cancelled);
    let started = Instant::now();
    while status.is_none() && started.elapsed() < wait {
        match journal.workflow(id).await? {
            Some(workflow) if workflow.status.is_final() => status = Some(workflow.status),
            _ => tokio::time::sleep(POLL).await,
        }
    }
    Ok(CancelReceipt { id: id.into(), cancel, executor, status })
}

/// Hands a workflow nobody runs (interrupted, or dead) back to a queue
/// (`queue`, else its own, else the default) for a worker to resume from its journal.
pub async fn requeue(journal: &Journal, id: &str, queue: Option<&str>) -> Result<Requeued, OperateError> {
    if let Some(queue) = queue {
        crate::config::check_queue_name(queue).map_err(OperateError::Refused)?;
    }
    match journal.requeue_workflow(id, queue).await? {
        JournalRequeued::Enqueued { queue } => Ok(Requeued { id: id.into(), status: WorkflowStatus::Enqueued, queue }),
        JournalRequeued::Unknown => Err(not_found(journal, id)),
        JournalRequeued::Live { executor } => Err(OperateError::Live { id: id.into(), executor }),
        JournalRequeued::Not(status) if status.is_final() => {
            Err(OperateError::Ended { id: id.into(), status, then: "fork it to run it again" })
        }
        JournalRequeued::Not(status) => Err(OperateError::Queued { id: id.into(), status }),
    }
}

/// Forks workflow `id` from step call `from_step` into `new_id` (a UUIDv7
/// if `None`), onto `queue` (else its original's, else none: `host resume` runs it).
pub async fn fork(
    journal: &Journal,
    id: &str,
    from_step: i64,
    new_id: Option<String>,
    queue: Option<&str>,
) -> Result<ForkReceipt, OperateError> {
    if let Some(queue) = queue {
        crate::config::check_queue_name(queue).map_err(OperateError::Refused)?;
    }
    let forked = crate::run::fork(journal, id, from_step, new_id, queue).await?;
    let row = journal.workflow(&forked).await?.ok_or_else(|| not_found(journal, &forked))?;
    Ok(ForkReceipt { id: forked, forked_from: id.into(), from_step, queue: row.queue, status: row.status })
}

/// Deletes a finished workflow with all its rows.
pub async fn delete(journal: &Journal, id: &str) -> Result<(), OperateError> {
    match journal.delete_workflow(id).await? {
        Deleted::Deleted => Ok(()),
        Deleted::NotFinished(status) => Err(OperateError::NotFinished { id: id.into(), status }),
        Deleted::Unknown => Err(not_found(journal, id)),
    }
}

/// Deletes every workflow that finished more than `finished_before` ago.
pub async fn prune(journal: &Journal, finished_before: Duration) -> Result<Pruned, OperateError> {
    let before = Timestamp::now().minus(finished_before);
    let deleted = journal.prune_workflows(before).await?;
    Ok(Pruned { deleted, finished_before: before })
}

/// The queues with work or limits.
pub async fn queues(journal: &Journal) -> Result<QueueList, OperateError> {
    Ok(QueueList { queues: journal.queues().await? })
}

/// The worker processes.
pub async fn workers(journal: &Journal) -> Result<WorkerList, OperateError> {
    Ok(WorkerList { workers: journal.workers().await? })
}

/// Who sends a message, and how a repeat is recognized.
#[derive(Debug, Clone, Default)]
pub struct Sender {
    /// What the sender calls itself (`host`, `api`, a service's name).
    pub name: String,
    /// A repeated key (per recipient) is accepted once.
    pub idempotency_key: Option<String>,
}

/// Sends `value` (JSON text) to workflow `id` on `topic`.
pub async fn send(
    journal: &Journal,
    id: &str,
    topic: &str,
    value: &str,
    sender: &Sender,
) -> Result<SendReceipt, OperateError> {
    if let Err(error) = serde_json::from_str::<serde::de::IgnoredAny>(value) {
        return Err(OperateError::Refused(format!(
            r#"the value is not JSON text ({error}); send e.g. '{{"approved": true}}', '"yes"' or 42"#
        )));
    }
    if topic.is_empty() {
        return Err(OperateError::Refused("the topic is empty: name the topic the workflow's recv waits on".into()));
    }
    let message = NewMessage {
        workflow_id: id.to_string(),
        topic: topic.to_string(),
        value: value.to_string(),
        sender: sender.name.clone(),
        idempotency_key: sender.idempotency_key.clone(),
    };
    let receipt = |message, duplicate| SendReceipt { id: id.into(), topic: topic.into(), message, duplicate };
    match journal.send_message(&message, None, |_| (String::new(), serde_json::Value::Null)).await? {
        Sent::Delivered { id } => Ok(receipt(id, false)),
        Sent::Duplicate { id } => Ok(receipt(id, true)),
        Sent::Unknown | Sent::Recorded { .. } => Err(not_found(journal, id)),
        Sent::Ended { status } => Err(OperateError::Ended { id: id.into(), status, then: "nobody will receive it" }),
    }
}

/// The value workflow `id` published under `key`, waiting up to `wait` for
/// it; `None` if it has not published one yet (it still runs).
pub async fn event(journal: &Journal, id: &str, key: &str, wait: Duration) -> Result<Option<EventValue>, OperateError> {
    let started = Instant::now();
    loop {
        let workflow = journal.workflow(id).await?.ok_or_else(|| not_found(journal, id))?;
        if let Some(event) = journal.event(id, key).await? {
            return Ok(Some(EventValue {
                id: id.into(),
                key: event.key,
                value: serde_json::from_str(&event.value).unwrap_or(serde_json::Value::Null),
                value_text: event.value,
                set_at: event.set_at,
                status: workflow.status,
            }));
        }
        if workflow.status.is_final() {
            return Err(OperateError::NoEvent { id: id.into(), key: key.into(), status: workflow.status });
        }
        if started.elapsed() >= wait {
            return Ok(None);
        }
        tokio::time::sleep(POLL.min(wait.saturating_sub(started.elapsed()))).await;
    }
}

/// The schedules.
pub async fn schedules(journal: &Journal) -> Result<ScheduleList, OperateError> {
    Ok(ScheduleList { schedules: journal.schedules().await? })
}

/// Pauses schedule `name` (it fires nothing) or resumes it (from its next tick after now).
pub async fn pause_schedule(journal: &Journal, name: &str, paused: bool) -> Result<ScheduleList, OperateError> {
    let schedule = journal.schedule(name).await?.ok_or_else(|| OperateError::NoSchedule(name.into()))?;
    let next = if paused {
        None
    } else {
        let cron =
            crate::config::CronSchedule::parse(&schedule.cron, &schedule.timezone).map_err(OperateError::Refused)?;
        cron.next_after(Timestamp::now())
    };
    if !journal.pause_schedule(name, paused, next).await? {
        return Err(OperateError::NoSchedule(name.into()));
    }
    let schedule = journal.schedule(name).await?.ok_or_else(|| OperateError::NoSchedule(name.into()))?;
    Ok(ScheduleList { schedules: vec![schedule] })
}

/// Deletes schedule `name`; the workflows it started stay.
pub async fn delete_schedule(journal: &Journal, name: &str) -> Result<(), OperateError> {
    if journal.delete_schedule(name).await? { Ok(()) } else { Err(OperateError::NoSchedule(name.into())) }
}
