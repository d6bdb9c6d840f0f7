//! Group commit: the attempt writes of every workflow in this process go to
//! one writer task, which commits whatever is queued in one transaction and
//! only then tells each writer that its rows are durable.
//!
//! Writes are *urgent* when a workflow waits on them (a call's final outcome)
//! and *lazy* otherwise (an attempt's start, a failed attempt that will be
//! retried). A batch is committed as soon as it holds an urgent write, or
//! [`LAZY_WINDOW`] after its first lazy one: a no-op step's start and finish
//! land in one row of one transaction, and concurrent workflows share commits.
//! Nothing a workflow can observe is released before it is durable; what the
//! lazy window trades is that a crash within it may forget an attempt that
//! had just started (it runs again under the same number).
//!
//! Every batch is idempotent on its natural keys (workflow, seq, attempt):
//! when a connection is lost during `COMMIT` the outcome is unknown, and the
//! same batch is written again on a fresh connection — rows it already wrote
//! are neither duplicated nor lost. Each write is fenced by its lease epoch.

mod plan;
mod sql;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use tokio::sync::{Notify, mpsc, oneshot};

use super::faults::Weather;
use super::{AttemptEnd, Backend, CallEnd, JournalError, Timestamp};

/// How long a lazy write may wait for company before it is committed alone.
pub const LAZY_WINDOW: Duration = Duration::from_millis(5);

/// The most writes one transaction carries (keeps statements under the
/// databases' bound-parameter limits).
pub(super) const MAX_BATCH: usize = 256;

/// The most often one process tells listeners that attempts were journaled.
const NOTICE_EVERY: Duration = Duration::from_millis(100);

/// A step call's first row, owned for the trip to the writer.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct NewCall {
    pub step: String,
    pub input: String,
    pub input_json: Json,
    pub max_attempts: i32,
}

/// One attempt write, addressed to a call of a workflow held under `epoch`.
#[derive(Debug)]
pub(super) struct Write {
    pub workflow_id: String,
    pub executor: String,
    pub epoch: i64,
    pub seq: i64,
    pub attempt: i32,
    pub change: Change,
}

#[derive(Debug)]
pub(super) enum Change {
    Start { at: Timestamp, new_call: Option<NewCall> },
    Finish { end: AttemptEnd, call_end: Option<CallEnd> },
}

impl Write {
    /// A write someone is about to wait for: commit without lingering.
    fn urgent(&self) -> bool {
        matches!(&self.change, Change::Finish { call_end: Some(_), .. })
    }
}

/// A write on its way to the database.
#[must_use = "a journal write is durable only once `durable` returns Ok"]
pub struct PendingWrite {
    /// `None` once [`PendingWrite::failed`] saw the write committed.
    receiver: Option<oneshot::Receiver<Result<(), JournalError>>>,
    location: Arc<str>,
}

impl PendingWrite {
    /// Waits until the write is committed (or failed).
    pub async fn durable(self) -> Result<(), JournalError> {
        match self.receiver {
            Some(receiver) => {
                receiver.await.unwrap_or_else(|_| Err(JournalError::WriterGone { location: self.location.to_string() }))
            }
            None => Ok(()),
        }
    }

    /// The write's error, if it has already failed; `None` while pending or once committed.
    pub fn failed(&mut self) -> Option<JournalError> {
        let result = match self.receiver.as_mut()?.try_recv() {
            Err(oneshot::error::TryRecvError::Empty) => return None,
            Ok(result) => result.err(),
            Err(oneshot::error::TryRecvError::Closed) => {
                Some(JournalError::WriterGone { location: self.location.to_string() })
            }
        };
        self.receiver = None;
        result
    }
}

/// Counts of what the writer committed, to measure commits per step.
#[derive(Debug, Default)]
pub(super) struct CommitCounters {
    /// Transactions committed by the group-commit writer.
    pub batches: AtomicU64,
    /// Attempt writes those transactions carried.
    pub writes: AtomicU64,
    /// Time spent writing and committing them, µs.
    pub micros: AtomicU64,
}

struct Queued {
    write: Write,
    queued_at: Instant,
    done: oneshot::Sender<Result<(), JournalError>>,
}

/// The sending side of the writer task; the task ends when every clone is dropped.
#[derive(Clone)]
pub(super) struct Writer {
    sender: Arc<Sender>,
    location: Arc<str>,
    pub counters: Arc<CommitCounters>,
}

/// The queue's sending end and the writer's doorbell. Lazy writes ring it
/// only to arm the writer's timer, so a run of lazy writes costs the writer
/// task one wake-up, not one each.
struct Sender {
    queue: Option<mpsc::UnboundedSender<Queued>>,
    wake: Arc<Wake>,
    batching: bool,
}

