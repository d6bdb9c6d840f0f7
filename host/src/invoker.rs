//! One step call, end to end: journal it, run each attempt in a fresh
//! instance, classify the outcome, back off, and hand the workflow the value,
//! the step's permanent error, or `retries-exhausted`.
//!
//! Write ordering (the journal is the source of truth):
//! 1. the step call row is committed before the first attempt;
//! 2. each attempt row is committed before the guest starts running;
//! 3. an attempt's outcome (and, when it ends the call, the call's output) is
//!    committed in one transaction before the workflow sees the value or the
//!    host starts waiting for the next attempt.

use std::time::{Duration, Instant};

use wasmtime::component::{ComponentExportIndex, InstancePre, Val};

use crate::journal::{AttemptOutcome, Journal, JournalError, StepCallStatus};
use crate::retry::RetryPolicy;
use crate::sandbox::{FailureKind, GuestState, Sandbox, StepStatus};
use crate::step_name::StepName;
use crate::values::{self, AttemptFailure, Returned};

/// A step function ready to be called: its component, export and policy.
pub struct StepTarget {
    pub name: StepName,
    pub pre: InstancePre<GuestState>,
    pub export: ComponentExportIndex,
    pub policy: RetryPolicy,
}

/// Runs step calls against the journal and the sandbox.
pub struct Invoker {
    journal: Journal,
    sandbox: Sandbox,
}

impl Invoker {
    /// An invoker writing to `journal` and running attempts in `sandbox`.
    pub fn new(journal: Journal, sandbox: Sandbox) -> Self {
        Self { journal, sandbox }
    }

    /// Calls `target` as call `seq` of `workflow_id`. Only a journal failure
    /// is an error; every guest failure becomes a value for the workflow.
    pub async fn call(
        &self,
        workflow_id: &str,
        seq: i64,
        target: &StepTarget,
        params: &[Val],
    ) -> Result<Val, JournalError> {
        let step = target.name.to_string();
        let short = &target.name.function;
        let policy = target.policy;
        let journal = &self.journal;
        journal.start_step_call(workflow_id, seq, &step, &values::to_wave_tuple(params), policy.max_attempts).await?;
        let mut failures = Vec::new();
        let mut attempt = 1;
        loop {
            journal.start_attempt(workflow_id, seq, attempt).await?;
            let started = Instant::now();
            let status = StepStatus { workflow_id: workflow_id.to_string(), step: step.clone(), attempt, policy };
            let result = self.sandbox.call_step(&target.pre, &target.export, status, params).await;
            let elapsed = started.elapsed();
            let (kind, message) = match result {
                Ok(value) => match values::classify(&value) {
                    Returned::Ok => {
                        self.finish(workflow_id, seq, attempt, "ok", StepCallStatus::Succeeded, &value).await?;
                        tracing::debug!(source = "host", "Step {short} succeeded on attempt {attempt} in {elapsed:?}");
                        return Ok(value);
                    }
                    Returned::Permanent => {
                        let output =
                            self.finish(workflow_id, seq, attempt, "permanent", StepCallStatus::Failed, &value).await?;
                        tracing::warn!(
                            source = "host",
                            "Step {short} returned a permanent error, not retried: {output}"
                        );
                        return Ok(value);
                    }
                    Returned::Error(message) => (FailureKind::ReturnedError, message),
                },
                Err(failure) => (failure.kind, failure.message),
            };
            failures.push(AttemptFailure { attempt, kind: kind.as_str(), message: message.clone(), elapsed });
            let Some(delay) = policy.delay_after(attempt, jitter_unit(&policy)) else {
                let value = values::exhausted(&step, &failures);
                let output = values::to_wave(&value);
                let outcome = outcome("failed", Some(kind), Some(message.clone()), None);
                journal
                    .finish_attempt(workflow_id, seq, attempt, &outcome, Some((StepCallStatus::Exhausted, &output)))
                    .await?;
                tracing::error!(
                    source = "host",
                    "Step {short} failed all {attempt} attempts; the workflow receives retries-exhausted. \
                     Last error ({}):\n{}",
                    kind.as_str(),
                    indent(&message)
                );
                return Ok(value);
            };
            let outcome = outcome("failed", Some(kind), Some(message.clone()), Some(delay));
            journal.finish_attempt(workflow_id, seq, attempt, &outcome, None).await?;
            tracing::warn!(
                source = "host",
                "Step {short} being automatically retried (attempt {attempt} of {}) in {}\n{}",
                policy.max_attempts,
                humantime::format_duration(round_to_millis(delay)),
                indent(&format!("{}: {message}", kind.as_str()))
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

impl Invoker {
    /// Journals an attempt that ended the call with `value`; returns the value as WAVE.
    async fn finish(
        &self,
        workflow_id: &str,
        seq: i64,
        attempt: u32,
        outcome_name: &'static str,
        status: StepCallStatus,
        value: &Val,
    ) -> Result<String, JournalError> {
        let output = values::to_wave(value);
        let message = (status == StepCallStatus::Failed).then(|| output.clone());
        let outcome = outcome(outcome_name, None, message, None);
        self.journal.finish_attempt(workflow_id, seq, attempt, &outcome, Some((status, &output))).await?;
        Ok(output)
    }
}

fn outcome(
    outcome: &'static str,
    kind: Option<FailureKind>,
    message: Option<String>,
    next_delay: Option<Duration>,
) -> AttemptOutcome {
    AttemptOutcome { outcome, kind: kind.map(FailureKind::as_str), message, next_delay }
}

/// A uniform draw in `[0, 1)` when the policy asks for jitter.
fn jitter_unit(policy: &RetryPolicy) -> f64 {
    if policy.jitter > 0.0 { rand::random::<f64>() } else { 0.0 }
}

fn round_to_millis(delay: Duration) -> Duration {
    Duration::from_millis(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("    {line}")).collect::<Vec<_>>().join("\n")
}
