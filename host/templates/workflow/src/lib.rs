//! The __NAME__ workflow: sleeps, waits for a message, calls `greet` and falls back when its attempts run
//! out, then greets a team with three calls at once.

wit_bindgen::generate!({
    world: "__NAME__:workflow/workflow",
    path: "wit",
    generate_all,
});

use __STEP_SNAKE__::steps::steps;
use stepbox::runtime::{log, workflow_context};

struct Workflow;

impl Guest for Workflow {
    /// Publishes its stage, sleeps a second (durably: a resume sleeps only what is left), waits up to
    /// 2 s for a greeting message (`host send ID greeting '"Bonjour"'`), then greets through the step.
    fn run(name: String) -> Result<String, StepError> {
        workflow_context::set_event("stage", r#""sleeping""#).ok();
        workflow_context::sleep(1000);
        workflow_context::set_event("stage", r#""waiting for a greeting""#).ok();
        // The message's value is JSON text: a JSON string here, its quotes dropped.
        let salutation = workflow_context::recv("greeting", 2000)
            .map_or_else(|| "Hello".to_string(), |message| message.value.trim_matches('"').to_string());
        workflow_context::set_event("stage", r#""greeting""#).ok();
        log::log(log::Level::Info, &format!("greeting {name} with {salutation:?}"));
        let answer = match steps::greet(&name) {
            // Every attempt failed: the host hands over each attempt's failure instead of failing the workflow.
            Err(StepError::RetriesExhausted(exhausted)) => {
                let message = format!("greet failed all {} attempts; falling back", exhausted.attempts);
                log::log(log::Level::Warn, &message);
                format!("Hello, {name}")
            }
            other => other?,
        };
        greet_the_team();
        Ok(answer.replacen("Hello", &salutation, 1))
    }
}

/// A fan-out: greets three people at once (`start-call` starts a call and returns; `await-all`
/// waits for them all). Arguments and results are JSON; a resume replays the calls that ended.
fn greet_the_team() {
    let calls: Vec<_> = ["Ada", "Grace", "Linus"]
        .iter()
        .filter_map(|friend| workflow_context::start_call("greet", &format!("[\"{friend}\"]")).ok())
        .collect();
    let results = workflow_context::await_all(&calls);
    let answered = results.iter().filter(|result| result.starts_with("{\"ok\"")).count();
    log::log(log::Level::Info, &format!("greeted the team at once: {answered} of {} answered", calls.len()));
}
// local-step:start

/// The step itself, so the workflow runs on its own (`host run __NAME__.wasm '"world"'`). Put steps in
/// their own components (`host new step`) to write them in another language or share them.
impl exports::__STEP_SNAKE__::steps::steps::Guest for Workflow {
    fn greet(name: String) -> Result<String, exports::__STEP_SNAKE__::steps::steps::StepError> {
        let attempt = stepbox::runtime::step_context::status().map_or(1, |status| status.attempt);
        log::log(log::Level::Info, &format!("greet (rust, in the workflow): attempt {attempt}"));
        if attempt == 1 {
            let error = "the greeting service is warming up".to_string();
            return Err(exports::__STEP_SNAKE__::steps::steps::StepError::Failed(error));
        }
        Ok(format!("Hello, {name} (from Rust)"))
    }
}
// local-step:end

export!(Workflow);
