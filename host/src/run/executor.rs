//! This process as the owner of the workflows it runs: its executor id, the
//! leases it holds and their stop flags, and one heartbeat that renews every
//! lease in one statement per third of the lease, finds cancel requests and
//! lost leases, and stops the workflows concerned.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use crate::journal::{Journal, JournalError, Lease, Renewal, Timestamp};
use crate::wasm::{Interrupt, StopReason};

/// The default `--lease`.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

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
    /// Rung to renew (and look for cancel requests) before the next tick.
    wake: Notify,
    /// Rung when a holding ends.
    released: Notify,
}

struct Held {
    lease: Lease,
    interrupt: Interrupt,
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

    /// How long a lease lasts unrenewed.
    pub fn lease(&self) -> Duration {
        self.shared.lease
    }

    /// When a lease taken now expires.
    pub fn lease_until(&self) -> Timestamp {
        Timestamp::now().plus(self.shared.lease)
    }

    /// Holds `lease` until the returned guard is dropped: renews it, and
    /// stops the workflow (through its interrupt) on a cancel request, a lost
    /// lease, or at `deadline`. If this process still runs the workflow under
    /// an older lease (it lost it, then claimed it again), that run is
    /// stopped first and this waits until it is gone: one run per workflow.
    pub async fn hold(&self, lease: Lease, deadline: Option<Timestamp>) -> Holding {
        let interrupt = Interrupt::default();
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
                        held.insert(id.clone(), Held { lease, interrupt: interrupt.clone() });
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
        Holding { shared: self.shared.clone(), id, epoch, interrupt, timer }
    }

    /// Stops every workflow this process runs.
    pub fn stop_all(&self, reason: StopReason) {
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
        let held = self.shared.lock();
        self.shared.draining.store(true, Ordering::Release);
        for held in held.values() {
            held.interrupt.drain();
        }
    }
    /// Renews now (a cancel request may be waiting), not at the next tick.
    pub fn check_now(&self) {
        self.shared.wake.notify_one();
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
}

/// A held lease: the workflow's stop flag; dropping it stops renewing.
pub struct Holding {
    shared: Arc<Shared>,
    id: String,
    /// The epoch held: a later claim of the same workflow by this process is another holding.
    epoch: i64,
    interrupt: Interrupt,
    timer: Option<tokio::task::JoinHandle<()>>,
}

impl Holding {
    /// The workflow's stop flag.
    pub fn interrupt(&self) -> &Interrupt {
        &self.interrupt
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

/// Renews every held lease each third of the lease (or when rung), until the executor is gone.
async fn heartbeat(shared: std::sync::Weak<Shared>) {
    loop {
        let Some(strong) = shared.upgrade() else { return };
        let period = strong.lease / 3;
        let wake = async { strong.wake.notified().await };
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = wake => {}
        }
        let held: Vec<(Lease, Interrupt)> =
            strong.lock().values().map(|held| (held.lease.clone(), held.interrupt.clone())).collect();
        if held.is_empty() {
            continue;
        }
        let leases: Vec<Lease> = held.iter().map(|(lease, _)| lease.clone()).collect();
        let until = Timestamp::now().plus(strong.lease);
        match strong.journal.renew_leases(&strong.id, &leases, until).await {
            Ok(renewals) => {
                for ((lease, interrupt), renewal) in held.iter().zip(renewals) {
                    match renewal {
                        Renewal::Held { cancel: false } => {}
                        Renewal::Held { cancel: true } => interrupt.stop(StopReason::Cancelled),
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
            }
            Err(error @ JournalError::Unreachable { .. }) => {
                tracing::error!(source = "host", "cannot renew leases: {error}");
                for (_, interrupt) in &held {
                    interrupt.stop(StopReason::JournalLost);
                }
            }
            Err(error) => tracing::warn!(source = "host", "cannot renew leases: {error}"),
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
