//! The dashboard's pages, rendered on the server with maud (which escapes
//! every string it is given): workflows, a workflow's timeline of calls and
//! attempts (with its waits, messages and published events), queues,
//! workers, schedules. Each page has a `#live` part that a small
//! script refreshes when the event stream says something changed.

use std::time::Duration;

use axum::Router;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, OriginalUri, Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;

use super::api::{ApiError, ForkBody, ListQuery, fork_workflow};
use super::{Shared, guard, history_page};
use crate::journal::{JournalError, Timestamp, WorkflowRecord, WorkflowStatus};
use crate::operate::{self, OperateError};

/// The page style and the live-update script, inline: no CDN, no build step.
pub(super) const STYLE: &str = include_str!("dashboard.css");

/// The tab's icon, inline (`img-src data:`): a box, in the nav's colour.
const FAVICON: &str = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E%3Crect x='1' y='1' width='14' height='14' rx='3' fill='%231d2330'/%3E%3Cpath d='M4 8h8M8 4v8' stroke='%23fff' stroke-width='2'/%3E%3C/svg%3E";
pub(super) const SCRIPT: &str = include_str!("dashboard.js");

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/", get(workflows))
        .route("/workflows/{id}", get(history_page::workflow))
        .route("/workflows/{id}/cancel", post(cancel))
        .route("/workflows/{id}/resume", post(resume))
        .route("/workflows/{id}/fork", post(fork))
        .route("/queues", get(queues))
        .route("/workers", get(workers))
        .route("/schedules", get(schedules))
        .route("/schedules/{name}/pause", post(pause_schedule))
        .route("/schedules/{name}/resume", post(resume_schedule))
}

/// Anything the router does not know: JSON under `/api`, a page elsewhere.
pub(super) async fn not_found(uri: Uri) -> Response {
    if uri.path().starts_with("/api/") {
        let failure = crate::operate::Failure {
            error: format!("no route {}", uri.path()),
            disposition: crate::Disposition::NotFound,
        };
        (StatusCode::NOT_FOUND, axum::Json(failure)).into_response()
    } else {
        (StatusCode::NOT_FOUND, layout("Not found", "", html! { p { "Nothing at " code { (uri.path()) } "." } }))
            .into_response()
    }
}

/// A page, or an error page that says what went wrong.
pub(super) type PageResult = Result<Response, Response>;

pub(super) fn error_page(status: StatusCode, message: &str) -> Response {
    (status, layout("Error", "", html! { p.error { (message) } })).into_response()
}

/// A page's query parameters, or a page saying what is wrong with them.
#[expect(clippy::result_large_err, reason = "the error is the response axum sends, as in every handler here")]
pub(super) fn parsed<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, Response> {
    query.map(|Query(query)| query).map_err(|rejection| error_page(StatusCode::BAD_REQUEST, &rejection.body_text()))
}

pub(super) fn journal_error(error: &JournalError) -> Response {
    error_page(super::status(error.disposition()), &error.to_string())
}

fn operate_error(error: &OperateError) -> Response {
    error_page(super::status(error.disposition()), &error.to_string())
}

/// The frame of every page; `events` is the event stream its live part follows.
fn layout(title: &str, events: &str, body: Markup) -> Html<String> {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · stepbox" }
                link rel="icon" href=(FAVICON);
                style { (PreEscaped(STYLE)) }
            }
            body {
                nav {
                    a.brand href="/" { "stepbox" }
                    a href="/" { "Workflows" }
                    a href="/queues" { "Queues" }
                    a href="/workers" { "Workers" }
                    a href="/schedules" { "Schedules" }
                }
                main data-events=(events) { (body) }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    };
    Html(page.into_string())
}

