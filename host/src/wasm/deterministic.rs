//! A workflow's WASI world without ambient nondeterminism: its wall clock is
//! the time it first started, its monotonic clock advances 1 ms per reading,
//! and its randomness is seeded from its id, so a replay takes the same path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::SeedableRng as _;
use rand::rngs::StdRng;
use sha2::{Digest as _, Sha256};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtxBuilder};

/// A workflow's wall clock: the time it first started, on every replay.
struct FrozenWallClock(Duration);

impl HostWallClock for FrozenWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        self.0
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

/// Makes `builder`'s clocks and randomness derive from the workflow's id and start time.
pub fn make_deterministic(builder: &mut WasiCtxBuilder, workflow_id: &str, started_at_ms: i64) {
    let seed: [u8; 32] = Sha256::digest(workflow_id.as_bytes()).into();
    let mut half = [0u8; 16];
    half.copy_from_slice(&seed[..16]);
    builder
        .wall_clock(FrozenWallClock(Duration::from_millis(u64::try_from(started_at_ms).unwrap_or(0))))
        .monotonic_clock(ReplayMonotonicClock::default())
        .secure_random(StdRng::from_seed(seed))
        .insecure_random(StdRng::from_seed(seed))
        .insecure_random_seed(u128::from_le_bytes(half));
}
