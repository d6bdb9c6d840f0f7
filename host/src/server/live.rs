//! Server-sent events: `/events` tells a page that what it shows changed,
//! and the page fetches its live part again. The stream reads the journal
//! a few times a second (cheap reads, the same on SQLite and PostgreSQL).

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures_util::Stream;
use serde::Deserialize;

use super::Shared;
use crate::journal::WorkflowFilter;

/// How often a stream looks for changes.
const POLL: Duration = Duration::from_millis(250);

pub(super) fn routes() -> Router<Shared> {
    Router::new().route("/events", get(events))
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    /// Follow one workflow (its page); without it, the lists.
    workflow: Option<String>,
}

async fn events(
    State(state): State<Shared>,
    Query(query): Query<EventsQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let start = (state, query.workflow, None::<String>);
    let stream = futures_util::stream::unfold(start, |(state, workflow, mut last)| async move {
        loop {
            let print = fingerprint(&state, workflow.as_deref()).await;
            match &last {
                Some(previous) if *previous != print => {
                    return Some((Ok(Event::default().data("changed")), (state, workflow, Some(print))));
                }
                None => last = Some(print),
                Some(_) => {}
            }
            tokio::time::sleep(POLL).await;
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// What a page shows, condensed: it differs whenever the page would.
async fn fingerprint(state: &Shared, workflow: Option<&str>) -> String {
    let journal = &state.journal;
    let read = async {
        Ok::<_, crate::journal::JournalError>(match workflow {
            Some(id) => {
                let row = journal.workflow(id).await?;
                let attempts = journal.attempts(id).await?;
                let last = attempts.last().map(|a| (a.started_at, a.finished_at, a.outcome));
                format!("{:?}", (row.map(|w| (w.status, w.updated_at)), attempts.len(), last))
            }
            None => {
                let filter = WorkflowFilter { limit: 50, ..WorkflowFilter::default() };
                let rows = journal.list_workflows(&filter).await?;
                let queues = journal.queues().await?;
                let workers = journal.workers().await?;
                format!(
                    "{:?}",
                    (
                        rows.iter().map(|w| (&w.id, w.status, w.updated_at)).collect::<Vec<_>>(),
                        queues.iter().map(|q| (q.ready, q.delayed, q.running)).collect::<Vec<_>>(),
                        workers.iter().map(|w| (&w.id, w.running, w.last_seen_at, w.stopped_at)).collect::<Vec<_>>(),
                    )
                )
            }
        })
    };
    read.await.unwrap_or_else(|error| error.to_string())
}
