//! Stopping a running guest from outside: a cancel request, a shutdown
//! signal, a lost lease or a deadline sets the reason once; the guest's epoch
//! callback sees it within one tick and traps, and host-side waits see it at
//! once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

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
}