#[derive(Default)]
struct Wake {
    notify: Notify,
    /// A lazy write is queued and the writer was told since its last commit.
    armed: AtomicBool,
}

impl Drop for Sender {
    fn drop(&mut self) {
        // Close the queue first, then wake the writer to see it closed.
        self.queue.take();
        self.wake.notify.notify_one();
    }
}

impl Writer {
    /// Starts the writer task on the current tokio runtime. With `batching`
    /// off, every write is its own transaction (the behaviour before group
    /// commit, kept to measure against).
    pub fn spawn(backend: Backend, location: &str, batching: bool, weather: Weather) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        let location: Arc<str> = location.into();
        let counters = Arc::new(CommitCounters::default());
        let wake = Arc::new(Wake::default());
        let task = Task {
            backend,
            location: location.clone(),
            counters: counters.clone(),
            batching,
            weather,
            last_notice: std::sync::Mutex::default(),
        };
        tokio::spawn(task.run(receiver, wake.clone()));
        Self { sender: Arc::new(Sender { queue: Some(queue), wake, batching }), location, counters }
    }

    /// Queues `write`; the returned handle resolves once it is durable.
    pub fn send(&self, write: Write) -> PendingWrite {
        let (done, receiver) = oneshot::channel();
        let ring = write.urgent() || !self.sender.batching || !self.sender.wake.armed.swap(true, Ordering::AcqRel);
        let queued = Queued { write, queued_at: Instant::now(), done };
        match &self.sender.queue {
            Some(queue) => {
                if let Err(rejected) = queue.send(queued) {
                    let _ = rejected.0.done.send(Err(JournalError::WriterGone { location: self.location.to_string() }));
                }
            }
            None => {
                let _ = queued.done.send(Err(JournalError::WriterGone { location: self.location.to_string() }));
            }
        }
        if ring {
            self.sender.wake.notify.notify_one();
        }
        PendingWrite { receiver: Some(receiver), location: self.location.clone() }
    }
}

struct Task {
    backend: Backend,
    location: Arc<str>,
    counters: Arc<CommitCounters>,
    batching: bool,
    weather: Weather,
    /// When a batch last carried a progress notice (PostgreSQL).
    last_notice: std::sync::Mutex<Option<Instant>>,
}

impl Task {
    async fn run(self, mut receiver: mpsc::UnboundedReceiver<Queued>, wake: Arc<Wake>) {
        // Writes held back from the last batch, oldest first.
        let mut carried: Vec<Queued> = Vec::new();
        let mut open = true;
        loop {
            let mut batch = std::mem::take(&mut carried);
            loop {
                open &= drain(&mut receiver, &mut batch);
                let ready = !open
                    || (!self.batching && !batch.is_empty())
                    || batch.len() >= MAX_BATCH
                    || batch.iter().any(|queued| queued.write.urgent());
                if ready {
                    break;
                }
                let Some(first) = batch.first() else {
                    wake.notify.notified().await;
                    continue;
                };
                let deadline = first.queued_at + LAZY_WINDOW;
                tokio::select! {
                    () = wake.notify.notified() => {}
                    () = tokio::time::sleep_until(deadline.into()) => break,
                }
            }
            if batch.is_empty() && !open {
                return;
            }
            if !self.batching {
                carried = batch.split_off(1.min(batch.len()));
            } else if open && batch.len() < MAX_BATCH {
                carried = hold_back(&mut batch, Instant::now());
            }
            // Writes queued from here on are drained before the writer waits again.
            wake.armed.store(!carried.is_empty(), Ordering::Release);
            self.commit(batch).await;
        }
    }

    /// Writes `batch` in one transaction (again, through outages) and reports to each writer.
    async fn commit(&self, batch: Vec<Queued>) {
        if batch.is_empty() {
            return;
        }
        let (writes, senders): (Vec<Write>, Vec<_>) =
            batch.into_iter().map(|queued| (queued.write, queued.done)).unzip();
        let began = Instant::now();
        let notice = self.notice_due();
        let written =
            self.weather.retry(|| sql::write(&self.backend, &writes, notice), || self.backend.reconnect()).await;
        match written {
            Ok(refused) => {
                let took = began.elapsed();
                crate::telemetry::commit(took, writes.len());
                self.counters.micros.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
                self.counters.batches.fetch_add(1, Ordering::Relaxed);
                self.counters.writes.fetch_add(writes.len() as u64, Ordering::Relaxed);
                for (write, sender) in writes.iter().zip(senders) {
                    let result = if refused.contains(&(write.workflow_id.as_str(), write.epoch)) {
                        Err(JournalError::NotOwner {
                            location: self.location.to_string(),
                            id: write.workflow_id.clone(),
                        })
                    } else {
                        Ok(())
                    };
                    let _ = sender.send(result);
                }
            }
            Err(outage) => {
                let lasted = outage.lasted.is_some();
                let message = match outage.lasted {
                    Some(lasted) => format!(
                        "unreachable for {} ({})",
                        humantime::format_duration(Duration::from_secs(lasted.as_secs())),
                        outage.error
                    ),
                    None => outage.error.to_string(),
                };
                for sender in senders {
                    let _ = sender.send(Err(JournalError::Batch {
                        location: self.location.to_string(),
                        message: message.clone(),
                        outage: lasted,
                    }));
                }
            }
        }
    }

