//! A workflow over the `guests:flaky` steps (build them from
//! guest-steps/rust/flaky and pass them with `--step`). Each entry function
//! logs what it got and returns it unchanged.

wit_bindgen::generate!({
    world: "example:retry-demo/retry-demo",
    path: ["../../wit", "../../guest-steps/wit/flaky.wit", "wit"],
    generate_all,
});

use guests::flaky::steps;
use stepbox::runtime::log::{Level, log};

struct RetryDemo;

fn report(call: &str, result: Result<u32, StepError>) -> Result<u32, StepError> {
    match &result {
        Ok(attempt) => log(Level::Info, &format!("{call} succeeded on attempt {attempt}")),
        Err(StepError::RetriesExhausted(exhausted)) => {
            log(Level::Error, &format!("{call} exhausted {} attempts; falling back", exhausted.attempts))
        }
        Err(StepError::Permanent(reason)) => log(Level::Error, &format!("{call} failed permanently: {reason}")),
        Err(StepError::Failed(reason)) => log(Level::Error, &format!("{call} failed: {reason}")),
    }
    result
}

impl Guest for RetryDemo {
    fn retry_then_succeed(fail_times: u32) -> Result<u32, StepError> {
        report("flaky", steps::flaky(fail_times))
    }

    fn reject(reason: String) -> Result<u32, StepError> {
        report("reject", steps::reject(&reason))
    }

    fn crash(message: String) -> Result<u32, StepError> {
        report("crash", steps::crash(&message))
    }
}

export!(RetryDemo);
