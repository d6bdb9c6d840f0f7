//! Who waits for which workflow's end, in this process: a finish written by
//! any worker is announced on the `ended` NOTIFY channel (PostgreSQL), one
//! listening connection per process hears it and wakes that workflow's
//! waiters, so a result is seen when it is committed rather than at the next
//! poll. Waiters still poll as a safety net: SQLite, a transaction pooler, a
//! lost connection, and the ends written elsewhere than a worker's finish (a
//! cancel in the queue, a timeout, a dead workflow) are not announced.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OnceCell, watch};

use super::{Journal, JournalError};

/// The NOTIFY channel (per schema) workflows' finishes are announced on; its payload is their ids, one per line.
pub const ENDED: &str = "ended";

/// Waiters registered at once past which the ones nobody holds any more are dropped.
const PRUNE_PAST: usize = 1024;

/// This process's waiters by workflow id, and whether the channel is heard.
#[derive(Default)]
pub(super) struct Ends {
    waiting: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Set once: whether a listener runs (false on SQLite or through a pooler);
    /// left unset while LISTEN fails, so a later wait tries again.
    listening: OnceCell<bool>,
}

impl Ends {
    /// Wakes the waiters of `id` (every waiter, when `id` is `None`: notices may have been missed).
    fn wake(&self, id: Option<&str>) {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        match id {
            Some(id) => {
                if let Some(sender) = waiting.remove(id) {
                    sender.send_modify(|notices| *notices += 1);
                }
            }
            None => {
                for sender in waiting.values() {
                    sender.send_modify(|notices| *notices += 1);
                }
                waiting.retain(|_, sender| sender.receiver_count() > 0);
            }
        }
    }
}

/// A registration for one workflow's end; the notice is kept from the
/// moment it is made, so a check of the row after it misses nothing.
pub struct EndWatch {
    /// `None` where ends are not announced (SQLite, a pooler, no LISTEN): it polls.
    notices: Option<watch::Receiver<u64>>,
}

impl EndWatch {
    /// Returns when the workflow's end was announced, or after `poll`,
    /// whichever comes first (at once if it was announced since the watch was made).
    pub async fn notice_or(&mut self, poll: Duration) {
        let Some(notices) = &mut self.notices else {
            tokio::time::sleep(poll).await;
            return;
        };
        // Closed: the notice was taken already (its registration is gone), so only the poll is left.
        if tokio::time::timeout(poll, notices.changed()).await.is_ok_and(|changed| changed.is_err()) {
            tokio::time::sleep(poll).await;
        }
    }
}

impl Journal {
    /// Watches for workflow `id`'s end, announced when any worker finishes
    /// it; make it before reading the row, then wait with [`EndWatch::notice_or`].
    pub async fn watch_end(&self, id: &str) -> EndWatch {
        if !matches!(self.ends.listening.get_or_try_init(|| self.listen_for_ends()).await, Ok(true)) {
            return EndWatch { notices: None };
        }
        let mut waiting = self.ends.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if waiting.len() >= PRUNE_PAST {
            waiting.retain(|_, sender| sender.receiver_count() > 0);
        }
        let notices = waiting.entry(id.to_string()).or_insert_with(|| watch::channel(0).0).subscribe();
        EndWatch { notices: Some(notices) }
    }

    /// Starts this process's listener on the `ended` channel; false where
    /// there can be none, an error when LISTEN failed (this wait polls).
    async fn listen_for_ends(&self) -> Result<bool, JournalError> {
        let mut listener = match self.listen_to(&[ENDED]).await {
            Ok(Some(listener)) => listener,
            Ok(None) => return Ok(false),
            Err(error) => {
                tracing::debug!(source = "host", "cannot LISTEN for workflows' ends ({error}); this wait polls");
                return Err(error);
            }
        };
        let ends = Arc::downgrade(&self.ends);
        tokio::spawn(async move {
            loop {
                let payload = listener.next().await;
                let Some(ends) = ends.upgrade() else { return };
                match payload {
                    Some(ids) => ids.lines().for_each(|id| ends.wake(Some(id))),
                    None => {
                        // The connection was lost: whatever ended meanwhile is found by the waiters' polls.
                        ends.wake(None);
                        drop(ends);
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
            }
        });
        Ok(true)
    }
}