/// The `#live` part alone when the query asks for a fragment, else the whole page.
pub(super) fn respond(title: &str, events: &str, fragment: bool, before: Markup, live: Markup) -> Response {
    if fragment {
        Html(live.into_string()).into_response()
    } else {
        layout(title, events, html! { (before) div #live { (live) } }).into_response()
    }
}

async fn workflows(
    State(state): State<Shared>,
    OriginalUri(uri): OriginalUri,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> PageResult {
    let query = parsed(query)?;
    let filter = query.filter().map_err(|message| error_page(StatusCode::BAD_REQUEST, &message))?;
    let operate::WorkflowList { workflows: rows, next } =
        operate::list(&state.journal, &filter).await.map_err(|error| operate_error(&error))?;
    let now = Timestamp::now();
    let value = |field: &Option<String>| field.clone().unwrap_or_default();
    let before = html! {
        h1 { "Workflows" }
        form.filters method="get" action="/" {
            label { "Status " select name="status" {
                option value="" { "any" }
                @for status in WorkflowStatus::ALL {
                    option value=(status) selected[query.status.as_deref() == Some(status.as_column())] { (status) }
                }
            } }
            label { "Name " input name="name" value=(value(&query.name)); }
            label { "Queue " input name="queue" value=(value(&query.queue)); }
            label { "Id prefix " input name="id_prefix" value=(value(&query.id_prefix)); }
            label { "Since " input name="since" placeholder="1h or 2026-12-01T00:00:00Z" value=(value(&query.since)); }
            label { "Until " input name="until" placeholder="10m or a time" value=(value(&query.until)); }
            button type="submit" { "Filter" }
        }
    };
    let live = html! {
        table {
            thead { tr { th { "Id" } th { "Status" } th { "Name" } th { "Entry" } th { "Queue" } th { "Started" } th { "Duration" } } }
            tbody {
                @for workflow in &rows {
                    tr {
                        td { a href=(format!("/workflows/{}", segment(&workflow.id))) { (workflow.id) } }
                        td { (status_badge(workflow, now)) }
                        td { (workflow.name) }
                        td.mono { (entry(workflow)) }
                        td { (workflow.queue.clone().unwrap_or_default()) }
                        td { (clock(workflow.created_at)) }
                        td { (duration(workflow, now)) }
                    }
                }
            }
        }
        @if rows.is_empty() { p.empty { "No workflow matches." } }
        @if let Some(next) = &next {
            p { a href=(next_page(&uri, next)) { "Older →" } }
        }
    };
    Ok(respond("Workflows", "/events", query.fragment.is_some(), before, live))
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    fragment: Option<u8>,
}

/// Its status as the page tells it: a running workflow nobody holds (its
/// lease released or lapsed) is interrupted, and resumable.
pub(super) fn status_badge(workflow: &WorkflowRecord, now: Timestamp) -> Markup {
    if resumable(workflow, now) && workflow.status == WorkflowStatus::Running {
        return html! { span.status.stopped title="Nobody runs it: its lease was released or lapsed. Resume hands it to a worker." { "interrupted — resumable" } };
    }
    html! { span class=(format!("status {}", workflow.status)) { (workflow.status) } }
}

/// Whether nobody runs it and a worker could: dead, or running with its lease lapsed.
pub(super) fn resumable(workflow: &WorkflowRecord, now: Timestamp) -> bool {
    workflow.status == WorkflowStatus::Dead
        || (workflow.status == WorkflowStatus::Running && workflow.lease_expires_at.is_none_or(|expires| expires < now))
}

/// A button's form: the page's secret, and the step a fork starts from.
#[derive(Debug, Deserialize)]
struct ActionForm {
    csrf: String,
    from_step: Option<i64>,
}

/// The form, if it carries this server's secret (it came from one of its pages).
#[expect(clippy::result_large_err, reason = "the error is the response axum sends, as in every handler here")]
fn action_form(state: &Shared, form: Result<Form<ActionForm>, FormRejection>) -> Result<ActionForm, Response> {
    match form {
        Ok(Form(form)) if guard::same(&form.csrf, &state.csrf) => Ok(form),
        Ok(_) | Err(_) => {
            Err(error_page(StatusCode::FORBIDDEN, "This form is stale or came from another site: reload the page."))
        }
    }
}

/// After an action: the page of `id`, or the reason it was refused.
#[expect(clippy::result_large_err, reason = "the error is the response axum sends, as in every handler here")]
fn after_action<T>(id: &str, result: Result<T, ApiError>) -> PageResult {
    match result {
        Ok(_) => Ok(Redirect::to(&format!("/workflows/{}", segment(id))).into_response()),
        Err(ApiError(status, failure)) => Err(error_page(status, &failure.error)),
    }
}

async fn cancel(
    State(state): State<Shared>,
    Path(id): Path<String>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> PageResult {
    action_form(&state, form)?;
    after_action(&id, operate::cancel(&state.journal, &id, std::time::Duration::ZERO).await.map_err(ApiError::from))
}

async fn resume(
    State(state): State<Shared>,
    Path(id): Path<String>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> PageResult {
    action_form(&state, form)?;
    after_action(&id, operate::requeue(&state.journal, &id, None).await.map_err(ApiError::from))
}

/// Forks, then shows the new workflow.
async fn fork(
    State(state): State<Shared>,
    Path(id): Path<String>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> PageResult {
    let form = action_form(&state, form)?;
    let request = ForkBody { from_step: form.from_step, ..ForkBody::default() };
    let result = fork_workflow(&state, &id, request).await;
    let new_id = result.as_ref().ok().map(|receipt| receipt.id.clone());
    after_action(new_id.as_deref().unwrap_or(&id), result)
}

async fn queues(State(state): State<Shared>, query: Result<Query<PageQuery>, QueryRejection>) -> PageResult {
    let query = parsed(query)?;
    let queues = state.journal.queues().await.map_err(|error| journal_error(&error))?;
    let limit = |value: Option<i32>| value.map_or_else(|| "-".to_string(), |value| value.to_string());
    let live = html! {
        table {
            thead { tr { th { "Queue" } th { "Running / limit" } th { "Per partition" } th { "Rate" } th { "Ready" } th { "Delayed" } th { "Waiting" } th { "Recent starts" } } }
            tbody {
                @for queue in &queues {
                    tr {
                        td { a href=(format!("/?queue={}", encode(&queue.limits.name))) { (queue.limits.name) } }
                        td { (queue.running) " / " (limit(queue.limits.concurrency)) }
                        td { (limit(queue.limits.partition_concurrency)) }
                        td { @match (queue.limits.rate_limit, queue.limits.rate_period_ms) {
                            (Some(starts), Some(period)) => { (starts) " per " (delay(Duration::from_millis(u64::try_from(period).unwrap_or(0)))) }
                            _ => { "-" }
                        } }
                        td { (queue.ready) }
                        td { (queue.delayed) }
                        td { (queue.waiting) }
                        td { (queue.recent_starts) }
                    }
                }
            }
        }
        @if queues.is_empty() { p.empty { "No queue yet: `host queue set` declares one, `host submit --queue` uses one." } }
    };
    Ok(respond("Queues", "/events", query.fragment.is_some(), html! { h1 { "Queues" } }, live))
}

async fn workers(State(state): State<Shared>, query: Result<Query<PageQuery>, QueryRejection>) -> PageResult {
    let query = parsed(query)?;
    let workers = state.journal.workers().await.map_err(|error| journal_error(&error))?;
    let now = Timestamp::now();
    let live = html! {
        table {
            thead { tr { th { "Worker" } th { "State" } th { "Queues" } th { "Running" } th { "Concurrency" } th { "Started" } th { "Heartbeat" } } }
            tbody {
                @for worker in &workers {
                    tr {
                        td.mono { (worker.id) }
                        td { span class=(format!("status {}", worker.state)) { (worker.state) } }
                        td { (worker.queue_names()) }
                        td { (worker.running) }
                        td { (worker.concurrency) }
                        td { (clock(worker.started_at)) }
                        td { (delay(now.since(worker.last_seen_at))) " ago" }
                    }
                }
            }
        }
        @if workers.is_empty() { p.empty { "No worker has run on this journal: `host worker` starts one." } }
    };
    Ok(respond("Workers", "/events", query.fragment.is_some(), html! { h1 { "Workers" } }, live))
}

async fn schedules(State(state): State<Shared>, query: Result<Query<PageQuery>, QueryRejection>) -> PageResult {
    let query = parsed(query)?;
    let schedules = state.journal.schedules().await.map_err(|error| journal_error(&error))?;
    let live = html! {
        table {
            thead { tr { th { "Schedule" } th { "Cron" } th { "Time zone" } th { "Queue" } th { "Runs" } th { "Next tick" } th { "Last tick" } th { "Catch-up" } th { "State" } th {} } }
            tbody {
                @for schedule in &schedules {
                    tr {
                        td { a href=(format!("/?id_prefix={}", encode(&format!("{}@", schedule.name)))) { (schedule.name) } }
                        td.mono { (schedule.cron) }
                        td { (schedule.timezone) }
                        td { a href=(format!("/?queue={}", encode(&schedule.queue))) { (schedule.queue) } }
                        td.mono { (schedule.component) " " (schedule.entry) (schedule.input) }
                        td { @if schedule.paused { "-" } @else { (clock(schedule.next_tick_at)) } }
                        td.mono { (schedule.last_tick_at.map_or_else(|| "-".to_string(), Timestamp::rfc3339)) }
                        td { (schedule.catch_up) }
                        td { span class=(if schedule.paused { "status paused" } else { "status active" }) { (if schedule.paused { "paused" } else { "active" }) } }
                        td {
                            form method="post" action=(format!("/schedules/{}/{}", segment(&schedule.name), if schedule.paused { "resume" } else { "pause" })) {
                                input type="hidden" name="csrf" value=(state.csrf);
                                button type="submit" { (if schedule.paused { "Resume" } else { "Pause" }) }
                            }
                        }
                    }
                }
            }
        }
        @if schedules.is_empty() { p.empty { "No schedule yet: `host schedule set NAME WORKFLOW.wasm --cron EXPR` starts one." } }
    };
    Ok(respond("Schedules", "/events", query.fragment.is_some(), html! { h1 { "Schedules" } }, live))
}

async fn pause_schedule(
    State(state): State<Shared>,
    Path(name): Path<String>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> PageResult {
    action_form(&state, form)?;
    schedule_action(operate::pause_schedule(&state.journal, &name, true).await)
}

async fn resume_schedule(
    State(state): State<Shared>,
    Path(name): Path<String>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> PageResult {
    action_form(&state, form)?;
    schedule_action(operate::pause_schedule(&state.journal, &name, false).await)
}

/// After a schedule's action: the schedules, or the reason it was refused.
#[expect(clippy::result_large_err, reason = "the error is the response axum sends, as in every handler here")]
fn schedule_action<T>(result: Result<T, OperateError>) -> PageResult {
    match result {
        Ok(_) => Ok(Redirect::to("/schedules").into_response()),
        Err(error) => Err(operate_error(&error)),
    }
}

pub(super) fn entry(workflow: &WorkflowRecord) -> String {
    format!("{}{}", workflow.entry, workflow.input)
}

pub(super) fn duration(workflow: &WorkflowRecord, now: Timestamp) -> String {
    let start = workflow.started_at.unwrap_or(workflow.created_at);
    delay(workflow.finished_at.unwrap_or(now).since(start))
}

/// A time as its RFC 3339 text, which the page's script follows with how long ago it was.
pub(super) fn clock(at: Timestamp) -> Markup {
    html! { time.mono datetime=(at.rfc3339()) data-ms=(at.millis()) { (at.rfc3339()) } }
}

/// A button that copies `text` (the page's script does it; without script it is inert).
pub(super) fn copy_button(text: &str, title: &str) -> Markup {
    html! { button.copy type="button" data-copy=(text) title=(title) aria-label=(title) { "copy" } }
}

/// A duration to the millisecond, as people write it (`1s 250ms`).
pub(super) fn delay(duration: Duration) -> String {
    humantime::format_duration(Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)))
        .to_string()
}

/// A path segment or query value, percent-encoded.
/// `text` as a query value (`+` for spaces, as forms send it).
pub(super) fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// `text` as one path segment: every byte but letters, digits, `-`, `_`
/// and `~` percent-encoded (`/`, `?`, `#`, `+`, `.` included, so no id
/// reads as a path or a dot segment), which the router decodes back.
pub(super) fn segment(text: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'~');
    percent_encoding::utf8_percent_encode(text, SEGMENT).to_string()
}

/// The same list with `after` set to the next page's cursor.
fn next_page(uri: &Uri, next: &str) -> String {
    let kept = url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .filter(|(key, _)| key != "after" && key != "fragment")
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect::<Vec<_>>();
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in &kept {
        query.append_pair(key, value);
    }
    query.append_pair("after", next);
    format!("/?{}", query.finish())
}
