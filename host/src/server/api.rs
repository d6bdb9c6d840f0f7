//! The JSON API under `/api/v1`: the operations of [`crate::operate`] over
//! HTTP, answering with the same documents `host … -o json` prints. Each
//! handler declares its OpenAPI operation (`#[utoipa::path]`), and the
//! document served at `/api/v1/openapi.json` is generated from them
//! (`openapi.rs`), so the two cannot drift.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::Shared;
use crate::Disposition;
use crate::config::{Manifest, parse_duration};
use crate::journal::{DEFAULT_QUEUE, JournalError, Timestamp, WorkflowFilter, WorkflowHistory, WorkflowStatus};
use crate::operate::{
    self, CancelKind, CancelReceipt, Failure, ForkReceipt, OperateError, QueueList, Requeued, SubmitReceipt,
    UploadReceipt, WorkerList, WorkflowList, WorkflowResult,
};
use crate::run::StoredSpec;
use crate::worker::{SubmitError, SubmitRequest};

/// The longest a request may wait for a result.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(60);

/// Most workflows one list request returns.
pub(super) const MAX_LIMIT: u32 = 1000;

/// Every route: path, method, handler.
pub(super) fn table() -> Vec<(&'static str, &'static str, MethodRouter<Shared>)> {
    vec![
        ("/api/v1/workflows", "get", get(list)),
        ("/api/v1/workflows/{id}", "get", get(show)),
        ("/api/v1/workflows/{id}/result", "get", get(result)),
        ("/api/v1/workflows", "post", post(submit)),
        ("/api/v1/workflows/{id}/cancel", "post", post(cancel)),
        ("/api/v1/workflows/{id}/resume", "post", post(resume)),
        ("/api/v1/workflows/{id}/fork", "post", post(fork)),
        (super::UPLOAD_PATH, "post", post(upload).layer(DefaultBodyLimit::max(super::UPLOAD_LIMIT))),
        ("/api/v1/queues", "get", get(queues)),
        ("/api/v1/workers", "get", get(workers)),
        ("/api/v1/openapi.json", "get", get(openapi)),
    ]
    .into_iter()
    .chain(super::talk::table())
    .collect()
}

pub(super) fn routes() -> Router<Shared> {
    // A path with several methods is one route.
    let mut routes: Vec<(&str, MethodRouter<Shared>)> = Vec::new();
    for (path, _, handler) in table() {
        match routes.iter_mut().find(|(known, _)| *known == path) {
            Some((_, existing)) => *existing = std::mem::take(existing).merge(handler),
            None => routes.push((path, handler)),
        }
    }
    routes.into_iter().fold(Router::new(), |router, (path, handler)| router.route(path, handler))
}

/// An API error: its status, and the [`Failure`] document.
pub(super) struct ApiError(pub StatusCode, pub Failure);

impl ApiError {
    /// An error of this disposition; its status follows from it.
    pub(super) fn new(disposition: Disposition, message: impl Into<String>) -> Self {
        Self(super::status(disposition), Failure { error: message.into(), disposition })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<OperateError> for ApiError {
    fn from(error: OperateError) -> Self {
        Self::new(error.disposition(), error.to_string())
    }
}

impl From<JournalError> for ApiError {
    fn from(error: JournalError) -> Self {
        Self::new(error.disposition(), error.to_string())
    }
}

impl From<SubmitError> for ApiError {
    fn from(error: SubmitError) -> Self {
        Self::new(error.disposition(), error.to_string())
    }
}

pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(Disposition::Refused, message)
}

/// Query parameters, or a 400 saying what is wrong with them.
pub(super) fn parsed<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query.map(|Query(query)| query).map_err(|rejection| bad_request(rejection.body_text()))
}

