//! Steps that do nothing (fail at once, or read the clock), so a benchmark measures only
//! the runtime around them: sandbox, journal, retries.

wit_bindgen::generate!({
    world: "guests:bench/noop",
    path: ["../../../wit", "../../wit/bench.wit"],
    generate_all,
});

use exports::guests::bench::steps::{Guest, StepError};

struct Noop;

impl Guest for Noop {
    fn noop(n: u32) -> Result<u32, StepError> {
        Ok(n)
    }

    fn fail(n: u32) -> Result<u32, StepError> {
        Err(StepError::Failed(format!("call {n} fails on purpose")))
    }

    fn clock(_: u32) -> Result<u64, StepError> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.map(|since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
            .map_err(|error| StepError::Permanent(format!("the wall clock is before 1970: {error}")))
    }
}

export!(Noop);
