//! The __NAME__ step in Rust: `greet` fails its first attempt, then answers.

wit_bindgen::generate!({
    world: "__NAME__:steps/step",
    path: "wit",
    generate_all,
});

use exports::__SNAKE__::steps::steps::{Guest, StepError};
use stepbox::runtime::{log, step_context};

struct Step;

impl Guest for Step {
    fn greet(name: String) -> Result<String, StepError> {
        let attempt = step_context::status().map_or(1, |status| status.attempt);
        log::log(log::Level::Info, &format!("greet (rust): attempt {attempt}"));
        if attempt == 1 {
            // Any case but `permanent` is retried; `permanent` is handed to the workflow at once.
            return Err(StepError::Failed("the greeting service is warming up".into()));
        }
        Ok(format!("Hello, {name} (from Rust)"))
    }
}

export!(Step);
