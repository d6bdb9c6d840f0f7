//! Stopping a running guest from outside: a cancel request, a shutdown
//! signal, a lost lease or a deadline sets the reason once; the guest's epoch
//! callback sees it within one tick and traps, and host-side waits see it at
//! once. A held lease also sets a local deadline: past it the workflow must
//! stop as if told to, and whoever looks (the epoch callback, every call
//! between the guest and the host, every wait) finds it stopped — also right
//! after the process wakes from a `SIGSTOP` or a paused VM, before any timer fires.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use tokio::sync::Notify;

/// Why a workflow must stop before it ends on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `host cancel`: the workflow ends `cancelled`.
    Cancelled,
    /// Its deadline passed: the workflow ends `timed-out`.
    Deadline,
    /// The process is stopping (a signal, a worker shutting down): the
    /// workflow stays resumable.
    Shutdown,
    /// Another executor owns the workflow now: nothing more may be written.
    LeaseLost,
    /// This process could not renew the workflow's lease before its own
    /// deadline for it: it stops before the lease can lapse (so no other
    /// process ever runs the workflow at the same time) and writes nothing more.
    LeaseExpired,
}

impl StopReason {
    const ALL: [Self; 5] = [Self::Cancelled, Self::Deadline, Self::Shutdown, Self::LeaseLost, Self::LeaseExpired];

    fn code(self) -> u8 {
        match self {
            Self::Cancelled => 1,
            Self::Deadline => 2,
            Self::Shutdown => 3,
            Self::LeaseLost => 4,
            Self::LeaseExpired => 5,
        }
    }

    /// Whether the workflow is no longer this process's to write: nothing
    /// more may be journaled for it, not even how its attempt ended.
    pub fn lease_gone(self) -> bool {
        matches!(self, Self::LeaseLost | Self::LeaseExpired)
    }
}

/// The origin of the deadlines kept as integers: nanoseconds after it, plus
/// one (zero means none).
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

fn ticks(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(*ORIGIN).as_nanos()).unwrap_or(u64::MAX).saturating_add(1)
}

/// A workflow's stop flag, shared by everything that runs for it.
#[derive(Clone, Default)]
pub struct Interrupt {
    reason: Arc<AtomicU8>,
    /// Set when the process drains: the running attempt may finish, no other starts.
    drain: Arc<AtomicBool>,
    notify: Arc<Notify>,
    /// The local deadline of the lease it runs under ([`ticks`]; 0: none).
    valid_until: Arc<AtomicU64>,
}

impl Interrupt {
    /// Sets the local deadline of the workflow's lease: past `deadline` it
    /// stops ([`StopReason::LeaseExpired`]). A renewal moves it later, never earlier.
    pub fn hold_until(&self, deadline: Instant) {
        self.valid_until.fetch_max(ticks(deadline), Ordering::AcqRel);
    }

    /// The lease's local deadline, if one is set.
    pub fn lease_deadline(&self) -> Option<Instant> {
        match self.valid_until.load(Ordering::Acquire) {
            0 => None,
            at => Some(*ORIGIN + std::time::Duration::from_nanos(at - 1)),
        }
    }

    /// Whether the lease's local deadline has passed (the workflow must stop now).
    pub fn lease_lapsed(&self) -> bool {
        let deadline = self.valid_until.load(Ordering::Acquire);
        deadline != 0 && ticks(Instant::now()) >= deadline
    }

    /// Asks the workflow to stop; the first reason given is the one that counts.
    pub fn stop(&self, reason: StopReason) {
        if self.reason.compare_exchange(0, reason.code(), Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.notify.notify_waiters();
        }
    }

    /// Why the workflow must stop, if it must (its lease's local deadline
    /// counts as soon as it passes, whether or not a timer has fired yet).
    pub fn reason(&self) -> Option<StopReason> {
        if self.reason.load(Ordering::Acquire) == 0 && self.lease_lapsed() {
            self.stop(StopReason::LeaseExpired);
        }
        let code = self.reason.load(Ordering::Acquire);
        StopReason::ALL.into_iter().find(|reason| reason.code() == code)
    }

    /// Completes once a stop is asked for, or the lease's local deadline passes.
    pub async fn stopped(&self) -> StopReason {
        loop {
            let notified = self.notify.notified();
            if let Some(reason) = self.reason() {
                return reason;
            }
            self.wait(notified).await;
        }
    }