/// The filters of a workflow list, as query parameters (the dashboard's too).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Only workflows with this status.
    pub status: Option<String>,
    /// Only workflows of this name (the workflow component's file name without `.wasm`).
    pub name: Option<String>,
    /// Only workflows submitted to this queue.
    pub queue: Option<String>,
    /// Only workflows whose id starts with this.
    pub id_prefix: Option<String>,
    /// Only workflows created at or after this: a duration ago (`1h`) or an RFC 3339 time.
    pub since: Option<String>,
    /// Only workflows created before this: a duration ago (`30m`) or an RFC 3339 time.
    pub until: Option<String>,
    /// At most this many (1 to 1000; 50 if not given).
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
    /// Only the part of a page that changes (the dashboard's live updates).
    #[param(ignore)]
    pub fragment: Option<u8>,
    /// The server's token, when a browser presents it in the URL (checked before).
    #[serde(rename = "token")]
    #[param(ignore)]
    _token: Option<String>,
}

impl ListQuery {
    /// The journal filter (its limit is the page's).
    pub fn filter(&self) -> Result<WorkflowFilter, String> {
        let nonempty = |value: &Option<String>| value.clone().filter(|value| !value.is_empty());
        let limit = self.limit.unwrap_or(50);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(format!("limit must be between 1 and {MAX_LIMIT}"));
        }
        let status = match nonempty(&self.status) {
            Some(status) => Some(status.parse::<WorkflowStatus>()?),
            None => None,
        };
        let created_after = nonempty(&self.since).map(|since| operate::parse_point("since", &since)).transpose()?;
        let created_before = nonempty(&self.until).map(|until| operate::parse_point("until", &until)).transpose()?;
        let after = match nonempty(&self.after) {
            Some(cursor) => Some(operate::parse_cursor(&cursor)?),
            None => None,
        };
        Ok(WorkflowFilter {
            status,
            name: nonempty(&self.name),
            queue: nonempty(&self.queue),
            id_prefix: nonempty(&self.id_prefix),
            created_after,
            created_before,
            after,
            limit,
        })
    }
}

/// A page of workflows, newest first, and the `next` cursor.
#[utoipa::path(get, path = "/api/v1/workflows", tag = "workflows", params(ListQuery), responses(
    (status = 200, description = "A page of workflows", body = WorkflowList),
    (status = 400, description = "A filter is not valid", body = Failure),
    (status = 503, description = "The journal is unreachable", body = Failure),
))]
async fn list(
    State(state): State<Shared>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<WorkflowList>, ApiError> {
    let filter = parsed(query)?.filter().map_err(bad_request)?;
    Ok(Json(operate::list(&state.journal, &filter).await?))
}

/// The workflow, its calls, every attempt, its events.
#[utoipa::path(get, path = "/api/v1/workflows/{id}", tag = "workflows",
    params(("id" = String, Path, description = "The workflow's id")), responses(
    (status = 200, description = "The workflow and its history", body = WorkflowHistory),
    (status = 404, description = "No such workflow", body = Failure),
    (status = 503, description = "The journal is unreachable", body = Failure),
))]
async fn show(State(state): State<Shared>, Path(id): Path<String>) -> Result<Json<WorkflowHistory>, ApiError> {
    Ok(Json(operate::show(&state.journal, &id).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct WaitQuery {
    /// How long to wait (`30s`; at most a minute).
    pub wait: Option<String>,
}

/// The output once finished; 202 with where it stands if it has not finished within `wait`.
#[utoipa::path(get, path = "/api/v1/workflows/{id}/result", tag = "workflows",
    params(("id" = String, Path, description = "The workflow's id"), WaitQuery), responses(
    (status = 200, description = "It ended (succeeded or not)", body = WorkflowResult),
    (status = 202, description = "It has not ended within the wait", body = WorkflowResult),
    (status = 400, description = "The wait is not a duration", body = Failure),
    (status = 404, description = "No such workflow", body = Failure),
    (status = 503, description = "The journal is unreachable", body = Failure),
))]
async fn result(
    State(state): State<Shared>,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let wait = match parsed(query)?.wait.as_deref() {
        Some(wait) => parse_duration(wait).map_err(bad_request)?.min(MAX_WAIT),
        None => Duration::ZERO,
    };
    let document = operate::result(&state.journal, &id, wait).await?;
    let status = if document.status.is_final() { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, Json(document)).into_response())
}

