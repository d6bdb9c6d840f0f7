//! A workflow's page: its fields and actions, its events, published values
//! and messages, then its step calls, each with a timeline of its attempts
//! drawn to scale (the backoff gaps visible) and their table with log lines.
//! Pages of calls and a window of attempts per call keep a workflow of
//! 1,000 calls and 10,000 attempts one page a browser renders at once.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use maud::{Markup, html};
use serde::Deserialize;

use super::Shared;
use super::pages::{
    PageResult, clock, copy_button, delay, duration, encode, entry, error_page, journal_error, parsed, respond,
    resumable, segment, status_badge,
};
use crate::journal::{
    AttemptRecord, CallHistory, CallStatus, StepCallRecord, Timestamp, WaitKind, WorkflowHistory, WorkflowRecord,
    WorkflowStatus,
};
use crate::run::WORKFLOW_CONTEXT;

/// Step calls on one page of a workflow.
const CALLS_PER_PAGE: usize = 100;
/// A call's attempts shown in full: its first few and its last ones (the API has every one).
const FIRST_ATTEMPTS: usize = 5;
const LAST_ATTEMPTS: usize = 20;
/// The timeline's width in its own units (the SVG scales to the page).
const TIMELINE_WIDTH: f64 = 1000.0;

/// The page's query: a fragment for the live refresh, and which page of calls.
#[derive(Debug, Deserialize)]
pub(super) struct HistoryQuery {
    fragment: Option<u8>,
    /// The first call shown (0-based index into the calls).
    calls: Option<usize>,
}