    /// Whether this batch should tell listeners (dashboards) that attempts
    /// were journaled: at most every [`NOTICE_EVERY`], so a busy journal
    /// does not pay a notification per commit (listeners look again a moment after each).
    fn notice_due(&self) -> bool {
        if !matches!(self.backend, Backend::Postgres(_)) {
            return false;
        }
        let mut last = self.last_notice.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let due = last.is_none_or(|at| now.duration_since(at) >= NOTICE_EVERY);
        if due {
            *last = Some(now);
        }
        due
    }
}

/// Takes out of `batch` the lazy writes younger than [`LAZY_WINDOW`] of
/// workflows with nothing urgent in it: their finish is likely to follow
/// and join them in one row. A workflow's writes keep their order.
fn hold_back(batch: &mut Vec<Queued>, now: Instant) -> Vec<Queued> {
    let urgent: HashSet<String> =
        batch.iter().filter(|queued| queued.write.urgent()).map(|queued| queued.write.workflow_id.clone()).collect();
    let (kept, held): (Vec<Queued>, Vec<Queued>) = std::mem::take(batch)
        .into_iter()
        .partition(|queued| urgent.contains(&queued.write.workflow_id) || queued.queued_at + LAZY_WINDOW <= now);
    *batch = kept;
    held
}

/// Moves what is queued into `batch` (up to [`MAX_BATCH`]); false once the queue is closed and empty.
fn drain(receiver: &mut mpsc::UnboundedReceiver<Queued>, batch: &mut Vec<Queued>) -> bool {
    while batch.len() < MAX_BATCH {
        match receiver.try_recv() {
            Ok(queued) => batch.push(queued),
            Err(mpsc::error::TryRecvError::Empty) => return true,
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::super::{AttemptOutcome, CallStatus};
    use super::*;

    pub(super) fn start(seq: i64, attempt: i32, new: bool) -> Write {
        let new_call =
            new.then(|| NewCall { step: "s".into(), input: "(1)".into(), input_json: Json::Null, max_attempts: 3 });
        Write {
            workflow_id: "w".into(),
            executor: "e".into(),
            epoch: 1,
            seq,
            attempt,
            change: Change::Start { at: Timestamp::from_millis(10), new_call },
        }
    }

    pub(super) fn finish(seq: i64, attempt: i32, result: Option<CallStatus>) -> Write {
        let end = AttemptEnd {
            outcome: if result.is_some() { AttemptOutcome::Ok } else { AttemptOutcome::Failed },
            kind: None,
            message: None,
            retry_at: None,
            finished_at: Some(Timestamp::from_millis(20)),
            stdout: None,
            stderr: None,
        };
        let call_end =
            result.map(|status| CallEnd { status, output: Some("ok(1)".to_string()), output_json: Some(Json::Null) });
        Write {
            workflow_id: "w".into(),
            executor: "e".into(),
            epoch: 1,
            seq,
            attempt,
            change: Change::Finish { end, call_end },
        }
    }

    fn queued(write: Write, age: Duration, now: Instant) -> Queued {
        Queued { write, queued_at: now - age, done: oneshot::channel().0 }
    }

    #[test]
    fn young_lazy_writes_wait_unless_their_workflow_has_something_urgent() {
        let now = Instant::now();
        let young = Duration::from_micros(100);
        let mut other = start(1, 1, true);
        other.workflow_id = "other".into();
        let mut old = start(1, 1, true);
        old.workflow_id = "old".into();
        let mut batch = vec![
            queued(start(1, 1, true), young, now),
            queued(other, young, now),
            queued(old, LAZY_WINDOW * 2, now),
            queued(finish(1, 1, Some(CallStatus::Succeeded)), young, now),
        ];
        let held = hold_back(&mut batch, now);
        let ids = |queued: &[Queued]| queued.iter().map(|q| q.write.workflow_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&held), ["other"]);
        assert_eq!(ids(&batch), ["w", "old", "w"]);
    }

    #[test]
    fn only_a_final_outcome_is_urgent() {
        assert!(!start(1, 1, true).urgent());
        assert!(!finish(1, 1, None).urgent());
        assert!(finish(1, 1, Some(CallStatus::Succeeded)).urgent());
    }
}
