//! The JSON API under `/api/v1`: the CLI's `-o json` documents over HTTP.
//! Its OpenAPI document (`openapi.json`, served at `/api/v1/openapi.json`)
//! is checked against these routes by a test.

use std::time::{Duration, Instant};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::Shared;
use crate::config::parse_duration;
use crate::journal::{CancelOutcome, JournalError, Timestamp, WorkflowFilter, WorkflowRecord, WorkflowStatus};

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
        ("/api/v1/workflows/{id}/cancel", "post", post(cancel)),
        ("/api/v1/queues", "get", get(queues)),
        ("/api/v1/workers", "get", get(workers)),
        ("/api/v1/openapi.json", "get", get(openapi)),
    ]
}

pub(super) fn routes() -> Router<Shared> {
    table().into_iter().fold(Router::new(), |router, (path, _, handler)| router.route(path, handler))
}

/// An API error: a status and `{"error": message}`.
pub(super) struct ApiError(StatusCode, String);

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
