//! Time as the attempt loop sees it: now, and waiting until a moment. The
//! real clock in production; a simulated one in tests, where a three-attempt
//! backoff of an hour runs in microseconds and delays are checked exactly.

use std::future::Future;

use crate::journal::Timestamp;

/// A source of time the invoker waits on.
pub trait Clock: Send + Sync + 'static {
    /// The time now.
    fn now(&self) -> Timestamp;

    /// Completes at `at` (at once if it has passed).
    fn sleep_until(&self, at: Timestamp) -> impl Future<Output = ()> + Send;
}

impl<C: Clock> Clock for std::sync::Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }

    fn sleep_until(&self, at: Timestamp) -> impl Future<Output = ()> + Send {
        (**self).sleep_until(at)
    }
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    async fn sleep_until(&self, at: Timestamp) {
        let remaining = at.since(Timestamp::now());
        if !remaining.is_zero() {
            tokio::time::sleep(remaining).await;
        }
    }
}

/// A clock that only moves when someone sleeps: sleeping until a moment
/// jumps there at once.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct SimClock {
    now: std::sync::Mutex<i64>,
}

#[cfg(test)]
impl SimClock {
    /// A clock standing at `start`.
    pub fn at(start: Timestamp) -> Self {
        Self { now: std::sync::Mutex::new(start.millis()) }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        let mut now = self.now.lock().unwrap();
        *now = Timestamp::from_millis(*now).plus(by).millis();
    }
}

#[cfg(test)]
impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(*self.now.lock().unwrap())
    }

    async fn sleep_until(&self, at: Timestamp) {
        {
            let mut now = self.now.lock().unwrap();
            *now = (*now).max(at.millis());
        }
        tokio::task::yield_now().await;
    }
}
