//! The journal as people read it: `host list`, `host show` and `--follow`
//! lines, as tables that fit the terminal.

use std::time::Duration;

use comfy_table::{ContentArrangement, Table, presets};
use stepbox::journal::{
    AttemptRecord, QueueRecord, ScheduleRecord, StepCallRecord, Timestamp, WaitKind, WorkerRecord, WorkflowHistory,
    WorkflowRecord, WorkflowStatus,
};
use stepbox::run::WORKFLOW_CONTEXT;

/// A table with the given header, columns separated by two spaces, as wide as the terminal allows.
fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_style(presets::NOTHING).set_content_arrangement(ContentArrangement::Dynamic).set_header(header.to_vec());
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
}

/// Renders `table` with trailing spaces trimmed, ending with a newline.
fn render(table: &Table) -> String {
    table.lines().map(|line| format!("{}\n", line.trim_end())).collect()
}

/// One line per schedule: name, expression, zone, queue, ticks, catch-up, state.
pub fn schedule_list(schedules: &[ScheduleRecord]) -> String {
    let mut rows = table(&["NAME", "CRON", "TIMEZONE", "QUEUE", "NEXT TICK", "LAST TICK", "CATCH-UP", "STATE"]);
    for schedule in schedules {
        rows.add_row(vec![
            schedule.name.clone(),
            schedule.cron.clone(),
            schedule.timezone.clone(),
            schedule.queue.clone(),
            schedule.next_tick_at.rfc3339(),
            schedule.last_tick_at.map_or_else(|| "-".to_string(), Timestamp::rfc3339),
            schedule.catch_up.to_string(),
            if schedule.paused { "paused" } else { "active" }.to_string(),
        ]);
    }
    render(&rows)
}

/// One line per workflow: id, status, entry, start, duration.
pub fn workflow_list(workflows: &[WorkflowRecord]) -> String {
    let mut rows = table(&["ID", "STATUS", "ENTRY", "STARTED", "DURATION"]);
    for workflow in workflows {
        rows.add_row(vec![
            workflow.id.clone(),
            workflow.status.to_string(),
            format!("{}{}", workflow.entry, truncate(&workflow.input, 60)),
            workflow.created_at.rfc3339(),
            span(workflow.created_at, workflow.finished_at),
        ]);
    }
    render(&rows)
}

/// One line per queue: its limits and how many workflows wait and run.
pub fn queue_list(queues: &[QueueRecord]) -> String {
    let mut rows = table(&["QUEUE", "CONCURRENCY", "PER PARTITION", "RATE", "READY", "DELAYED", "WAITING", "RUNNING"]);
    let limit = |value: Option<i32>| value.map_or_else(|| "-".to_string(), |value| value.to_string());
    for queue in queues {
        let limits = &queue.limits;
        let rate = match (limits.rate_limit, limits.rate_period_ms) {
            (Some(starts), Some(period)) => {
                let period = Duration::from_millis(u64::try_from(period).unwrap_or(0));
                format!("{starts}/{}", humantime::format_duration(period))
            }
            _ => "-".into(),
        };
        rows.add_row(vec![
            limits.name.clone(),
            limit(limits.concurrency),
            limit(limits.partition_concurrency),
            rate,
            queue.ready.to_string(),
            queue.delayed.to_string(),
            queue.waiting.to_string(),
            queue.running.to_string(),
        ]);
    }
    render(&rows)
}

/// One line per worker: where it runs, its queues, what it runs, when it was last seen.
pub fn worker_list(workers: &[WorkerRecord], now: Timestamp) -> String {
    let mut rows = table(&["WORKER", "STATE", "QUEUES", "RUNNING", "CONCURRENCY", "STARTED", "LAST SEEN"]);
    for worker in workers {
        rows.add_row(vec![
            worker.id.clone(),
            worker.state.to_string(),
            worker.queue_names(),
            worker.running.to_string(),
            worker.concurrency.to_string(),
            worker.started_at.rfc3339(),
            format!("{} ago", humantime::format_duration(round_seconds(now.since(worker.last_seen_at)))),
        ]);
    }
    render(&rows)
}

fn round_seconds(duration: Duration) -> Duration {
    Duration::from_secs(duration.as_secs())
}