/// Stops a workflow wherever it is: at once if nobody runs it, else by asking its owner.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/cancel", tag = "workflows",
    params(("id" = String, Path, description = "The workflow's id")), responses(
    (status = 200, description = "Cancelled now (nobody was running it)", body = CancelReceipt),
    (status = 202, description = "Its owner was asked to stop it", body = CancelReceipt),
    (status = 404, description = "No such workflow", body = Failure),
    (status = 409, description = "It had already ended", body = Failure),
    (status = 503, description = "The journal is unreachable", body = Failure),
))]
async fn cancel(State(state): State<Shared>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let receipt = operate::cancel(&state.journal, &id, Duration::ZERO).await?;
    let status = if receipt.cancel == CancelKind::Done { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, Json(receipt)).into_response())
}

/// The submitting client, or a 503 if this host cannot start WebAssembly.
pub(super) fn client(state: &Shared) -> Result<&crate::worker::Client, ApiError> {
    state.client().map_err(|message| ApiError::new(Disposition::Bug, message))
}

/// A turn to compile: heavy in CPU and memory, so a few uploads or submissions at a time.
pub(super) async fn compile_turn(state: &Shared) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
    state.compiling.acquire().await.map_err(|_| ApiError::new(Disposition::Stopped, "the server is stopping"))
}

/// A JSON body, or a 400 saying what is wrong with it.
pub(super) fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(body)| body).map_err(|rejection| bad_request(rejection.body_text()))
}

/// An optional JSON body: empty means every field's default.
fn optional_body<T: serde::de::DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|error| bad_request(format!("the request body is not valid: {error}")))
}

/// The stored components a request names, with its manifest's settings (submit and schedules).
pub(super) fn stored_spec(
    workflow: &str,
    steps: &[String],
    invoke: Option<String>,
    manifest: Option<&str>,
) -> Result<StoredSpec, ApiError> {
    let settings = match manifest {
        Some(text) => {
            let manifest = Manifest::parse(text).map_err(|message| bad_request(format!("manifest: {message}")))?;
            Some(manifest.remote_layer("the manifest of the request").map_err(bad_request)?)
        }
        None => None,
    };
    Ok(StoredSpec {
        workflow: digest_of(workflow)?,
        steps: steps.iter().map(|step| digest_of(step)).collect::<Result<_, _>>()?,
        invoke,
        settings,
    })
}

/// A component digest as given: hex SHA-256, with or without `sha256:`.
pub(super) fn digest_of(given: &str) -> Result<String, ApiError> {
    let hex = given.strip_prefix("sha256:").unwrap_or(given).to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(bad_request(format!(
            "`{given}` is not a component digest (64 hex digits of SHA-256, as an upload returns)"
        )))
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct UploadQuery {
    /// The component's file name, for messages and manifests' `[components]` keys.
    name: Option<String>,
    #[serde(rename = "token")]
    #[param(ignore)]
    _token: Option<String>,
}

/// Stores a component (its bytes as the body) after checking this host can run it.
#[utoipa::path(post, path = "/api/v1/components", tag = "components", params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "The component's bytes"),
    responses(
    (status = 201, description = "Stored", body = UploadReceipt),
    (status = 200, description = "Stored already (same digest)", body = UploadReceipt),
    (status = 400, description = "Not a component this host can run, or a bad name", body = Failure),
    (status = 503, description = "The journal is unreachable", body = Failure),
))]
async fn upload(
    State(state): State<Shared>,
    query: Result<Query<UploadQuery>, QueryRejection>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let query = parsed(query)?;
    let client = client(&state)?;
    let name = query.name.filter(|name| !name.is_empty()).unwrap_or_else(|| "component.wasm".to_string());
    if name.contains(['/', '\\']) || name.chars().any(char::is_control) {
        return Err(bad_request("name: a file name without folders"));
    }
    let _turn = compile_turn(&state).await?;
    let uploaded = client.upload(&name, Vec::from(bytes)).await?;
    let status = if uploaded.stored { StatusCode::CREATED } else { StatusCode::OK };
    let receipt = UploadReceipt { digest: uploaded.digest, name, size: uploaded.size, stored: uploaded.stored };
    Ok((status, Json(receipt)).into_response())
}

