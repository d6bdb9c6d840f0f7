//! The JSON API under `/api/v1`: the CLI's `-o json` documents over HTTP.
//! Its OpenAPI document (`openapi.json`, served at `/api/v1/openapi.json`)
//! is checked against these routes by a test.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::Shared;
use crate::config::{Manifest, parse_duration};
use crate::journal::{
    CancelOutcome, DEFAULT_QUEUE, JournalError, Requeued, Timestamp, WorkflowFilter, WorkflowRecord, WorkflowStatus,
};
use crate::run::{ForkError, PrepareError, StoredSpec};
use crate::worker::{SubmitError, SubmitRequest};

/// The OpenAPI document of the routes below.
const OPENAPI: &str = include_str!("openapi.json");

/// The longest a request may wait for a result.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// How often a waiting request looks at the journal.
const WAIT_POLL: Duration = Duration::from_millis(100);

/// Most workflows one list request returns.
pub(super) const MAX_LIMIT: u32 = 1000;

/// Every route: path, method, handler.
fn table() -> Vec<(&'static str, &'static str, MethodRouter<Shared>)> {
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
}

pub(super) fn routes() -> Router<Shared> {
    // A path with several methods is one route.
    let mut routes: Vec<(&str, MethodRouter<Shared>)> = Vec::new();
    for (path, _, handler) in table() {
        match routes.iter_mut().find(|(known, _)| *known == path) {
            Some((_, methods)) => *methods = std::mem::take(methods).merge(handler),
            None => routes.push((path, handler)),
        }
    }
    routes.into_iter().fold(Router::new(), |router, (path, handler)| router.route(path, handler))
}

/// An API error: a status and `{"error": message}`.
pub(super) struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<JournalError> for ApiError {
    fn from(error: JournalError) -> Self {
        let status =
            if error.is_outage() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::INTERNAL_SERVER_ERROR };
        Self(status, error.to_string())
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

/// Query parameters, or a 400 saying what is wrong with them.
fn parsed<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query.map(|Query(query)| query).map_err(|rejection| bad_request(rejection.body_text()))
}

fn not_found(id: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("no workflow {id} in the journal"))
}

/// The filters of a workflow list, as query parameters (the dashboard's too).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    pub status: Option<String>,
    pub name: Option<String>,
    pub queue: Option<String>,
    pub id_prefix: Option<String>,
    /// Only workflows created within this long (`1h`).
    pub since: Option<String>,
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
    /// Only the part of a page that changes (the dashboard's live updates).
    pub fragment: Option<u8>,
    /// The server's token, when a browser presents it in the URL (checked before).
    #[serde(rename = "token")]
    _token: Option<String>,
}

impl ListQuery {
    /// The journal filter; one more than the limit is asked for, to know whether there is a next page.
    pub fn filter(&self) -> Result<(WorkflowFilter, u32), String> {
        let nonempty = |value: &Option<String>| value.clone().filter(|value| !value.is_empty());
        let limit = self.limit.unwrap_or(50);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(format!("limit must be between 1 and {MAX_LIMIT}"));
        }
        let status = match nonempty(&self.status) {
            Some(status) => Some(status.parse::<WorkflowStatus>()?),
            None => None,
        };
        let created_after = match nonempty(&self.since) {
            Some(since) => Some(Timestamp::now().minus(parse_duration(&since)?)),
            None => None,
        };
        let after = match nonempty(&self.after) {
            Some(cursor) => Some(parse_cursor(&cursor)?),
            None => None,
        };
        let filter = WorkflowFilter {
            status,
            name: nonempty(&self.name),
            queue: nonempty(&self.queue),
            id_prefix: nonempty(&self.id_prefix),
            created_after,
            created_before: None,
            after,
            limit: limit + 1,
        };
        Ok((filter, limit))
    }
}

/// A page of workflows and the cursor of the next one.
pub(super) fn page(mut workflows: Vec<WorkflowRecord>, limit: u32) -> (Vec<WorkflowRecord>, Option<String>) {
    let more = workflows.len() > limit as usize;
    workflows.truncate(limit as usize);
    let next = if more { workflows.last().map(cursor) } else { None };
    (workflows, next)
}

/// Keyset cursor: the creation time and id of the last workflow of a page.
fn cursor(workflow: &WorkflowRecord) -> String {
    format!("{}|{}", workflow.created_at.rfc3339(), workflow.id)
}

