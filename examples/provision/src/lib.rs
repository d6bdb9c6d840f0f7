//! The seed scenario (DBOS `provision_workflow` + `provision_step`) as one
//! component: it exports the `steps` interface it imports, so the host runs
//! each `provision` attempt in a fresh instance of this same file.

use std::time::Duration;

wit_bindgen::generate!({
    world: "example:provision/provision",
    path: ["../../wit", "wit"],
    generate_all,
});

use example::provision::steps as provision_steps;
use exports::example::provision::steps::{Guest as Steps, ProvisionError};
use stepbox::runtime::log::{Level, log};
use stepbox::runtime::step_context;

struct Provision;

impl Steps for Provision {
    fn provision(region: String) -> Result<String, ProvisionError> {
        let (attempt, max_attempts) =
            step_context::status().map(|status| (status.attempt, status.max_attempts)).unwrap_or((1, 1));
        log(Level::Info, &format!("Step: Starting provision_step {attempt} of {max_attempts}"));
        std::thread::sleep(Duration::from_secs(1));
        Err(ProvisionError::Failed(format!("Simulated failure in provision_step (region {region})")))
    }
}

impl Guest for Provision {
    fn run() -> bool {
        log(Level::Info, "Workflow: Starting");
        match provision_steps::provision("us-east-1") {
            Ok(resource) => log(Level::Info, &format!("Workflow: provisioned {resource}")),
            Err(provision_steps::ProvisionError::RetriesExhausted(exhausted)) => {
                log(
                    Level::Error,
                    &format!(
                        "Workflow: Caught max retries exceeded exception ({} attempts of {})",
                        exhausted.attempts, exhausted.step
                    ),
                );
                for failure in &exhausted.failures {
                    log(
                        Level::Info,
                        &format!(
                            "Workflow:   attempt {} failed after {} ms: {}",
                            failure.attempt, failure.elapsed_ms, failure.message
                        ),
                    );
                }
            }
            Err(provision_steps::ProvisionError::Permanent(reason))
            | Err(provision_steps::ProvisionError::Failed(reason)) => {
                log(Level::Error, &format!("Workflow: provisioning failed: {reason}"));
            }
        }
        log(Level::Info, "Workflow: Finishing");
        true
    }
}

export!(Provision);