/// A submission: components by digest, arguments in WAVE, where and when it runs.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SubmitBody {
    /// The workflow component's digest (as an upload returns).
    workflow: String,
    /// The step components' digests, searched in order.
    #[serde(default)]
    steps: Vec<String>,
    /// The entry function, when the workflow exports several.
    invoke: Option<String>,
    /// One WAVE value per parameter of the entry function.
    #[serde(default)]
    args: Vec<String>,
    /// Step settings, as the TOML of a manifest (retry policies, limits, HTTP and output grants).
    manifest: Option<String>,
    /// The workflow's id (a UUIDv7 if not given).
    id: Option<String>,
    /// Its queue (`default` if not given).
    queue: Option<String>,
    /// Lower runs first.
    #[serde(default)]
    priority: i32,
    /// Counts against the queue's per-partition limit.
    partition_key: Option<String>,
    /// At most one live workflow per (queue, key).
    dedup_key: Option<String>,
    /// Start no sooner than this long after the submission (`30s`).
    delay: Option<String>,
    /// Start no sooner than this time (RFC 3339).
    start_at: Option<String>,
    /// How long it may take from submission (`--workflow-timeout`).
    timeout: Option<String>,
}

impl SubmitBody {
    fn request(&self) -> Result<(StoredSpec, SubmitRequest), ApiError> {
        let spec = stored_spec(&self.workflow, &self.steps, self.invoke.clone(), self.manifest.as_deref())?;
        let (start_at, delay) = match (&self.delay, &self.start_at) {
            (Some(_), Some(_)) => return Err(bad_request("give delay or start_at, not both")),
            (Some(delay), None) => (None, Some(parse_duration(delay).map_err(bad_request)?)),
            (None, Some(at)) => (Some(Timestamp::parse_rfc3339(at).map_err(bad_request)?), None),
            (None, None) => (None, None),
        };
        let timeout = self.timeout.as_deref().map(parse_duration).transpose().map_err(bad_request)?;
        let request = SubmitRequest {
            arguments: self.args.clone(),
            id: self.id.clone(),
            queue: self.queue.clone(),
            priority: self.priority,
            partition_key: self.partition_key.clone(),
            dedup_key: self.dedup_key.clone(),
            start_at,
            delay,
            timeout,
        };
        Ok((spec, request))
    }
}

/// Hands a workflow of stored components to a queue; workers run it.
#[utoipa::path(post, path = "/api/v1/workflows", tag = "workflows", request_body = SubmitBody, responses(
    (status = 201, description = "Enqueued (or delayed) for workers", body = SubmitReceipt),
    (status = 200, description = "A live workflow holds the dedup key: nothing submitted", body = SubmitReceipt),
    (status = 400, description = "What does not fit: components, arguments, manifest, times", body = Failure),
    (status = 404, description = "A component is not stored", body = Failure),
    (status = 409, description = "The id belongs to another workflow", body = Failure),
    (status = 503, description = "The journal is unreachable", body = Failure),
))]
async fn submit(
    State(state): State<Shared>,
    request: Result<Json<SubmitBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (spec, request) = body(request)?.request()?;
    let client = client(&state)?;
    let _turn = compile_turn(&state).await?;
    let submittable = client.prepare_stored(&spec).await?;
    let receipt = client.submit(&submittable, &request).await?;
    let workflow = operate::show(&state.journal, &receipt.id).await?.workflow;
    let status = if receipt.deduplicated { StatusCode::OK } else { StatusCode::CREATED };
    let document = SubmitReceipt {
        id: receipt.id,
        deduplicated: receipt.deduplicated,
        status: workflow.status,
        queue: workflow.queue,
        run_at: workflow.run_at,
    };
    Ok((status, Json(document)).into_response())
}

/// Where a resumed workflow goes.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ResumeBody {
    /// Its own queue if not given (the default queue if it had none).
    pub queue: Option<String>,
}

/// Hands a workflow nobody runs (interrupted, or dead) back to a queue, for workers to resume from its journal.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/resume", tag = "workflows",
    params(("id" = String, Path, description = "The workflow's id")),
    request_body(content = Option<ResumeBody>, description = "Optional"), responses(
    (status = 200, description = "Back in a queue", body = Requeued),
    (status = 400, description = "The body or the queue name is not valid", body = Failure),
    (status = 404, description = "No such workflow", body = Failure),
    (status = 409, description = "A live process holds its lease, it is queued already, or it ended", body = Failure),
    (status = 503, description = "The journal is unreachable", body = Failure),
))]
async fn resume(State(state): State<Shared>, Path(id): Path<String>, bytes: Bytes) -> Result<Json<Requeued>, ApiError> {
    let request: ResumeBody = optional_body(&bytes)?;
    Ok(Json(operate::requeue(&state.journal, &id, request.queue.as_deref()).await?))
}

