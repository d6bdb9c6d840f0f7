//! This process as the owner of the workflows it runs: its executor id, the
//! leases it holds and their stop flags, and one heartbeat that renews every
//! lease in one statement per third of the lease, finds cancel requests and
//! lost leases, and stops the workflows concerned.
//!
//! A lease is self-fencing: the process counts, on its own monotonic clock,
//! from a moment before the statement that set the lease's expiry was sent,
//! and stops the workflow's guest code at that moment plus the lease minus a
//! safety margin ([`safety_margin`]) unless a renewal succeeded — before the
//! lease can lapse by the database's clock, so before any other process may
//! claim the workflow. Each renewal gets only the time left until then.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::journal::{Journal, Lease, Renewal, Timestamp};
use crate::wasm::{EPOCH_TICK, Interrupt, StopReason};

/// The default `--lease`.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// The least safety margin, whatever the lease: what stopping takes (a guest
/// is interrupted within an epoch tick) and what a loaded host may take to
/// get to it, with room to spare.
const MIN_MARGIN: Duration = Duration::from_millis(100);

/// How long a process that stopped its workflows in an outage waits between
/// two checks that the journal answers again.
const REACHABLE_AGAIN_EVERY: Duration = Duration::from_millis(250);

/// The part of `lease` its holder gives up at the end: its own deadline for
/// a lease is when it was granted plus the lease minus this. A tenth of the
/// lease (at least [`MIN_MARGIN`]) covers clocks that run at different rates
/// (the database's, which judges expiry, and this host's monotonic clock:
/// within 0.05 % of each other under NTP, so 1 % is twenty times that), the
/// epoch tick within which guest code notices, and the scheduling delay of a
/// loaded host; a healthy holder renews every third of the lease and never
/// comes near it.
pub fn safety_margin(lease: Duration) -> Duration {
    (lease / 10).max(MIN_MARGIN).max(EPOCH_TICK * 2)
}

/// A process that runs workflows: owns their leases and renews them.
pub struct Executor {
    shared: Arc<Shared>,
    heartbeat: tokio::task::JoinHandle<()>,
}

struct Shared {
    id: String,
    journal: Journal,
    lease: Duration,
    held: Mutex<HashMap<String, Held>>,
    /// Set by [`Executor::drain_all`]: workflows held from then on drain too.
    draining: AtomicBool,
    /// Set when a lease lapsed here because the journal did not answer;
    /// cleared once it answers again. Nothing is claimed meanwhile.
    cut_off: AtomicBool,
    /// Rung when `cut_off` clears.
    reachable: Notify,
    /// Set once the process stops (a signal, a worker's shutdown).
    closing: AtomicBool,
    /// Rung when `closing` is set.
    closed: Notify,
    /// Rung to renew (and look for cancel requests) before the next tick.
    wake: Notify,
    /// Rung when a holding ends.
    released: Notify,
}

struct Held {
    lease: Lease,
    interrupt: Interrupt,
    /// Rung when a message is sent to the workflow.
    mail: Arc<Notify>,
}

impl Executor {
    /// An executor with a fresh id, renewing its leases in `journal` every third of `lease`.
    pub fn start(journal: Journal, lease: Duration) -> Arc<Self> {
        let shared = Arc::new(Shared {
            id: executor_id(),
            journal,
            lease,
            held: Mutex::default(),
            draining: AtomicBool::new(false),
            cut_off: AtomicBool::new(false),
            reachable: Notify::new(),
            closing: AtomicBool::new(false),
            closed: Notify::new(),
            wake: Notify::new(),
            released: Notify::new(),
        });
        let heartbeat = tokio::spawn(heartbeat(Arc::downgrade(&shared)));
        Arc::new(Self { shared, heartbeat })
    }

    /// This process's executor id, recorded as the owner of what it runs.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The journal it writes to.
    pub fn journal(&self) -> &Journal {
        &self.shared.journal
    }

    /// How long a lease lasts unrenewed (by the database's clock).
    pub fn lease(&self) -> Duration {
        self.shared.lease
    }

    /// How long after it was granted (or renewed) this process may act on a lease.
    pub fn validity(&self) -> Duration {
        self.shared.validity()
    }