pub(super) async fn workflow(
    State(state): State<Shared>,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> PageResult {
    let query = parsed(query)?;
    let history = state.journal.history(&id).await.map_err(|error| journal_error(&error))?;
    let Some(history) = history else {
        return Err(error_page(StatusCode::NOT_FOUND, &format!("No workflow {id} in the journal.")));
    };
    let before = html! { h1 { "Workflow " span.mono { (id) } " " (copy_button(&id, "Copy the id")) } };
    let live = detail(&history, &state.csrf, query.calls.unwrap_or(0));
    Ok(respond(&id, &format!("/events?workflow={}", encode(&id)), query.fragment.is_some(), before, live))
}

/// The live part of a workflow's page: its fields, then a page of its calls from `first`.
fn detail(history: &WorkflowHistory, csrf: &str, first: usize) -> Markup {
    let workflow = &history.workflow;
    let now = Timestamp::now();
    let alive = !resumable(workflow, now);
    let total = history.calls.len();
    let first = first.min(total.saturating_sub(1) / CALLS_PER_PAGE * CALLS_PER_PAGE);
    let shown = &history.calls[first.min(total)..(first + CALLS_PER_PAGE).min(total)];
    html! {
        dl.fields {
            dt { "Status" } dd { (status_badge(workflow, now)) }
            dt { "Workflow" } dd.mono { (workflow.component) " (sha256 " (workflow.component_digest.get(..12).unwrap_or_default()) ")" }
            dt { "Entry" } dd.mono { (entry(workflow)) }
            @if let Some(queue) = &workflow.queue { dt { "Queue" } dd { (queue) " (priority " (workflow.priority) ")" } }
            dt { "Started" } dd { (clock(workflow.created_at)) }
            dt { "Duration" } dd { (duration(workflow, now)) }
            @if let Some(executor) = &workflow.executor { dt { "Executor" } dd.mono { (executor) } }
            @if workflow.status == WorkflowStatus::Waiting { dt { "Waiting" } dd { (waiting(workflow)) } }
            @if let (Some(schedule), Some(tick)) = (&workflow.schedule, workflow.scheduled_at) {
                dt { "Schedule" } dd { a href="/schedules" { (schedule) } ", tick " (clock(tick)) }
            }
            @if let Some(parent) = &workflow.parent_id {
                dt { "Parent" } dd.mono {
                    a href=(format!("/workflows/{}", segment(parent))) { (parent) }
                    @if workflow.parent_detached { " (detached)" }
                }
            }
            @if let Some(output) = &workflow.output { dt { "Output" } dd { (value_block(output)) } }
            @if let Some(error) = &workflow.error { dt { "Error" } dd { pre.error { (error) } } }
        }
        (actions(history, csrf, now))
        @if !history.events.is_empty() {
            h2 { "Events" }
            table.events {
                thead { tr { th { "At" } th { "Event" } th { "Detail" } th { "By" } } }
                tbody { @for event in &history.events {
                    tr {
                        td { (clock(event.at)) } td.mono { (event.kind) }
                        td { @if !event.detail.is_null() { (value_block(&event.detail.to_string())) } }
                        td.mono { (event.executor.clone().unwrap_or_default()) }
                    }
                } }
            }
        }
        @if !history.children.is_empty() {
            h2 { "Child workflows" }
            table.children {
                thead { tr { th { "Workflow" } th { "Entry" } th { "Status" } th { "Started" } th { "Finished" } } }
                tbody { @for child in &history.children {
                    tr {
                        td.mono { a href=(format!("/workflows/{}", segment(&child.id))) { (child.id) } }
                        td.mono { (child.entry) @if child.parent_detached { " (detached)" } }
                        td { span class=(format!("status {}", child.status)) { (child.status) } }
                        td { (clock(child.created_at)) }
                        td { @if let Some(finished) = child.finished_at { (clock(finished)) } }
                    }
                } }
            }
        }
        @if !history.published.is_empty() {
            h2 { "Published events" }
            table {
                thead { tr { th { "Key" } th { "Value" } th { "Set by call" } th { "At" } } }
                tbody { @for event in &history.published {
                    tr { td.mono { (event.key) } td { (value_block(&event.value)) } td { "#" (event.seq) } td { (clock(event.set_at)) } }
                } }
            }
        }
        @if !history.messages.is_empty() {
            h2 { "Messages" }
            table {
                thead { tr { th { "#" } th { "Topic" } th { "From" } th { "Value" } th { "Sent" } th { "Received by" } } }
                tbody { @for message in &history.messages {
                    tr {
                        td { (message.id) } td.mono { (message.topic) } td.mono { (message.sender) }
                        td { (value_block(&message.value)) } td { (clock(message.sent_at)) }
                        td { @match message.received_seq { Some(seq) => { "call #" (seq) } None => { span.empty { "not yet" } } } }
                    }
                } }
            }
        }
        h2 { "Step calls" @if total > CALLS_PER_PAGE { " " span.empty { (first + 1) "–" (first + shown.len()) " of " (total) } } }
        @if history.calls.is_empty() { p.empty { "No step called yet." } }
        @if let Some(overview) = overview(shown, now) { (overview) }
        (pager(&workflow.id, first, total))
        @for call in shown { (call_section(call, &workflow.id, now, alive)) }
        (pager(&workflow.id, first, total))
    }
}

/// Cancel, resume and fork, as forms (they work without JavaScript).
fn actions(history: &WorkflowHistory, csrf: &str, now: Timestamp) -> Markup {
    let workflow = &history.workflow;
    html! {
        div.actions {
            @if !workflow.status.is_final() {
                form method="post" action=(format!("/workflows/{}/cancel", segment(&workflow.id))) {
                    input type="hidden" name="csrf" value=(csrf);
                    button.danger type="submit" { "Cancel" }
                }
            }
            @if resumable(workflow, now) {
                form method="post" action=(format!("/workflows/{}/resume", segment(&workflow.id))) {
                    input type="hidden" name="csrf" value=(csrf);
                    button type="submit" title="Hand it back to its queue; a worker resumes it from its journal" { "Resume" }
                }
            }
            form method="post" action=(format!("/workflows/{}/fork", segment(&workflow.id))) {
                input type="hidden" name="csrf" value=(csrf);
                label { "from step " input type="number" name="from_step" min="1" value=(fork_point(history)) required; }
                button type="submit" title="A new workflow: the calls before this step copied, the rest run again by a worker" { "Fork" }
            }
        }
    }
}

/// Links to the previous and next page of calls, when there is more than one.
fn pager(id: &str, first: usize, total: usize) -> Markup {
    let page = |from: usize| format!("/workflows/{}?calls={from}", segment(id));
    html! {
        @if total > CALLS_PER_PAGE {
            p.pager {
                @if first > 0 { a href=(page(first.saturating_sub(CALLS_PER_PAGE))) { "← earlier calls" } " " }
                @if first + CALLS_PER_PAGE < total { a href=(page(first + CALLS_PER_PAGE)) { "later calls →" } }
            }
        }
    }
}

/// One call: a workflow-context operation on one line, a step call with its timeline and attempts.
fn call_section(call: &CallHistory, id: &str, now: Timestamp, alive: bool) -> Markup {
    let record = &call.call;
    if let Some(operation) = record.step.strip_prefix(WORKFLOW_CONTEXT).and_then(|rest| rest.strip_prefix('.')) {
        return html! {
            section.call {
                h3 {
                    "#" (record.seq) " " span.mono { (operation) (record.input) }
                    " " span class=(format!("status {}", record.status)) { (record.status) }
                    " " (delay(record.finished_at.unwrap_or(now).since(record.started_at)))
                }
                @if let Some(output) = &record.output { (value_block(output)) }
            }
        };
    }
    let count = call.attempts.len();
    let hidden = count.saturating_sub(FIRST_ATTEMPTS + LAST_ATTEMPTS);
    let (head, tail) = if hidden > 0 {
        (&call.attempts[..FIRST_ATTEMPTS], &call.attempts[count - LAST_ATTEMPTS..])
    } else {
        (&call.attempts[..], &call.attempts[count..])
    };
    html! {
        section.call {
            h3 {
                "#" (record.seq) " " span.mono { (record.step) (record.input) }
                " " span class=(format!("status {}", record.status)) { (record.status) }
                " attempts " (count) "/" (record.max_attempts)
            }
            @if let Some(output) = &record.output { (value_block(output)) }
            @if call.attempts.len() > 1 { (timeline(call, now)) }
            table {
                thead { tr { th { "Attempt" } th { "Started" } th { "Duration" } th { "Outcome" } th { "Kind" } th { "Next attempt" } th { "Executor" } th { "Message and output" } } }
                tbody {
                    @for attempt in head { (attempt_row(attempt, now, alive)) }
                    @if hidden > 0 {
                        tr.elided { td colspan="8" { (hidden) " attempts not shown; the API has every one (" code { "GET /api/v1/workflows/" (segment(id)) } ")" } }
                    }
                    @for attempt in tail { (attempt_row(attempt, now, alive)) }
                }
            }
        }
    }
}

/// A retried call's attempts as bars on one time axis, from its first start to its last end (or the
/// next retry, or now): each bar's length is the attempt's duration, the gaps are the backoff.
/// Hovering a bar names it. At most the attempts the table shows are drawn.
fn timeline(call: &CallHistory, now: Timestamp) -> Markup {
    let attempts = &call.attempts;
    let start = attempts.iter().map(|attempt| attempt.started_at.millis()).min().unwrap_or_default();
    let end = attempts
        .iter()
        .flat_map(|attempt| {
            [attempt.finished_at.unwrap_or(now).millis(), attempt.retry_at.map_or(0, Timestamp::millis)]
        })
        .chain(call.call.finished_at.map(Timestamp::millis))
        .max()
        .unwrap_or(start);
    #[expect(clippy::cast_precision_loss, reason = "milliseconds of one call fit an f64's mantissa")]
    let span = (end - start).max(1) as f64;
    #[expect(clippy::cast_precision_loss, reason = "as above")]
    let at = |millis: i64| (millis - start) as f64 / span * TIMELINE_WIDTH;
    let count = attempts.len();
    let drawn = attempts.iter().enumerate().filter(|(index, _)| {
        *index < FIRST_ATTEMPTS || *index + LAST_ATTEMPTS >= count || count <= FIRST_ATTEMPTS + LAST_ATTEMPTS
    });
    html! {
        svg.timeline viewBox=(format!("0 0 {TIMELINE_WIDTH} 12")) preserveAspectRatio="none" role="img"
            aria-label=(format!("{count} attempts over {}", delay(std::time::Duration::from_millis(u64::try_from(end - start).unwrap_or(0))))) {
            @for (_, attempt) in drawn {
                @let x = at(attempt.started_at.millis());
                @let width = (at(attempt.finished_at.unwrap_or(now).millis()) - x).max(1.5);
                @let outcome = attempt.outcome.map_or_else(|| "running".to_string(), |outcome| outcome.to_string());
                rect class=(format!("bar {outcome}")) x=(format!("{x:.1}")) y="1" width=(format!("{width:.1}")) height="10"
                    data-attempt=(attempt.attempt) data-start=(attempt.started_at.millis())
                    data-end=(attempt.finished_at.map_or(now.millis(), Timestamp::millis)) {
                    title { "attempt " (attempt.attempt) ": " (outcome) ", " (delay(attempt.finished_at.unwrap_or(now).since(attempt.started_at))) }
                }
            }
        }
    }
}

/// Height of one call's row in [`overview`], in its own units (pixels at the SVG's natural size).
const OVERVIEW_ROW: usize = 6;

/// The page's step calls as bars on one time axis, one row each, from the
/// first call's start to the last one's end (or now): drawn when some ran
/// at the same time (`start-call`), so a fan-out is seen as one. Hovering a
/// bar names its call.
fn overview(calls: &[CallHistory], now: Timestamp) -> Option<Markup> {
    let steps: Vec<&StepCallRecord> =
        calls.iter().map(|call| &call.call).filter(|call| !call.step.starts_with(WORKFLOW_CONTEXT)).collect();
    let end_of = |call: &StepCallRecord| call.finished_at.unwrap_or(now).millis();
    let mut by_start: Vec<(i64, i64)> = steps.iter().map(|call| (call.started_at.millis(), end_of(call))).collect();
    by_start.sort_unstable();
    let overlap = by_start.windows(2).any(|pair| pair[1].0 < pair[0].1);
    if !overlap {
        return None;
    }
    let start = by_start.first().map_or(0, |(start, _)| *start);
    let end = by_start.iter().map(|(_, end)| *end).max().unwrap_or(start);
    #[expect(clippy::cast_precision_loss, reason = "milliseconds of one workflow fit an f64's mantissa")]
    let span = (end - start).max(1) as f64;
    #[expect(clippy::cast_precision_loss, reason = "as above")]
    let at = |millis: i64| (millis - start) as f64 / span * TIMELINE_WIDTH;
    let height = steps.len() * OVERVIEW_ROW;
    let took = delay(std::time::Duration::from_millis(u64::try_from(end - start).unwrap_or(0)));
    Some(html! {
        svg.calls viewBox=(format!("0 0 {TIMELINE_WIDTH} {height}")) preserveAspectRatio="none" height=(height)
            role="img" aria-label=(format!("{} step calls over {took}, some at the same time", steps.len())) {
            @for (row, call) in steps.iter().enumerate() {
                @let x = at(call.started_at.millis());
                @let width = (at(end_of(call)) - x).max(1.5);
                rect class=(format!("bar {}", call.status)) x=(format!("{x:.1}")) y=(row * OVERVIEW_ROW + 1)
                    width=(format!("{width:.1}")) height=(OVERVIEW_ROW - 2) data-seq=(call.seq) {
                    title { "#" (call.seq) " " (call.step) (call.input) ": " (call.status) ", " (delay(call.finished_at.unwrap_or(now).since(call.started_at))) }
                }
            }
        }
    })
}

/// A value: JSON objects and lists pretty-printed; short ones on a line;
/// long ones, and ones whose strings hold line breaks (an exhausted call's
/// failures), folded under their first line, one failure per line, at most
/// 100,000 characters in the page; each with a copy button.
fn value_block(value: &str) -> Markup {
    let pretty = value.trim_start().starts_with(['{', '[']).then(|| pretty_json(value)).flatten();
    // WAVE: one failure (one record of a list) per line, and a string's line breaks as breaks.
    // Folded, it reads as its compact text (JSON) or its first failure (WAVE).
    let compact = pretty.is_some();
    let unfolded = pretty.unwrap_or_else(|| value.replace("\\n", "\n").replace("}, {", "},\n  {"));
    let first = if compact { value } else { unfolded.lines().next().unwrap_or_default() };
    if unfolded.len() <= 160 && !unfolded.contains('\n') {
        return html! { p.mono.value { "→ " (value) " " (copy_button(value, "Copy the value")) } };
    }
    let mut shown: String = unfolded.chars().take(100_000).collect();
    if shown.len() < unfolded.len() {
        shown.push_str(&format!("\n… {} more characters (the API has them all)", unfolded.len() - shown.len()));
    }
    let summary: String = first.chars().take(160).collect();
    html! {
        details.value {
            summary.mono { "→ " (summary) "…" }
            @if value.len() <= 100_000 { (copy_button(value, "Copy the value")) }
            pre { (shown) }
        }
    }
}

/// `value` indented, if it is JSON: transcoded token by token, so keys keep their order.
fn pretty_json(value: &str) -> Option<String> {
    let mut out = Vec::new();
    let mut reader = serde_json::Deserializer::from_str(value);
    serde_transcode::transcode(&mut reader, &mut serde_json::Serializer::pretty(&mut out)).ok()?;
    reader.end().ok()?;
    String::from_utf8(out).ok()
}

/// What a waiting workflow waits for, and until when.
fn waiting(workflow: &WorkflowRecord) -> Markup {
    let kind = workflow.waiting_for.unwrap_or(WaitKind::Sleep);
    let what = format!("for {}", kind.describe(workflow.wait_topic.as_deref()));
    html! {
        (what)
        @if let Some(until) = workflow.run_at { " until " (clock(until)) }
        " (no worker holds it meanwhile)"
    }
}

/// Where a fork most likely starts: the first call that did not succeed (else after the last).
fn fork_point(history: &WorkflowHistory) -> i64 {
    let calls = history.calls.iter().map(|call| &call.call);
    let failed = calls.clone().find(|call| call.status != CallStatus::Succeeded);
    failed.map_or_else(|| calls.map(|call| call.seq).max().map_or(1, |seq| seq + 1), |call| call.seq)
}

/// One attempt; the countdown to the next only when someone will run it
/// (`alive`); its message, and what the guest printed, folded.
fn attempt_row(attempt: &AttemptRecord, now: Timestamp, alive: bool) -> Markup {
    let took = attempt.finished_at.map(|end| delay(end.since(attempt.started_at)));
    let printed = [("stdout", &attempt.stdout), ("stderr", &attempt.stderr)]
        .into_iter()
        .filter_map(|(stream, text)| text.as_deref().filter(|text| !text.is_empty()).map(|text| (stream, text)));
    html! {
        tr {
            td { (attempt.attempt) }
            td { (clock(attempt.started_at)) }
            td { (took.unwrap_or_else(|| "running".into())) }
            td { (attempt.outcome.map(|outcome| outcome.to_string()).unwrap_or_default()) }
            td { (attempt.kind.map(|kind| kind.to_string()).unwrap_or_default()) }
            td {
                @if let Some(at) = attempt.retry_at {
                    @if at > now && !alive {
                        "at " (clock(at)) ", when resumed"
                    } @else if at > now {
                        span.countdown data-at=(at.millis()) { "in " (delay(at.since(now))) }
                    } @else {
                        "after " (delay(at.since(attempt.finished_at.unwrap_or(at))))
                    }
                }
            }
            td.mono { (attempt.executor) }
            td.message {
                @if let Some(message) = &attempt.message {
                    @let (first, rest) = message.split_once('\n').unwrap_or((message.as_str(), ""));
                    @if rest.is_empty() { code { (first) } } @else { details { summary { code { (first) } } pre { (rest) } } }
                }
                @for (stream, text) in printed {
                    details.printed { summary { (stream) " (" (text.lines().count()) " lines)" } pre { (text) } }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_are_pretty_and_short_values_stay_on_their_line() {
        let object = r#"{"region":"eu-west-1","hosts":["a","b"],"ready":true,"note":"a value long enough to fold, past the line"}"#;
        let page = value_block(object).into_string();
        assert!(page.contains("<details class=\"value\">"), "{page}");
        assert!(
            page.contains("{\n  &quot;region&quot;: &quot;eu-west-1&quot;,\n  &quot;hosts&quot;: [\n    &quot;a&quot;"),
            "{page}"
        );
        assert!(
            page.contains(&format!("data-copy=\"{}\"", object.replace('"', "&quot;"))),
            "the copy is the value as stored"
        );
        let short = value_block("42").into_string();
        assert!(short.starts_with("<p class=\"mono value\">→ 42 <button class=\"copy\""), "{short}");
        // An exhausted call's failures: one per line.
        let failures = r#"retries-exhausted({attempts: 2, failures: [{attempt: 1, message: "a\nb"}, {attempt: 2, message: "c"}]})"#;
        let folded = value_block(failures).into_string();
        assert!(folded.contains("a\nb&quot;},\n  {attempt: 2"), "{folded}");
    }
}