/// A workflow, its events, its step calls and every attempt.
pub fn workflow_detail(history: &WorkflowHistory) -> String {
    let workflow = &history.workflow;
    let mut out = String::new();
    let mut field = |name: &str, value: String| out.push_str(&format!("{name:<10}{value}\n"));
    field("workflow", workflow.id.clone());
    field("status", workflow.status.to_string());
    field("component", format!("{} (sha256 {})", workflow.component, short_digest(&workflow.component_digest)));
    field("entry", format!("{}{}", workflow.entry, workflow.input));
    field("started", workflow.created_at.rfc3339());
    field("duration", span(workflow.created_at, workflow.finished_at));
    if let Some(queue) = &workflow.queue {
        field("queue", format!("{queue} (priority {})", workflow.priority));
    }
    if let Some(executor) = &workflow.executor {
        field("executor", executor.clone());
    }
    if let (Some(schedule), Some(tick)) = (&workflow.schedule, workflow.scheduled_at) {
        field("schedule", format!("{schedule}, tick {}", tick.rfc3339()));
    }
    if let Some(parent) = &workflow.parent_id {
        let detached = if workflow.parent_detached { " (detached)" } else { "" };
        field("parent", format!("{parent}{detached}"));
    }
    if workflow.status == WorkflowStatus::Waiting {
        let what = workflow.waiting_for.unwrap_or(WaitKind::Sleep).describe(workflow.wait_topic.as_deref());
        let until = workflow.run_at.map(|until| format!(" (until {})", until.rfc3339())).unwrap_or_default();
        field("waiting", format!("for {what}{until}; its worker's slot is free"));
    }
    if let Some(output) = &workflow.output {
        field("output", output.clone());
    }
    if let Some(error) = &workflow.error {
        field("error", first_line(error).to_string());
    }
    for event in &history.events {
        field("event", format!("{} {} {}", event.at.rfc3339(), event.kind, event.detail));
    }
    for event in &history.published {
        field(
            "published",
            format!(
                "{} = {} (call #{}, {})",
                event.key,
                truncate(&event.value, 120),
                event.seq,
                event.set_at.rfc3339()
            ),
        );
    }
    for message in history.messages.iter().filter(|message| message.received_seq.is_none()) {
        field("unread", format!("{} from {}: {}", message.topic, message.sender, truncate(&message.value, 120)));
    }
    for child in &history.children {
        let detached = if child.parent_detached { ", detached" } else { "" };
        field("child", format!("{} {} ({}{detached})", child.id, child.status, child.entry));
    }
    for call in &history.calls {
        let record = &call.call;
        if let Some(operation) = record.step.strip_prefix(WORKFLOW_CONTEXT).and_then(|rest| rest.strip_prefix('.')) {
            out.push_str(&format!(
                "\n#{} {operation}{}  {}  {}\n",
                record.seq,
                record.input,
                record.status,
                span(record.started_at, record.finished_at)
            ));
            if let Some(output) = &record.output {
                out.push_str(&format!("   -> {}\n", truncate(output, 160)));
            }
            continue;
        }
        out.push_str(&format!(
            "\n#{} {}{}  {}  attempts {}/{}  {}\n",
            record.seq,
            record.step,
            record.input,
            record.status,
            call.attempts.len(),
            record.max_attempts,
            span(record.started_at, record.finished_at)
        ));
        if let Some(output) = &record.output {
            out.push_str(&format!("   -> {}\n", truncate(output, 160)));
        }
        let mut rows = table(&["ATTEMPT", "STARTED", "DURATION", "OUTCOME", "KIND", "NEXT IN", "MESSAGE"]);
        for attempt in &call.attempts {
            rows.add_row(vec![
                attempt.attempt.to_string(),
                attempt.started_at.rfc3339(),
                attempt_duration(attempt),
                attempt.outcome.map_or_else(|| "running".to_string(), |outcome| outcome.to_string()),
                attempt.kind.map(|kind| kind.to_string()).unwrap_or_default(),
                next_in(attempt),
                truncate(first_line(attempt.message.as_deref().unwrap_or_default()), 80),
            ]);
        }
        for line in render(&rows).lines() {
            out.push_str(&format!("   {line}\n"));
        }
    }
    out
}

/// One `--follow` line for an attempt that started or ended.
pub fn attempt_line(call: &StepCallRecord, attempt: &AttemptRecord) -> String {
    let what = match (attempt.outcome, attempt.kind) {
        (None, _) => "started".to_string(),
        (Some(outcome), Some(kind)) => format!("{outcome} ({kind}) after {}", attempt_duration(attempt)),
        (Some(outcome), None) => format!("{outcome} after {}", attempt_duration(attempt)),
    };
    let next = match next_in(attempt) {
        next if next.is_empty() => String::new(),
        next => format!("; next attempt in {next}"),
    };
    let message = attempt.message.as_deref().map(|m| format!(": {}", truncate(first_line(m), 100))).unwrap_or_default();
    format!("#{} {} attempt {} {what}{next}{message}", call.seq, call.step, attempt.attempt)
}

/// The last `--follow` line.
pub fn finished_line(workflow: &WorkflowRecord) -> String {
    match (&workflow.output, &workflow.error) {
        (Some(output), _) => format!("workflow {} {}: {output}", workflow.id, workflow.status),
        (None, Some(error)) => format!("workflow {} {}: {}", workflow.id, workflow.status, first_line(error)),
        (None, None) => format!("workflow {} {}", workflow.id, workflow.status),
    }
}

fn attempt_duration(attempt: &AttemptRecord) -> String {
    match (attempt.outcome, attempt.finished_at) {
        (Some(_), None) => "unknown".into(),
        (_, finished) => span(attempt.started_at, finished),
    }
}

/// The wait before the next attempt, from this one's end (or its retry time).
fn next_in(attempt: &AttemptRecord) -> String {
    match (attempt.retry_at, attempt.finished_at) {
        (Some(retry_at), Some(finished)) => delay(retry_at.since(finished)),
        (Some(retry_at), None) => format!("at {}", retry_at.rfc3339()),
        _ => String::new(),
    }
}

fn short_digest(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// How long from `from` to `to`; `-` while not ended.
fn span(from: Timestamp, to: Option<Timestamp>) -> String {
    to.map_or_else(|| "-".into(), |to| delay(to.since(from)))
}

fn delay(duration: Duration) -> String {
    humantime::format_duration(Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)))
        .to_string()
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_trim() {
        let mut rows = table(&["A", "B"]);
        rows.add_row(vec!["1", "long value"]);
        rows.add_row(vec!["22", "x"]);
        assert_eq!(render(&rows), "A   B\n1   long value\n22  x\n");
    }

    #[test]
    fn durations_read_like_humans_write_them() {
        assert_eq!(delay(Duration::from_millis(2500)), "2s 500ms");
        assert_eq!(span(Timestamp::from_millis(10), None), "-");
        assert_eq!(truncate("abcdef", 3), "abc…");
    }
}