    /// Holds `lease` until the returned guard is dropped: renews it, and
    /// stops the workflow (through its interrupt) on a cancel request, a lost
    /// lease, at its local deadline unless renewed, or at `deadline`. If this
    /// process still runs the workflow under an older lease (it lost it, then
    /// claimed it again), that run is stopped first and this waits until it
    /// is gone: one run per workflow.
    pub async fn hold(&self, lease: Lease, deadline: Option<Timestamp>) -> Holding {
        let interrupt = Interrupt::default();
        let mail = Arc::new(Notify::new());
        // Counted from before the claim was sent: a claim that took long leaves less (maybe nothing).
        interrupt.hold_until(lease.granted_at + self.validity());
        let (id, epoch) = (lease.workflow_id.clone(), lease.epoch);
        loop {
            let released = self.shared.released.notified();
            {
                let mut held = self.shared.lock();
                match held.get(&id) {
                    Some(older) if older.lease.epoch != epoch => older.interrupt.stop(StopReason::LeaseLost),
                    _ => {
                        if self.shared.draining.load(Ordering::Acquire) {
                            interrupt.drain();
                        }
                        held.insert(id.clone(), Held { lease, interrupt: interrupt.clone(), mail: mail.clone() });
                        break;
                    }
                }
            }
            released.await;
        }
        let timer = deadline.map(|deadline| {
            let interrupt = interrupt.clone();
            tokio::spawn(async move {
                tokio::time::sleep(deadline.since(Timestamp::now())).await;
                interrupt.stop(StopReason::Deadline);
            })
        });
        Holding { shared: self.shared.clone(), id, epoch, interrupt, mail, timer }
    }

    /// Tells workflow `id`, if this process runs it, that a message was sent
    /// to it (announced through NOTIFY); false if it does not run here.
    pub fn deliver(&self, id: &str) -> bool {
        let held = self.shared.lock().get(id).map(|held| held.mail.clone());
        held.inspect(|mail| mail.notify_one()).is_some()
    }

    /// Stops every workflow this process runs (a shutdown also ends the
    /// waits of [`Executor::closing`]).
    pub fn stop_all(&self, reason: StopReason) {
        if reason == StopReason::Shutdown {
            self.close();
        }
        for held in self.shared.lock().values() {
            held.interrupt.stop(reason);
        }
    }

    /// Stops workflow `id` if this process runs it (a cancel announced
    /// through NOTIFY); false if it does not run here.
    pub fn stop(&self, id: &str, reason: StopReason) -> bool {
        let held = self.shared.lock().get(id).map(|held| held.interrupt.clone());
        held.inspect(|interrupt| interrupt.stop(reason)).is_some()
    }

    /// Lets every running attempt finish but starts no other (graceful shutdown).
    pub fn drain_all(&self) {
        self.close();
        let held = self.shared.lock();
        self.shared.draining.store(true, Ordering::Release);
        for held in held.values() {
            held.interrupt.drain();
        }
    }

    fn close(&self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.closed.notify_waiters();
    }

    /// Completes once the process is stopping.
    pub async fn closing(&self) {
        loop {
            let closed = self.shared.closed.notified();
            if self.shared.closing.load(Ordering::Acquire) {
                return;
            }
            closed.await;
        }
    }

    /// Renews now (a cancel request may be waiting), not at the next tick.
    pub fn check_now(&self) {
        self.shared.wake.notify_one();
    }

    /// True while the leases of this process lapsed for want of an answer
    /// from the journal and it has not answered since: claim nothing.
    pub fn cut_off(&self) -> bool {
        self.shared.cut_off.load(Ordering::Acquire)
    }

    /// Completes once the process is not (or no longer) cut off.
    pub async fn reachable(&self) {
        loop {
            let reachable = self.shared.reachable.notified();
            if !self.cut_off() {
                return;
            }
            reachable.await;
        }
    }

    /// How many workflows it runs now.
    pub fn running(&self) -> usize {
        self.shared.lock().len()
    }

    /// The ids of the workflows it runs now.
    pub fn workflows(&self) -> Vec<String> {
        self.shared.lock().keys().cloned().collect()
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn validity(&self) -> Duration {
        self.lease.saturating_sub(safety_margin(self.lease))
    }

    fn set_cut_off(&self, cut_off: bool) {
        if self.cut_off.swap(cut_off, Ordering::AcqRel) && !cut_off {
            tracing::info!(source = "host", "the journal {} answers again; claiming again", self.journal.location());
            self.reachable.notify_waiters();
        }
    }
}

/// A held lease: the workflow's stop flag; dropping it stops renewing.
pub struct Holding {
    shared: Arc<Shared>,
    id: String,
    /// The epoch held: a later claim of the same workflow by this process is another holding.
    epoch: i64,
    interrupt: Interrupt,
    mail: Arc<Notify>,
    timer: Option<tokio::task::JoinHandle<()>>,
}

impl Holding {
    /// The workflow's stop flag.
    pub fn interrupt(&self) -> &Interrupt {
        &self.interrupt
    }

    /// Rung when a message is sent to the workflow.
    pub fn mail(&self) -> &Arc<Notify> {
        &self.mail
    }

