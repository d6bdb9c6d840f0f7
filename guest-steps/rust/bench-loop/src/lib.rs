//! A workflow that calls the benchmark steps in a loop: `count` sequential
//! durable steps per run.

wit_bindgen::generate!({
    world: "guests:bench/bench-loop",
    path: ["../../../wit", "../../wit/bench.wit"],
    generate_all,
});

use guests::bench::steps::{self, StepError};

struct Loop;

impl Guest for Loop {
    fn sequential(count: u32) -> u64 {
        (0..count).map(|n| steps::noop(n).map_or(0, u64::from)).sum()
    }

    fn exhaust(count: u32) -> u64 {
        (0..count)
            .map(|n| match steps::fail(n) {
                Err(StepError::RetriesExhausted(exhausted)) => u64::from(exhausted.attempts),
                _ => 0,
            })
            .sum()
    }
}

export!(Loop);