fn parse_cursor(cursor: &str) -> Result<(Timestamp, String), String> {
    let (time, id) = cursor.split_once('|').ok_or("after: not a cursor from a previous page's `next`")?;
    Ok((Timestamp::parse_rfc3339(time)?, id.to_string()))
}

async fn list(
    State(state): State<Shared>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = parsed(query)?;
    let (filter, limit) = query.filter().map_err(bad_request)?;
    let (workflows, next) = page(state.journal.list_workflows(&filter).await?, limit);
    Ok(Json(json!({ "workflows": workflows, "next": next })).into_response())
}

async fn show(State(state): State<Shared>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let history = state.journal.history(&id).await?.ok_or_else(|| not_found(&id))?;
    Ok(Json(history).into_response())
}

#[derive(Debug, Deserialize)]
struct WaitQuery {
    /// How long to wait for the workflow to finish (at most a minute).
    wait: Option<String>,
}

/// The output once finished; 202 with the status when it has not finished within `wait`.
async fn result(
    State(state): State<Shared>,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = parsed(query)?;
    let wait = match query.wait.as_deref() {
        Some(wait) => parse_duration(wait).map_err(bad_request)?.min(MAX_WAIT),
        None => Duration::ZERO,
    };
    let started = Instant::now();
    loop {
        let workflow = state.journal.workflow(&id).await?.ok_or_else(|| not_found(&id))?;
        if workflow.status.is_final() || started.elapsed() >= wait {
            let status = if workflow.status.is_final() { StatusCode::OK } else { StatusCode::ACCEPTED };
            let body = json!({
                "id": workflow.id,
                "status": workflow.status,
                "output": workflow.output_json,
                "output_wave": workflow.output,
                "error": workflow.error,
            });
            return Ok((status, Json(body)).into_response());
        }
        tokio::time::sleep(WAIT_POLL.min(wait.saturating_sub(started.elapsed()))).await;
    }
}

/// Cancels a workflow wherever it runs (what `host cancel` does).
pub(super) async fn cancel_workflow(state: &Shared, id: &str) -> Result<(StatusCode, serde_json::Value), ApiError> {
    Ok(match state.journal.request_cancel(id).await? {
        CancelOutcome::Unknown => return Err(not_found(id)),
        CancelOutcome::Finished(status) => (
            StatusCode::CONFLICT,
            json!({ "error": format!("workflow {id} already ended: {status}; there is nothing to cancel"), "status": status }),
        ),
        CancelOutcome::Cancelled => (StatusCode::OK, json!({ "id": id, "cancel": "done", "status": "cancelled" })),
        CancelOutcome::Requested { executor } => {
            (StatusCode::ACCEPTED, json!({ "id": id, "cancel": "requested", "executor": executor }))
        }
    })
}

async fn cancel(State(state): State<Shared>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (status, body) = cancel_workflow(&state, &id).await?;
    Ok((status, Json(body)).into_response())
}

impl From<SubmitError> for ApiError {
    fn from(error: SubmitError) -> Self {
        match error {
            SubmitError::Journal(error) | SubmitError::Prepare(PrepareError::Journal(error)) => error.into(),
            SubmitError::IdTaken(_) => Self(StatusCode::CONFLICT, error.to_string()),
            other => bad_request(other.to_string()),
        }
    }
}

/// The submitting client, or a 503 if this host cannot start WebAssembly.
fn client(state: &Shared) -> Result<&crate::worker::Client, ApiError> {
    state.client().map_err(|message| ApiError(StatusCode::SERVICE_UNAVAILABLE, message.to_string()))
}

/// A turn to compile: heavy in CPU and memory, so a few uploads or submissions at a time.
async fn compile_turn(state: &Shared) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
    state
        .compiling
        .acquire()
        .await
        .map_err(|_| ApiError(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping".into()))
}

/// A JSON body, or a 400 saying what is wrong with it.
fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(body)| body).map_err(|rejection| bad_request(rejection.body_text()))
}

/// An optional JSON body: empty means every field's default.
fn optional_body<T: serde::de::DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|error| bad_request(format!("the request body is not valid: {error}")))
}

