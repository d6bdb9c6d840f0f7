//! The API's routes to running workflows and schedules: send a message,
//! read a published event, and list, set, pause, resume and delete
//! schedules — the operations of `host send`, `host event` and `host
//! schedule`, with the same documents.

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde::Deserialize;

use super::Shared;
use super::api::{ApiError, MAX_WAIT, WaitQuery, bad_request, body, client, compile_turn, parsed, stored_spec};
use crate::config::parse_duration;
use crate::journal::{CatchUp, ScheduleRecord};
use crate::operate::{self, EventValue, Failure, ScheduleList, SendReceipt, Sender};
use crate::worker::ScheduleRequest;

/// This room's routes: path, method, handler.
pub(super) fn table() -> Vec<(&'static str, &'static str, MethodRouter<Shared>)> {
    vec![
        ("/api/v1/workflows/{id}/messages", "post", post(send)),
        ("/api/v1/workflows/{id}/events/{key}", "get", get(event)),
        ("/api/v1/schedules", "get", get(schedules)),
        ("/api/v1/schedules", "post", post(set_schedule)),
        ("/api/v1/schedules/{name}/pause", "post", post(pause)),
        ("/api/v1/schedules/{name}/resume", "post", post(resume)),
        ("/api/v1/schedules/{name}/delete", "post", post(delete)),
    ]
}

/// A message for a workflow.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MessageBody {
    /// The topic its `recv` waits on.
    topic: String,
    /// Any JSON value; the workflow receives it as JSON text.
    value: serde_json::Value,
    /// Who the workflow sees as the sender (`api` if not given).
    sender: Option<String>,
    /// A repeated send with the same key (per workflow) is accepted once.
    idempotency_key: Option<String>,
}

/// Sends a message to a workflow; its `recv` on the topic takes it, once.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/messages", operation_id = "send_message", tag = "workflows",
    params(("id" = String, Path, description = "The workflow's id")), request_body = MessageBody, responses(
    (status = 201, description = "Sent", body = SendReceipt),
    (status = 200, description = "Sent before with this idempotency key: nothing new", body = SendReceipt),
    (status = 400, description = "The body is not valid", body = Failure),
    (status = 404, description = "No such workflow", body = Failure),
    (status = 409, description = "The workflow has ended: nobody would receive it", body = Failure),
    (status = 503, description = "The journal is unreachable", body = Failure),
))]
async fn send(
    State(state): State<Shared>,
    Path(id): Path<String>,
    request: Result<axum::Json<MessageBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = body(request)?;
    let sender =
        Sender { name: request.sender.unwrap_or_else(|| "api".to_string()), idempotency_key: request.idempotency_key };
    let value = request.value.to_string();
    let receipt = operate::send(&state.journal, &id, &request.topic, &value, &sender).await?;
    let status = if receipt.duplicate { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, axum::Json(receipt)).into_response())
}

/// The value a workflow published under a key (`set-event`), waiting for it up to `wait`.
#[utoipa::path(get, path = "/api/v1/workflows/{id}/events/{key}", operation_id = "read_event", tag = "workflows",
    params(("id" = String, Path, description = "The workflow's id"), ("key" = String, Path, description = "The key"), WaitQuery),
    responses(
    (status = 200, description = "The value", body = EventValue),
    (status = 202, description = "Not published within the wait; the workflow still runs", body = Failure),
    (status = 400, description = "The wait is not a duration", body = Failure),
    (status = 404, description = "No such workflow, or it ended without publishing the key", body = Failure),
    (status = 503, description = "The journal is unreachable", body = Failure),
))]
async fn event(
    State(state): State<Shared>,
    Path((id, key)): Path<(String, String)>,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let wait = match parsed(query)?.wait.as_deref() {
        Some(wait) => parse_duration(wait).map_err(bad_request)?.min(MAX_WAIT),
        None => Duration::ZERO,
    };
    match operate::event(&state.journal, &id, &key, wait).await? {
        Some(event) => Ok(axum::Json(event).into_response()),
        None => {
            let error = format!("workflow {id} has not published {key:?} yet");
            let failure = Failure { error, disposition: crate::Disposition::NotFound };
            Ok((StatusCode::ACCEPTED, axum::Json(failure)).into_response())
        }
    }
}

/// Every schedule.
#[utoipa::path(get, path = "/api/v1/schedules", operation_id = "list_schedules", tag = "schedules", responses(
    (status = 200, description = "The schedules", body = ScheduleList),
    (status = 503, description = "The journal is unreachable", body = Failure),
))]
async fn schedules(State(state): State<Shared>) -> Result<axum::Json<ScheduleList>, ApiError> {
    Ok(axum::Json(operate::schedules(&state.journal).await?))
}