    /// `lease` as last renewed while held here: a holding that follows this
    /// one counts its local deadline from the latest renewal, not the grant.
    pub fn renewed(&self, lease: &Lease) -> Lease {
        let renewed_at = self
            .interrupt
            .lease_deadline()
            .and_then(|deadline| deadline.checked_sub(self.shared.validity()))
            .map_or(lease.granted_at, |at| at.max(lease.granted_at));
        Lease { granted_at: renewed_at, ..lease.clone() }
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        let mut held = self.shared.lock();
        if held.get(&self.id).is_some_and(|entry| entry.lease.epoch == self.epoch) {
            held.remove(&self.id);
        }
        drop(held);
        self.shared.released.notify_waiters();
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
    }
}

/// Renews every held lease each third of the lease (or when rung), until the
/// executor is gone; each renewal gets at most the time left before the
/// earliest local deadline of the leases it renews. Leases past their local
/// deadline are not renewed: their workflows have stopped (their interrupts
/// say so, and their runners tell what became of them), and the process is
/// cut off until the journal answers again.
async fn heartbeat(shared: std::sync::Weak<Shared>) {
    let mut next = shared.upgrade().map_or_else(Instant::now, |strong| Instant::now() + strong.lease / 3);
    let mut failing = false;
    loop {
        let Some(strong) = shared.upgrade() else { return };
        let period = strong.lease / 3;
        let wake = async { strong.wake.notified().await };
        tokio::select! {
            () = tokio::time::sleep_until(next.into()) => {}
            () = wake => {}
        }
        let held: Vec<(Lease, Interrupt)> =
            strong.lock().values().map(|held| (held.lease.clone(), held.interrupt.clone())).collect();
        let (lapsed, live): (Vec<_>, Vec<_>) = held.into_iter().partition(|(_, interrupt)| interrupt.lease_lapsed());
        for (_, interrupt) in &lapsed {
            interrupt.stop(StopReason::LeaseExpired);
        }
        if !lapsed.is_empty() {
            strong.set_cut_off(true);
        }
        if live.is_empty() {
            next = Instant::now() + period;
            if strong.cut_off.load(Ordering::Acquire) {
                if strong.journal.answers(period).await {
                    strong.set_cut_off(false);
                } else {
                    next = Instant::now() + REACHABLE_AGAIN_EVERY;
                }
            }
            continue;
        }
        let now = Instant::now();
        let earliest = live.iter().filter_map(|(_, interrupt)| interrupt.lease_deadline()).min();
        let within = earliest.map_or(strong.lease, |deadline| deadline.saturating_duration_since(now));
        if within.is_zero() {
            // Lapsing as we speak: reported on the next turn, at once.
            next = now;
            continue;
        }
        let leases: Vec<Lease> = live.iter().map(|(lease, _)| lease.clone()).collect();
        match strong.journal.renew_leases(&strong.id, &leases, strong.lease, within).await {
            Ok((renewals, sent)) => {
                let until = sent + strong.validity();
                for ((lease, interrupt), renewal) in live.iter().zip(renewals) {
                    match renewal {
                        Renewal::Held { cancel } => {
                            interrupt.hold_until(until);
                            if cancel {
                                interrupt.stop(StopReason::Cancelled);
                            }
                        }
                        Renewal::Lost => {
                            tracing::error!(
                                source = "host",
                                "workflow {}: another executor took over its lease; stopping it here",
                                lease.workflow_id
                            );
                            interrupt.stop(StopReason::LeaseLost);
                        }
                    }
                }
                if std::mem::take(&mut failing) {
                    tracing::info!(source = "host", "lease renewals succeed again");
                }
                strong.set_cut_off(false);
                next = sent + period;
            }
            Err(error) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(source = "host", "cannot renew leases: {error}");
                }
                if earliest.is_some_and(|deadline| Instant::now() >= deadline) {
                    strong.set_cut_off(true);
                }
                // Its time is up, or it failed for good: look again soon (lapsed leases are reported then).
                next = Instant::now() + REACHABLE_AGAIN_EVERY;
            }
        }
    }
}

/// Who runs the workflows of this process: `host:pid:nonce`.
pub fn executor_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into());
    // The random part keeps two hosts with one name and pid (containers) apart.
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &nonce[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_is_a_tenth_of_the_lease_and_never_less_than_stopping_takes() {
        assert_eq!(safety_margin(Duration::from_secs(10)), Duration::from_secs(1));
        assert_eq!(safety_margin(Duration::from_secs(2)), Duration::from_millis(200));
        assert_eq!(safety_margin(Duration::from_millis(500)), MIN_MARGIN);
        assert!(safety_margin(Duration::from_secs(1)) >= EPOCH_TICK * 2);
    }
}
