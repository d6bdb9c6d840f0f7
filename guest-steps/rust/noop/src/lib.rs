//! Steps that do nothing (or fail at once), so a benchmark measures only
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
}

export!(Noop);