/// A component digest as given: hex SHA-256, with or without `sha256:`.
fn digest_of(given: &str) -> Result<String, ApiError> {
    let hex = given.strip_prefix("sha256:").unwrap_or(given).to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(bad_request(format!(
            "`{given}` is not a component digest (64 hex digits of SHA-256, as an upload returns)"
        )))
    }
}

#[derive(Debug, Deserialize)]
struct UploadQuery {
    /// The component's file name, for messages and manifests' `[components]` keys.
    name: Option<String>,
    #[serde(rename = "token")]
    _token: Option<String>,
}

/// Stores a component (its bytes as the body) after checking this host can run it.
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
    let document = json!({ "digest": uploaded.digest, "name": name, "size": uploaded.size, "stored": uploaded.stored });
    Ok((status, Json(document)).into_response())
}

/// A submission: components by digest, arguments in WAVE, where and when it runs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    workflow: String,
    #[serde(default)]
    steps: Vec<String>,
    invoke: Option<String>,
    /// One WAVE value per parameter of the entry function.
    #[serde(default)]
    args: Vec<String>,
    /// Step settings, as the TOML of a manifest (retry policies, limits, HTTP and output grants).
    manifest: Option<String>,
    id: Option<String>,
    queue: Option<String>,
    #[serde(default)]
    priority: i32,
    partition_key: Option<String>,
    dedup_key: Option<String>,
    /// Start no sooner than this long from now (`30s`).
    delay: Option<String>,
    /// Start no sooner than this time (RFC 3339).
    start_at: Option<String>,
    /// How long it may take from submission (`--workflow-timeout`).
    timeout: Option<String>,
}

impl SubmitBody {
    fn request(&self) -> Result<(StoredSpec, SubmitRequest), ApiError> {
        let settings = match &self.manifest {
            Some(text) => {
                let manifest = Manifest::parse(text).map_err(|message| bad_request(format!("manifest: {message}")))?;
                Some(manifest.remote_layer("the manifest of the request").map_err(bad_request)?)
            }
            None => None,
        };
        let spec = StoredSpec {
            workflow: digest_of(&self.workflow)?,
            steps: self.steps.iter().map(|step| digest_of(step)).collect::<Result<_, _>>()?,
            invoke: self.invoke.clone(),
            settings,
        };
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
async fn submit(
    State(state): State<Shared>,
    request: Result<Json<SubmitBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (spec, request) = body(request)?.request()?;
    let client = client(&state)?;
    let _turn = compile_turn(&state).await?;
    let submittable = client.prepare_stored(&spec).await?;
    let receipt = client.submit(&submittable, &request).await?;
    let workflow = state.journal.workflow(&receipt.id).await?.ok_or_else(|| not_found(&receipt.id))?;
    let status = if receipt.deduplicated { StatusCode::OK } else { StatusCode::CREATED };
    let document = json!({
        "id": receipt.id,
        "deduplicated": receipt.deduplicated,
        "status": workflow.status,
        "queue": workflow.queue,
        "run_at": workflow.run_at,
    });
    Ok((status, Json(document)).into_response())
}

/// Where a resumed or forked workflow goes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResumeBody {
    /// Its own queue if `None` (the default queue if it had none).
    pub queue: Option<String>,
}

/// Hands a workflow nobody runs (interrupted, or dead) back to a queue, for workers to resume from its journal.
pub(super) async fn resume_workflow(
    state: &Shared,
    id: &str,
    queue: Option<&str>,
) -> Result<(StatusCode, serde_json::Value), ApiError> {
    if let Some(queue) = queue {
        crate::config::check_queue_name(queue).map_err(bad_request)?;
    }
    match state.journal.requeue_workflow(id, queue).await? {
        Requeued::Enqueued { queue } => Ok((StatusCode::OK, json!({ "id": id, "status": "enqueued", "queue": queue }))),
        Requeued::Unknown => Err(not_found(id)),
        Requeued::Live { executor } => Err(ApiError(
            StatusCode::CONFLICT,
            format!("workflow {id} is running on {executor}, which holds its lease; there is nothing to resume"),
        )),
        Requeued::Not(status) if status.is_final() => Err(ApiError(
            StatusCode::CONFLICT,
            format!("workflow {id} already ended: {status}; fork it to run it again"),
        )),
        Requeued::Not(status) => {
            Err(ApiError(StatusCode::CONFLICT, format!("workflow {id} is {status} already: a worker will run it")))
        }
    }
}

async fn resume(State(state): State<Shared>, Path(id): Path<String>, bytes: Bytes) -> Result<Response, ApiError> {
    let request: ResumeBody = optional_body(&bytes)?;
    let (status, document) = resume_workflow(&state, &id, request.queue.as_deref()).await?;
    Ok((status, Json(document)).into_response())
}

/// What to fork: from which step call, under which id, onto which queue.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ForkBody {
    /// The first step call to run again (calls before it are copied); 1 runs everything again.
    pub from_step: Option<i64>,
    pub id: Option<String>,
    /// Its original's queue if `None` (the default queue if it had none).
    pub queue: Option<String>,
}

