//! The journal as people read it: `host list`, `host show` (a table or JSON).

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::journal::{AttemptRecord, StepCallRecord, WorkflowRecord, WorkflowStatus};

/// One line per workflow: id, status, entry, start, duration.
pub fn workflow_list(workflows: &[WorkflowRecord]) -> String {
    let rows: Vec<Vec<String>> = workflows
        .iter()
        .map(|w| {
            vec![
                w.id.clone(),
                w.status.as_str().to_string(),
                format!("{}{}", w.entry, w.input),
                time(w.created_at),
                workflow_span(w),
            ]
        })
        .collect();
    table(&["ID", "STATUS", "ENTRY", "STARTED", "DURATION"], &rows)
}

/// A workflow, its step calls and every attempt, as aligned tables.
pub fn workflow_detail(workflow: &WorkflowRecord, calls: &[StepCallRecord], attempts: &[AttemptRecord]) -> String {
    let mut out = format!(
        "workflow  {}\nstatus    {}\ncomponent {} (sha256 {})\nentry     {}{}\nstarted   {}\nduration  {}\nexecutor  {}\n",
        workflow.id,
        workflow.status.as_str(),
        workflow.component,
        workflow.component_digest.get(..12).unwrap_or(&workflow.component_digest),
        workflow.entry,
        workflow.input,
        time(workflow.created_at),
        workflow_span(workflow),
        workflow.executor,
    );
    if let Some(output) = &workflow.output {
        out.push_str(&format!("output    {output}\n"));
    }
    if let Some(error) = &workflow.error {
        out.push_str(&format!("error     {}\n", first_line(error)));
    }
    for call in calls {
        out.push_str(&format!(
            "\n#{} {}{}  {}  attempts {}/{}  {}\n",
            call.seq,
            call.step,
            call.input,
            call.status,
            call.attempts,
            call.max_attempts,
            span(call.started_at, call.finished_at)
        ));
        if let Some(output) = &call.output {
            out.push_str(&format!("   -> {}\n", truncate(output, 160)));
        }
        let rows: Vec<Vec<String>> = attempts
            .iter()
            .filter(|attempt| attempt.seq == call.seq)
            .map(|a| {
                vec![
                    a.attempt.to_string(),
                    time(a.started_at),
                    span(a.started_at, a.finished_at),
                    a.outcome.clone().unwrap_or_else(|| "running".into()),
                    a.kind.clone().unwrap_or_default(),
                    a.next_delay_ms.map(delay).unwrap_or_default(),
                    truncate(first_line(a.message.as_deref().unwrap_or_default()), 80),
                ]
            })
            .collect();
        let attempts_table =
            table(&["ATTEMPT", "STARTED", "DURATION", "OUTCOME", "KIND", "NEXT DELAY", "MESSAGE"], &rows);
        for line in attempts_table.lines() {
            out.push_str(&format!("   {line}\n"));
        }
    }
    out
}

/// The same as [`workflow_detail`], for programs.
pub fn workflow_json(workflow: &WorkflowRecord, calls: &[StepCallRecord], attempts: &[AttemptRecord]) -> Value {
    let calls: Vec<Value> = calls
        .iter()
        .map(|call| {
            let mut value = json!(call);
            let own: Vec<&AttemptRecord> = attempts.iter().filter(|a| a.seq == call.seq).collect();
            value["attempt_rows"] = json!(own);
            value
        })
        .collect();
    json!({
        "id": workflow.id,
        "status": workflow.status.as_str(),
        "component": workflow.component,
        "component_digest": workflow.component_digest,
        "entry": workflow.entry,
        "input": workflow.input,
        "output": workflow.output,
        "error": workflow.error,
        "executor": workflow.executor,
        "created_at": workflow.created_at,
        "updated_at": workflow.updated_at,
        "step_calls": calls,
    })
}

fn time(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

/// How long a finished workflow took; `-` while it runs.
fn workflow_span(workflow: &WorkflowRecord) -> String {
    let finished = (workflow.status != WorkflowStatus::Running).then_some(workflow.updated_at);
    span(workflow.created_at, finished)
}

fn span(from: i64, to: Option<i64>) -> String {
    to.map_or_else(|| "-".into(), |to| delay(to - from))
}

fn delay(ms: i64) -> String {
    humantime::format_duration(Duration::from_millis(u64::try_from(ms).unwrap_or(0))).to_string()
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

/// Left-aligned columns separated by two spaces.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let rows = vec![vec!["1".to_string(), "long value".to_string()], vec!["22".to_string(), "x".to_string()]];
        assert_eq!(table(&["A", "B"], &rows), "A   B\n1   long value\n22  x\n");
    }

    #[test]
    fn times_and_delays_read_like_humans_write_them() {
        assert_eq!(time(1_000), "1970-01-01T00:00:01.000Z");
        assert_eq!(delay(2_500), "2s 500ms");
        assert_eq!(span(10, None), "-");
        assert_eq!(truncate("abcdef", 3), "abc…");
    }
}
