//! Commands over the journal that run nothing: `list`, `show` (and
//! `--follow`), `result` (and `--wait`), `cancel`. They never create a
//! journal or change its schema.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use stepbox::config::parse_duration;
use stepbox::journal::{
    CancelOutcome, Journal, Timestamp, WorkflowFilter, WorkflowHistory, WorkflowRecord, WorkflowStatus,
};

use crate::output::{self, Format};
use crate::{exit, report};

/// How often `--follow` and `--wait` look at the journal.
const POLL: Duration = Duration::from_millis(200);

/// Which workflows `host list` shows.
#[derive(Args)]
pub struct ListArgs {
    /// Only workflows with this status: enqueued, delayed, running, succeeded, failed, cancelled, timed-out, dead.
    #[arg(long, value_parser = crate::parse_status)]
    status: Option<WorkflowStatus>,
    /// Only workflows of this name (the workflow component's file name without .wasm).
    #[arg(long)]
    name: Option<String>,
    /// Only workflows submitted to this queue.
    #[arg(long)]
    queue: Option<String>,
    /// Only workflows whose id starts with this.
    #[arg(long, value_name = "PREFIX")]
    id_prefix: Option<String>,
    /// Only workflows started within this long before now (e.g. 1h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    since: Option<Duration>,
    /// At most this many.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    limit: u32,
}

/// Opens the journal for reading; prints why not.
async fn open(journal: &str) -> Option<Journal> {
    match Journal::open_existing(journal).await {
        Ok(journal) => Some(journal),
        Err(error) => {
            output::error(&error.to_string());
            None
        }
    }
}

/// `host list`.
pub async fn list(args: &ListArgs, journal: &str, format: Format) -> u8 {
    let Some(journal) = open(journal).await else { return exit::USAGE };
    let filter = WorkflowFilter {
        status: args.status,
        name: args.name.clone(),
        queue: args.queue.clone(),
        id_prefix: args.id_prefix.clone(),
        created_after: args.since.map(|since| Timestamp::now().minus(since)),
        limit: args.limit,
        ..WorkflowFilter::default()
    };
    match journal.list_workflows(&filter).await {
        Ok(workflows) => {
            match format {
                Format::Json => output::json(&workflows),
                Format::Text => output::print(&report::workflow_list(&workflows)),
            }
            0
        }
        Err(error) => {
            output::error(&error.to_string());
            exit::USAGE
        }
    }
}

/// Reads a workflow's whole history; `Err(code)` with the error printed.
async fn history(journal: &Journal, id: &str) -> Result<WorkflowHistory, u8> {
    match journal.history(id).await {
        Ok(Some(history)) => Ok(history),
        Ok(None) => {
            output::error(&format!("no workflow {id} in the journal {}", journal.location()));
            Err(exit::USAGE)
        }
        Err(error) => {
            output::error(&error.to_string());
            Err(exit::RESUMABLE)
        }
    }
}

/// `host show`, and with `--follow`, every attempt as it happens until the workflow ends.
pub async fn show(id: &str, follow: bool, journal: &str, format: Format) -> u8 {
    let Some(journal) = open(journal).await else { return exit::USAGE };
    let mut shown = match history(&journal, id).await {
        Ok(history) => history,
        Err(code) => return code,
    };
    match format {
        Format::Json if !follow => output::json(&shown),
        Format::Json => {
            output::line(&serde_json::to_string(&json!({"event": "workflow", "workflow": shown})).unwrap_or_default())
        }
        Format::Text => output::print(&report::workflow_detail(&shown)),
    }
    if !follow {
        return 0;
    }
    let mut seen: BTreeSet<(i64, i32, bool)> = shown
        .calls
        .iter()
        .flat_map(|call| call.attempts.iter().map(|attempt| (attempt.seq, attempt.attempt, attempt.outcome.is_some())))
        .collect();
    while !shown.workflow.status.is_final() {
        tokio::time::sleep(POLL).await;
        shown = match history(&journal, id).await {
            Ok(history) => history,
            Err(code) => return code,
        };
        for call in &shown.calls {
            for attempt in &call.attempts {
                if seen.insert((attempt.seq, attempt.attempt, attempt.outcome.is_some())) {
                    match format {
                        Format::Json => output::line(
                            &serde_json::to_string(
                                &json!({"event": "attempt", "step": call.call.step, "attempt": attempt}),
                            )
                            .unwrap_or_default(),
                        ),
                        Format::Text => output::line(&report::attempt_line(&call.call, attempt)),
                    }
                }
            }
        }
    }
    match format {
        Format::Json => output::line(
            &serde_json::to_string(&json!({"event": "finished", "workflow": shown.workflow})).unwrap_or_default(),
        ),
        Format::Text => output::line(&report::finished_line(&shown.workflow)),
    }
    0
}