/// Forks a workflow onto a queue; workers run the new one.
pub(super) async fn fork_workflow(
    state: &Shared,
    id: &str,
    request: ForkBody,
) -> Result<(StatusCode, serde_json::Value), ApiError> {
    let original = state.journal.workflow(id).await?.ok_or_else(|| not_found(id))?;
    let queue = request.queue.or(original.queue).unwrap_or_else(|| DEFAULT_QUEUE.to_string());
    crate::config::check_queue_name(&queue).map_err(bad_request)?;
    let from_step = request.from_step.unwrap_or(1);
    match crate::run::fork(&state.journal, id, from_step, request.id, Some(&queue)).await {
        Ok(new_id) => Ok((
            StatusCode::CREATED,
            json!({ "id": new_id, "forked_from": id, "from_step": from_step, "queue": queue, "status": "enqueued" }),
        )),
        Err(ForkError::Journal(error)) => Err(error.into()),
        Err(error @ ForkError::Unknown(_)) => Err(ApiError(StatusCode::NOT_FOUND, error.to_string())),
        Err(error @ (ForkError::Exists(_) | ForkError::Unfinished { .. })) => {
            Err(ApiError(StatusCode::CONFLICT, error.to_string()))
        }
        Err(error) => Err(bad_request(error.to_string())),
    }
}

async fn fork(State(state): State<Shared>, Path(id): Path<String>, bytes: Bytes) -> Result<Response, ApiError> {
    let request: ForkBody = optional_body(&bytes)?;
    let (status, document) = fork_workflow(&state, &id, request).await?;
    Ok((status, Json(document)).into_response())
}

async fn queues(State(state): State<Shared>) -> Result<Response, ApiError> {
    Ok(Json(json!({ "queues": state.journal.queues().await? })).into_response())
}

async fn workers(State(state): State<Shared>) -> Result<Response, ApiError> {
    Ok(Json(json!({ "workers": state.journal.workers().await? })).into_response())
}

async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_openapi_document_lists_exactly_the_routes() {
        let document: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        let paths = document["paths"].as_object().expect("paths");
        let documented: BTreeSet<(String, String)> = paths
            .iter()
            .flat_map(|(path, methods)| {
                methods.as_object().into_iter().flat_map(|m| m.keys()).map(move |method| (path.clone(), method.clone()))
            })
            .collect();
        let served: BTreeSet<(String, String)> =
            table().into_iter().map(|(path, method, _)| (path.to_string(), method.to_string())).collect();
        assert_eq!(documented, served);
    }

    #[test]
    fn list_filters_are_checked() {
        let query = ListQuery { status: Some("runnin".into()), ..ListQuery::default() };
        assert!(query.filter().is_err());
        let query = ListQuery { limit: Some(0), ..ListQuery::default() };
        assert!(query.filter().is_err());
        let query = ListQuery { after: Some("garbage".into()), ..ListQuery::default() };
        assert!(query.filter().is_err());
        let query = ListQuery { status: Some("running".into()), since: Some("1h".into()), ..ListQuery::default() };
        let (filter, limit) = query.filter().unwrap();
        assert_eq!((filter.status, filter.limit, limit), (Some(WorkflowStatus::Running), 51, 50));
    }

    #[test]
    fn cursors_round_trip() {
        let (time, id) = parse_cursor("2026-11-29T12:00:00.123Z|a|b").unwrap();
        assert_eq!((time.rfc3339().as_str(), id.as_str()), ("2026-11-29T12:00:00.123Z", "a|b"));
    }
}
