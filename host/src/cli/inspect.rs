//! Commands over the journal that run nothing: `list`, `show` (and
//! `--follow`), `result` (and `--wait`), `cancel`. They never create a
//! journal or change its schema.

use std::collections::BTreeSet;
use std::time::Duration;

use clap::Args;
use serde_json::json;
use stepbox::journal::{Journal, Timestamp, WorkflowFilter, WorkflowHistory, WorkflowStatus};
use stepbox::operate::{self, CancelKind, OperateError, WorkflowResult};

use crate::exit::{self, fail};
use crate::output::{self, Format};
use crate::report;

/// How often `--follow` looks at the journal.
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
    /// Only workflows created at or after this: a duration before now (1h) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", value_parser = |text: &str| operate::parse_point("--since", text))]
    since: Option<Timestamp>,
    /// Only workflows created before this: a duration before now (30m) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", value_parser = |text: &str| operate::parse_point("--until", text))]
    until: Option<Timestamp>,
    /// At most this many.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    limit: u32,
}

/// Opens the journal for reading; prints why not.
async fn open(journal: &str) -> Result<Journal, u8> {
    Journal::open_existing(journal).await.map_err(|error| fail(&error))
}

/// `host list`.
pub async fn list(args: &ListArgs, journal: &str, format: Format) -> u8 {
    let journal = match open(journal).await {
        Ok(journal) => journal,
        Err(code) => return code,
    };
    let filter = WorkflowFilter {
        status: args.status,
        name: args.name.clone(),
        queue: args.queue.clone(),
        id_prefix: args.id_prefix.clone(),
        created_after: args.since,
        created_before: args.until,
        limit: args.limit,
        ..WorkflowFilter::default()
    };
    match operate::list(&journal, &filter).await {
        Ok(page) => {
            match format {
                Format::Json => output::json(&page),
                Format::Text => output::print(&report::workflow_list(&page.workflows)),
            }
            0
        }
        Err(error) => fail(&error),
    }
}

/// Reads a workflow's whole history; `Err(code)` with the error printed.
async fn history(journal: &Journal, id: &str) -> Result<WorkflowHistory, u8> {
    operate::show(journal, id).await.map_err(|error| fail(&error))
}

/// `host show`, and with `--follow`, every attempt as it happens until the workflow ends.
pub async fn show(id: &str, follow: bool, journal: &str, format: Format) -> u8 {
    let journal = match open(journal).await {
        Ok(journal) => journal,
        Err(code) => return code,
    };
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
    let journal = match open(journal).await {
        Ok(journal) => journal,
        Err(code) => return code,
    };
    // `--wait` with no duration waits for as long as it takes.
    let wait = wait.map_or(Duration::ZERO, |wait| if wait.is_zero() { Duration::MAX } else { wait });
    match operate::result(&journal, id, wait).await {
        Ok(document) => print_result(&document, format),
        Err(error) => fail(&error),
    }
}

fn print_result(document: &WorkflowResult, format: Format) -> u8 {
    let id = &document.id;
    let code = match document.status {
        WorkflowStatus::Succeeded => 0,
        status if status.is_final() => exit::FAILED,
        _ => exit::NOT_FINISHED,
    };
    if format == Format::Json {
        output::json(document);
        return code;
    }
    match document.status {
        WorkflowStatus::Succeeded => output::line(document.output_wave.as_deref().unwrap_or_default()),
        status if status.is_final() => {
            output::error(&format!("workflow {id} {status}: {}", document.error.as_deref().unwrap_or_default()));
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
    let journal = match open(journal).await {
        Ok(journal) => journal,
        Err(code) => return code,
    };
    let receipt = match operate::cancel(&journal, id, wait.unwrap_or(Duration::ZERO)).await {
        Ok(receipt) => receipt,
        // Nothing to cancel: the workflow ended badly or well, as `host result` would say.
        Err(error @ OperateError::Ended { .. }) => {
            output::error(&error.to_string());
            return exit::FAILED;
        }
        Err(error) => return fail(&error),
    };
    match format {
        Format::Json => output::json(&receipt),
        Format::Text => {
            match (&receipt.cancel, &receipt.executor) {
                (CancelKind::Requested, Some(executor)) => {
                    output::line(&format!("workflow {id}: cancel requested from {executor}, which runs it"));
                }
                _ => output::line(&format!("workflow {id} cancelled")),
            }
            if let Some(status) = receipt.status.filter(|_| receipt.cancel == CancelKind::Requested) {
                output::line(&format!("workflow {id} ended: {status}"));
            }
        }
    }
    if wait.is_some() && receipt.status.is_none() { exit::NOT_FINISHED } else { 0 }
}
