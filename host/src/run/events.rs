//! The journal's events as this process hears them (PostgreSQL LISTEN on a
//! connection of its own): a cancel of a workflow it runs stops it at once,
//! work on one of its queues rings the worker. A lost connection is
//! re-established; work announced meanwhile is found by the next poll.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::executor::Executor;
use crate::journal::Listener;
use crate::wasm::StopReason;

/// How long the NOTIFY self-test waits for its own announcement.
const PROBE_WAIT: Duration = Duration::from_secs(2);

/// How this process learns of new work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wakeups {
    /// LISTEN/NOTIFY, with the poll as a safety net.
    Notify,
    /// Polling only: SQLite, a transaction pooler, `--poll-only`, or NOTIFY
    /// was not delivered.
    Poll,
}

/// What one event means to this process.
#[derive(Debug, PartialEq, Eq)]
enum Event<'a> {
    Cancel(&'a str),
    Message(&'a str),
    Work,
    Other,
}

/// Reads an event's payload: `cancel:ID`, `message:ID`, `submit:QUEUE`,
/// `release:QUEUE`, `release:*`, `schedule:*`.
fn parse<'a>(payload: &'a str, queues: &[String]) -> Event<'a> {
    match payload.split_once(':') {
        Some(("cancel", id)) => Event::Cancel(id),
        Some(("message", id)) => Event::Message(id),
        Some(("schedule", _)) => Event::Work,
        Some(("submit" | "release", "*")) => Event::Work,
        Some(("submit" | "release", queue)) if queues.iter().any(|name| name == queue) => Event::Work,
        _ => Event::Other,
    }
}

impl Executor {
    /// Listens for the journal's events for as long as this executor lives:
    /// stops a workflow it runs on its cancel, rings `work` when one of
    /// `queues` has work. With `probe`, first checks that an announcement
    /// comes back (a pooler may swallow it); says which wake-ups hold.
    pub async fn listen(self: &Arc<Self>, queues: Vec<String>, work: Arc<Notify>, probe: bool) -> Wakeups {
        let journal = self.journal().clone();
        let mut listener = match journal.listen().await {
            Ok(Some(listener)) => listener,
            Ok(None) => return Wakeups::Poll,
            Err(error) => {
                tracing::warn!(source = "host", "cannot LISTEN for the journal's events ({error}); polling");
                return Wakeups::Poll;
            }
        };
        if probe && !self_test(&journal, &mut listener, self.id()).await {
            tracing::warn!(
                source = "host",
                "NOTIFY is not delivered on this connection (a pooler in transaction mode, or an engine without \
                 LISTEN/NOTIFY?); polling instead"
            );
            return Wakeups::Poll;
        }
        let executor = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(payload) = listener.next().await else {
                    // The connection was lost: the next call reconnects; anything missed is polled for.
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    work.notify_one();
                    continue;
                };
                let Some(executor) = executor.upgrade() else { return };
                match parse(&payload, &queues) {
                    Event::Cancel(id) => {
                        if executor.stop(id, StopReason::Cancelled) {
                            tracing::info!(source = "host", "Workflow {id}: cancel requested; stopping it");
                        }
                    }
                    Event::Message(id) => {
                        executor.deliver(id);
                    }
                    Event::Work => work.notify_one(),
                    Event::Other => {}
                }
            }
        });
        Wakeups::Notify
    }
}

/// Announces a probe and waits for it on `listener`.
async fn self_test(journal: &crate::journal::Journal, listener: &mut Listener, id: &str) -> bool {
    let probe = format!("probe:{id}");
    if journal.announce(&probe).await.is_err() {
        return false;
    }
    let heard = async {
        while let Some(payload) = listener.next().await {
            if payload == probe {
                return true;
            }
        }
        false
    };
    tokio::time::timeout(PROBE_WAIT, heard).await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_for_this_process_only() {
        let queues = vec!["emails".to_string()];
        assert_eq!(parse("cancel:0193-abc", &queues), Event::Cancel("0193-abc"));
        assert_eq!(parse("submit:emails", &queues), Event::Work);
        assert_eq!(parse("release:emails", &queues), Event::Work);
        assert_eq!(parse("release:*", &queues), Event::Work);
        assert_eq!(parse("submit:reports", &queues), Event::Other);
        assert_eq!(parse("probe:x", &queues), Event::Other);
        assert_eq!(parse("", &queues), Event::Other);
        // An id with colons stays whole.
        assert_eq!(parse("cancel:a:b", &queues), Event::Cancel("a:b"));
        assert_eq!(parse("message:order@2026", &queues), Event::Message("order@2026"));
        assert_eq!(parse("schedule:*", &queues), Event::Work);
    }
}