    /// Completes once the workflow is no longer this process's to write
    /// ([`StopReason::lease_gone`]): what a wait for a journal write gives way to.
    pub async fn lease_gone(&self) -> StopReason {
        loop {
            let notified = self.notify.notified();
            if let Some(reason) = self.reason().filter(|reason| reason.lease_gone()) {
                return reason;
            }
            self.wait(notified).await;
        }
    }

    /// Waits for `notified`, or the lease's local deadline, whichever comes first.
    async fn wait(&self, notified: tokio::sync::futures::Notified<'_>) {
        match self.lease_deadline() {
            Some(deadline) => {
                tokio::select! {
                    () = notified => {}
                    () = tokio::time::sleep_until(deadline.into()) => {}
                }
            }
            None => notified.await,
        }
    }

    /// Lets the running attempt finish but starts no other (a graceful
    /// shutdown); the workflow then stops as for [`StopReason::Shutdown`].
    pub fn drain(&self) {
        if !self.drain.swap(true, Ordering::AcqRel) {
            self.notify.notify_waiters();
        }
    }

    /// Why no further attempt may start: a stop, or a drain (as a shutdown).
    pub fn refusal(&self) -> Option<StopReason> {
        self.reason().or_else(|| self.drain.load(Ordering::Acquire).then_some(StopReason::Shutdown))
    }

    /// Completes once a stop or a drain is asked for (ends a backoff early).
    pub async fn refused(&self) -> StopReason {
        loop {
            let notified = self.notify.notified();
            if let Some(reason) = self.refusal() {
                return reason;
            }
            self.wait(notified).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_reason_wins_and_waiters_wake() {
        let interrupt = Interrupt::default();
        let waiter = tokio::spawn({
            let interrupt = interrupt.clone();
            async move { interrupt.stopped().await }
        });
        tokio::task::yield_now().await;
        interrupt.stop(StopReason::Cancelled);
        interrupt.stop(StopReason::Shutdown);
        assert_eq!(waiter.await.unwrap(), StopReason::Cancelled);
        assert_eq!(interrupt.reason(), Some(StopReason::Cancelled));
        assert_eq!(Interrupt::default().reason(), None);
    }

    #[tokio::test]
    async fn past_its_lease_deadline_a_workflow_stops_whoever_looks_first() {
        let interrupt = Interrupt::default();
        assert_eq!(interrupt.reason(), None, "no lease, no deadline");
        interrupt.hold_until(Instant::now() + std::time::Duration::from_millis(50));
        assert_eq!(interrupt.reason(), None);
        // A renewal moves the deadline later, never earlier.
        interrupt.hold_until(Instant::now() + std::time::Duration::from_millis(150));
        interrupt.hold_until(Instant::now());
        assert!(!interrupt.lease_lapsed());
        let started = Instant::now();
        // Nobody rings: the wait ends at the deadline by itself.
        assert_eq!(interrupt.stopped().await, StopReason::LeaseExpired);
        assert!(started.elapsed() >= std::time::Duration::from_millis(100), "{:?}", started.elapsed());
        assert!(interrupt.lease_lapsed());
        assert_eq!(interrupt.lease_gone().await, StopReason::LeaseExpired);
        // Once stopped, the reason stays, and a later stop does not replace it.
        interrupt.stop(StopReason::Cancelled);
        assert_eq!(interrupt.reason(), Some(StopReason::LeaseExpired));

        // Checked without any timer: a deadline in the past is seen at once.
        let interrupt = Interrupt::default();
        interrupt.hold_until(Instant::now());
        assert_eq!(interrupt.reason(), Some(StopReason::LeaseExpired));
    }

    #[tokio::test]
    async fn a_drain_refuses_new_attempts_without_stopping_the_running_one() {
        let interrupt = Interrupt::default();
        let waiter = tokio::spawn({
            let interrupt = interrupt.clone();
            async move { interrupt.refused().await }
        });
        tokio::task::yield_now().await;
        interrupt.drain();
        assert_eq!(waiter.await.unwrap(), StopReason::Shutdown);
        assert_eq!(interrupt.reason(), None, "the running attempt goes on");
        assert_eq!(interrupt.refusal(), Some(StopReason::Shutdown));
        interrupt.stop(StopReason::Cancelled);
        assert_eq!(interrupt.refusal(), Some(StopReason::Cancelled));
    }
}
