//! Stopping a running guest from outside: a cancel request, a shutdown
//! signal, a lost lease or a deadline sets the reason once; the guest's epoch
//! callback sees it within one tick and traps, and host-side waits see it at
//! once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

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
    /// The journal stayed unreachable past its outage budget.
    JournalLost,
}

impl StopReason {
    const ALL: [Self; 5] = [Self::Cancelled, Self::Deadline, Self::Shutdown, Self::LeaseLost, Self::JournalLost];

    fn code(self) -> u8 {
        match self {
            Self::Cancelled => 1,
            Self::Deadline => 2,
            Self::Shutdown => 3,
            Self::LeaseLost => 4,
            Self::JournalLost => 5,
        }
    }
}

/// A workflow's stop flag, shared by everything that runs for it.
#[derive(Clone, Default)]
pub struct Interrupt {
    reason: Arc<AtomicU8>,
    /// Set when the process drains: the running attempt may finish, no other starts.
    drain: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl Interrupt {
    /// Asks the workflow to stop; the first reason given is the one that counts.
    pub fn stop(&self, reason: StopReason) {
        if self.reason.compare_exchange(0, reason.code(), Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.notify.notify_waiters();
        }
    }

    /// Why the workflow must stop, if it must.
    pub fn reason(&self) -> Option<StopReason> {
        let code = self.reason.load(Ordering::Acquire);
        StopReason::ALL.into_iter().find(|reason| reason.code() == code)
    }

    /// Completes once a stop is asked for.
    pub async fn stopped(&self) -> StopReason {
        loop {
            let notified = self.notify.notified();
            if let Some(reason) = self.reason() {
                return reason;
            }
            notified.await;
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
            notified.await;
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
