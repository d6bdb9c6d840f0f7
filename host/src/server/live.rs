//! Server-sent events: `/events` tells a page that what it shows changed,
//! and the page fetches its live part again. On PostgreSQL the server
//! LISTENs once for every stream (the journal's writers NOTIFY as they
//! commit attempts, submit, cancel or requeue), and each stream looks at
//! the journal when woken, again a moment later, and every few seconds in
//! case a notice was missed; on SQLite (or through a pooler) streams poll.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::watch;

use super::Shared;
use crate::journal::{EVENTS, Journal, PROGRESS, WorkflowFilter};

/// How often a stream looks for changes without notices.
const POLL: Duration = Duration::from_millis(250);

/// With notices: how long after one a stream looks again (writers notify at
/// most every 100 ms, so what they wrote just after a notice is seen then).
const FOLLOW_UP: Duration = Duration::from_millis(250);

/// With notices: how often a stream looks anyway (a change nobody announced).
const SAFETY_POLL: Duration = Duration::from_secs(2);

pub(super) fn routes() -> Router<Shared> {
    Router::new().route("/events", get(events))
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    /// Follow one workflow (its page); without it, the lists.
    workflow: Option<String>,
}

/// Listens for the journal's notices for every stream of this server: the
/// count goes up with each; `None` where there are none to hear (streams poll).
pub(super) async fn notices(journal: &Journal) -> Option<watch::Receiver<u64>> {
    let listener = match journal.listen_to(&[EVENTS, PROGRESS]).await {
        Ok(Some(listener)) => listener,
        Ok(None) => return None,
        Err(error) => {
            tracing::warn!(source = "host", "the dashboard cannot LISTEN ({error}); its pages poll instead");
            return None;
        }
    };
    let (sender, receiver) = watch::channel(0u64);
    let journal = journal.clone();
    tokio::spawn(async move {
        let mut listener = listener;
        loop {
            loop {
                tokio::select! {
                    // The server stopped: every stream and the state are gone.
                    () = sender.closed() => return,
                    heard = listener.next() => match heard {
                        Some(_) => sender.send_modify(|count| *count += 1),
                        None => break,
                    },
                }
            }
            // The connection was lost: anything missed is looked for, then it listens again.
            sender.send_modify(|count| *count += 1);
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Ok(Some(again)) = journal.listen_to(&[EVENTS, PROGRESS]).await {
                listener = again;
            }
        }
    });
    Some(receiver)
}

async fn events(
    State(state): State<Shared>,
    Query(query): Query<EventsQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let notices = state.notices().await;
    let start = Watch { state, workflow: query.workflow, last: None, notices, follow_up: false };
    let stream = futures_util::stream::unfold(start, |mut watch| async move {
        loop {
            let print = fingerprint(&watch.state, watch.workflow.as_deref()).await;
            let changed = watch.last.as_ref().is_some_and(|previous| *previous != print);
            watch.last = Some(print);
            if changed {
                return Some((Ok(Event::default().data("changed")), watch));
            }
            watch.wait().await;
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// One stream's view: what it follows and what it last saw.
struct Watch {
    state: Shared,
    workflow: Option<String>,
    last: Option<String>,
    notices: Option<watch::Receiver<u64>>,
    /// A notice woke it: look once more shortly.
    follow_up: bool,
}

impl Watch {
    /// Until it is time to look at the journal again.
    async fn wait(&mut self) {
        let Some(notices) = &mut self.notices else {
            tokio::time::sleep(POLL).await;
            return;
        };
        let timeout = if std::mem::take(&mut self.follow_up) { FOLLOW_UP } else { SAFETY_POLL };
        tokio::select! {
            heard = notices.changed() => {
                notices.borrow_and_update();
                self.follow_up = true;
                if heard.is_err() {
                    self.notices = None;
                }
            }
            () = tokio::time::sleep(timeout) => {}
        }
    }
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