/// What to fork: from which step call, under which id, onto which queue.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ForkBody {
    /// The first step call to run again (calls before it are copied); 1 runs everything again.
    pub from_step: Option<i64>,
    /// The new workflow's id (a UUIDv7 if not given).
    pub id: Option<String>,
    /// Its original's queue if not given (the default queue if it had none).
    pub queue: Option<String>,
}

/// Forks a workflow onto a queue; workers run the new one.
pub(super) async fn fork_workflow(state: &Shared, id: &str, request: ForkBody) -> Result<ForkReceipt, ApiError> {
    let original = operate::show(&state.journal, id).await?.workflow;
    let queue = request.queue.or(original.queue).unwrap_or_else(|| DEFAULT_QUEUE.to_string());
    let from_step = request.from_step.unwrap_or(1);
    Ok(operate::fork(&state.journal, id, from_step, request.id, Some(&queue)).await?)
}

/// Forks a workflow onto a queue: its inputs and the calls before `from_step` copied; workers run it.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/fork", tag = "workflows",
    params(("id" = String, Path, description = "The original workflow's id")),
    request_body(content = Option<ForkBody>, description = "Optional"), responses(
    (status = 201, description = "The new workflow, enqueued", body = ForkReceipt),
    (status = 400, description = "The body, the step or the queue name is not valid", body = Failure),
    (status = 404, description = "No such workflow", body = Failure),
    (status = 409, description = "The new id is taken, or a call before the step has not finished", body = Failure),
    (status = 503, description = "The journal is unreachable", body = Failure),
))]
async fn fork(State(state): State<Shared>, Path(id): Path<String>, bytes: Bytes) -> Result<Response, ApiError> {
    let request: ForkBody = optional_body(&bytes)?;
    let receipt = fork_workflow(&state, &id, request).await?;
    Ok((StatusCode::CREATED, Json(receipt)).into_response())
}

/// Every queue with work or limits: limits, depth, running.
#[utoipa::path(get, path = "/api/v1/queues", tag = "queues", responses(
    (status = 200, description = "The queues", body = QueueList),
    (status = 503, description = "The journal is unreachable", body = Failure),
))]
async fn queues(State(state): State<Shared>) -> Result<Json<QueueList>, ApiError> {
    Ok(Json(operate::queues(&state.journal).await?))
}

/// The worker processes, the live ones first.
#[utoipa::path(get, path = "/api/v1/workers", tag = "workers", responses(
    (status = 200, description = "The workers", body = WorkerList),
    (status = 503, description = "The journal is unreachable", body = Failure),
))]
async fn workers(State(state): State<Shared>) -> Result<Json<WorkerList>, ApiError> {
    Ok(Json(operate::workers(&state.journal).await?))
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", responses(
    (status = 200, description = "The OpenAPI document of this API", content_type = "application/json"),
))]
async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], super::openapi::document()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_filters_are_checked() {
        let query = ListQuery { status: Some("runnin".into()), ..ListQuery::default() };
        assert!(query.filter().is_err());
        let query = ListQuery { limit: Some(0), ..ListQuery::default() };
        assert!(query.filter().is_err());
        let query = ListQuery { after: Some("garbage".into()), ..ListQuery::default() };
        assert!(query.filter().is_err());
        let query = ListQuery { status: Some("running".into()), since: Some("1h".into()), ..ListQuery::default() };
        let filter = query.filter().unwrap();
        assert_eq!((filter.status, filter.limit), (Some(WorkflowStatus::Running), 50));
    }

    #[test]
    fn cursors_round_trip() {
        let (time, id) = operate::parse_cursor("2026-11-29T12:00:00.123Z|a|b").unwrap();
        assert_eq!((time.rfc3339().as_str(), id.as_str()), ("2026-11-29T12:00:00.123Z", "a|b"));
    }
}