/// A schedule: stored components by digest, its expression, what each tick runs.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ScheduleBody {
    /// Its name: each tick's workflow is NAME@TICK.
    name: String,
    /// 5 cron fields, or 6 with seconds first.
    cron: String,
    /// The IANA time zone it is read in (`UTC` if not given).
    timezone: Option<String>,
    /// Ticks missed while no worker ran: `skip`, `latest` (default) or `all`.
    catch_up: Option<CatchUp>,
    /// The workflow component's digest (as an upload returns).
    workflow: String,
    /// The step components' digests.
    #[serde(default)]
    steps: Vec<String>,
    /// The entry function, when the workflow exports several.
    invoke: Option<String>,
    /// One WAVE value per parameter of the entry function, for every tick.
    #[serde(default)]
    args: Vec<String>,
    /// Step settings, as the TOML of a manifest.
    manifest: Option<String>,
    /// The queue (`default` if not given).
    queue: Option<String>,
    /// Lower runs first.
    #[serde(default)]
    priority: i32,
    /// Each tick's workflow times out this long after its tick (`10m`).
    timeout: Option<String>,
}

/// Sets (creates or replaces) a schedule of stored components.
#[utoipa::path(post, path = "/api/v1/schedules", operation_id = "set_schedule", tag = "schedules", request_body = ScheduleBody, responses(
    (status = 201, description = "Set", body = ScheduleRecord),
    (status = 400, description = "What does not fit: expression, zone, components, arguments", body = Failure),
    (status = 503, description = "The journal is unreachable", body = Failure),
))]
async fn set_schedule(
    State(state): State<Shared>,
    request: Result<axum::Json<ScheduleBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = body(request)?;
    let spec = stored_spec(&request.workflow, &request.steps, request.invoke.clone(), request.manifest.as_deref())?;
    let timezone = request.timezone.unwrap_or_else(|| "UTC".to_string());
    crate::config::CronSchedule::parse(&request.cron, &timezone).map_err(bad_request)?;
    let timeout = request.timeout.as_deref().map(parse_duration).transpose().map_err(bad_request)?;
    let client = client(&state)?;
    let _turn = compile_turn(&state).await?;
    let submittable = client.prepare_stored(&spec).await?;
    let schedule = ScheduleRequest {
        name: request.name,
        cron: request.cron,
        timezone,
        catch_up: request.catch_up.unwrap_or(CatchUp::Latest),
        arguments: request.args,
        queue: request.queue,
        priority: request.priority,
        timeout,
    };
    let set = client.schedule(&submittable, &schedule).await?;
    Ok((StatusCode::CREATED, axum::Json(set)).into_response())
}

/// Pauses a schedule: it fires nothing until resumed.
#[utoipa::path(post, path = "/api/v1/schedules/{name}/pause", operation_id = "pause_schedule", tag = "schedules",
    params(("name" = String, Path, description = "The schedule")), responses(
    (status = 200, description = "Paused", body = ScheduleList),
    (status = 404, description = "No such schedule", body = Failure),
    (status = 503, description = "The journal is unreachable", body = Failure),
))]
async fn pause(State(state): State<Shared>, Path(name): Path<String>) -> Result<axum::Json<ScheduleList>, ApiError> {
    Ok(axum::Json(operate::pause_schedule(&state.journal, &name, true).await?))
}

/// Resumes a schedule from its next tick after now.
#[utoipa::path(post, path = "/api/v1/schedules/{name}/resume", operation_id = "resume_schedule", tag = "schedules",
    params(("name" = String, Path, description = "The schedule")), responses(
    (status = 200, description = "Active again", body = ScheduleList),
    (status = 404, description = "No such schedule", body = Failure),
    (status = 503, description = "The journal is unreachable", body = Failure),
))]
async fn resume(State(state): State<Shared>, Path(name): Path<String>) -> Result<axum::Json<ScheduleList>, ApiError> {
    Ok(axum::Json(operate::pause_schedule(&state.journal, &name, false).await?))
}

/// Deletes a schedule; the workflows it started stay.
#[utoipa::path(post, path = "/api/v1/schedules/{name}/delete", operation_id = "delete_schedule", tag = "schedules",
    params(("name" = String, Path, description = "The schedule")), responses(
    (status = 200, description = "Deleted", body = ScheduleList),
    (status = 404, description = "No such schedule", body = Failure),
    (status = 503, description = "The journal is unreachable", body = Failure),
))]
async fn delete(State(state): State<Shared>, Path(name): Path<String>) -> Result<axum::Json<ScheduleList>, ApiError> {
    operate::delete_schedule(&state.journal, &name).await?;
    Ok(axum::Json(operate::schedules(&state.journal).await?))
}
