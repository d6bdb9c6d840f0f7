//! A workflow's WASI world without ambient nondeterminism: its wall clock is
//! the time it first started, moved on only to the journaled ends of its
//! waits; its monotonic clock advances 1 ms per reading; its randomness is
//! seeded from its id. A replay takes the same path.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use rand::SeedableRng as _;
use rand::rngs::StdRng;
use sha2::{Digest as _, Sha256};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtxBuilder};

/// A workflow's wall clock: the time it first started, moved on by the host
/// to the journaled end of each wait (a sleep's due time, a message's
/// receipt), so it reads the same on every replay. Shared by the store's WASI
/// context and the workflow's host functions.
#[derive(Clone, Debug)]
pub struct WorkflowClock(Arc<AtomicI64>);

impl WorkflowClock {
    /// A clock reading `started_at_ms` (milliseconds since the Unix epoch).
    pub fn starting_at(started_at_ms: i64) -> Self {
        Self(Arc::new(AtomicI64::new(started_at_ms)))
    }

    /// Moves the clock on to `at_ms`; never back.
    pub fn advance_to(&self, at_ms: i64) {
        self.0.fetch_max(at_ms, Ordering::AcqRel);
    }

    /// What the clock reads, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.0.load(Ordering::Acquire)
    }
}

impl HostWallClock for WorkflowClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.now_ms()).unwrap_or(0))
    }
}

/// A workflow's monotonic clock: advances 1 ms per reading, the same on every replay.
#[derive(Default)]
struct ReplayMonotonicClock(AtomicU64);

impl HostMonotonicClock for ReplayMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }

    fn now(&self) -> u64 {
        self.0.fetch_add(1_000_000, Ordering::Relaxed)
    }
}

/// Makes `builder`'s clocks and randomness derive from the workflow's id and `clock`.
pub fn make_deterministic(builder: &mut WasiCtxBuilder, workflow_id: &str, clock: WorkflowClock) {
    let seed: [u8; 32] = Sha256::digest(workflow_id.as_bytes()).into();
    let mut half = [0u8; 16];
    half.copy_from_slice(&seed[..16]);
    builder
        .wall_clock(clock)
        .monotonic_clock(ReplayMonotonicClock::default())
        .secure_random(StdRng::from_seed(seed))
        .insecure_random(StdRng::from_seed(seed))
        .insecure_random_seed(u128::from_le_bytes(half));
}
