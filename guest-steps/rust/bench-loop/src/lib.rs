//! A workflow that calls the benchmark steps in a loop: `count` sequential
//! durable steps per run, or `count` started at once.

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

    fn fan_out(count: u32) -> u64 {
        use stepbox::runtime::workflow_context as workflow;
        let calls: Vec<_> = (0..count).filter_map(|n| workflow::start_call("noop", &format!("[{n}]")).ok()).collect();
        workflow::await_all(&calls).iter().map(|result| ok_value(result)).sum()
    }

    fn exhaust(count: u32) -> u64 {
        (0..count)
            .map(|n| match steps::fail(n) {
                Err(StepError::RetriesExhausted(exhausted)) => u64::from(exhausted.attempts),
                _ => 0,
            })
            .sum()
    }

    fn marked() -> u64 {
        steps::clock(0).unwrap_or(0)
    }
}

/// The value of a `{"ok": N}` result, as `await-all` hands it over.
fn ok_value(result: &str) -> u64 {
    result.strip_prefix("{\"ok\":").and_then(|rest| rest.strip_suffix('}')).and_then(|n| n.parse().ok()).unwrap_or(0)
}

export!(Loop);
