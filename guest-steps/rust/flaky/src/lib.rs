//! Steps that fail on purpose, for retry scenarios: `flaky` fails a given
//! number of attempts, `reject` fails permanently, `crash` traps.

wit_bindgen::generate!({
    world: "guests:flaky/flaky",
    path: ["../../../wit", "../../wit/flaky.wit"],
    generate_all,
});

use exports::guests::flaky::steps::{Guest, StepError};
use stepbox::runtime::log::{Level, log};
use stepbox::runtime::step_context;

struct Flaky;

fn attempt() -> u32 {
    step_context::status().map_or(1, |status| status.attempt)
}

/// The attempt's time limit as the step sees it, in ms.
fn timeout_ms() -> u64 {
    step_context::status().map_or(0, |status| status.limits.timeout_ms)
}

impl Guest for Flaky {
    fn flaky(fail_times: u32) -> Result<u32, StepError> {
        let attempt = attempt();
        log(Level::Info, &format!("flaky: attempt {attempt} (timeout {} ms)", timeout_ms()));
        if attempt <= fail_times {
            Err(StepError::Failed(format!("transient failure on attempt {attempt}")))
        } else {
            Ok(attempt)
        }
    }

    fn reject(reason: String) -> Result<u32, StepError> {
        log(Level::Info, &format!("reject: attempt {}", attempt()));
        Err(StepError::Permanent(reason))
    }

    fn crash(message: String) -> Result<u32, StepError> {
        log(Level::Info, &format!("crash: attempt {}", attempt()));
        panic!("{message}");
    }
}

export!(Flaky);