/// `host result`: the bare value of a finished workflow; `--wait` blocks until it finishes.
pub async fn result(id: &str, wait: Option<Duration>, journal: &str, format: Format) -> u8 {
    let Some(journal) = open(journal).await else { return exit::USAGE };
    let started = Instant::now();
    let workflow = loop {
        let workflow = match journal.workflow(id).await {
            Ok(Some(workflow)) => workflow,
            Ok(None) => {
                output::error(&format!("no workflow {id} in the journal {}", journal.location()));
                return exit::USAGE;
            }
            Err(error) => {
                output::error(&error.to_string());
                return exit::RESUMABLE;
            }
        };
        let waited_enough = match wait {
            None => true,
            Some(limit) => !limit.is_zero() && started.elapsed() >= limit,
        };
        if workflow.status.is_final() || waited_enough {
            break workflow;
        }
        tokio::time::sleep(POLL).await;
    };
    print_result(&workflow, format)
}

fn print_result(workflow: &WorkflowRecord, format: Format) -> u8 {
    let id = &workflow.id;
    let code = match workflow.status {
        WorkflowStatus::Succeeded => 0,
        status if status.is_final() => exit::FAILED,
        _ => exit::NOT_FINISHED,
    };
    if format == Format::Json {
        output::json(&json!({
            "id": id,
            "status": workflow.status,
            "output": workflow.output_json,
            "output_wave": workflow.output,
            "error": workflow.error,
        }));
        return code;
    }
    match workflow.status {
        WorkflowStatus::Succeeded => output::line(workflow.output.as_deref().unwrap_or_default()),
        status if status.is_final() => {
            output::error(&format!("workflow {id} {status}: {}", workflow.error.as_deref().unwrap_or_default()));
        }
        WorkflowStatus::Running => output::error(&format!(
            "workflow {id} has not finished; `host result {id} --wait` waits for it, and `host resume {id}` \
             continues it if it was interrupted"
        )),
        status => output::error(&format!("workflow {id} is {status} and has not started; a worker runs it")),
    }
    code
}

/// `host cancel`.
pub async fn cancel(id: &str, wait: Option<Duration>, journal: &str, format: Format) -> u8 {
    let Some(journal) = open(journal).await else { return exit::USAGE };
    let outcome = match journal.request_cancel(id).await {
        Ok(outcome) => outcome,
        Err(error) => {
            output::error(&error.to_string());
            return exit::RESUMABLE;
        }
    };
    let message = match &outcome {
        CancelOutcome::Unknown => {
            output::error(&format!("no workflow {id} in the journal {}", journal.location()));
            return exit::USAGE;
        }
        CancelOutcome::Finished(status) => {
            output::error(&format!("workflow {id} already ended: {status}; there is nothing to cancel"));
            return exit::FAILED;
        }
        CancelOutcome::Cancelled => format!("workflow {id} cancelled"),
        CancelOutcome::Requested { executor } => {
            format!("workflow {id}: cancel requested from {executor}, which runs it")
        }
    };
    let mut status = if outcome == CancelOutcome::Cancelled { Some(WorkflowStatus::Cancelled) } else { None };
    if let (Some(limit), None) = (wait, status) {
        let started = Instant::now();
        while started.elapsed() < limit {
            match journal.workflow(id).await {
                Ok(Some(workflow)) if workflow.status.is_final() => {
                    status = Some(workflow.status);
                    break;
                }
                _ => tokio::time::sleep(POLL).await,
            }
        }
    }
    match format {
        Format::Json => output::json(&json!({"id": id, "requested": true, "status": status})),
        Format::Text => {
            output::line(&message);
            if let Some(status) = status.filter(|_| outcome != CancelOutcome::Cancelled) {
                output::line(&format!("workflow {id} ended: {status}"));
            }
        }
    }
    if wait.is_some() && status.is_none() { exit::NOT_FINISHED } else { 0 }
}
