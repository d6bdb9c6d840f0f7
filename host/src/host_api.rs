//! `stepbox:runtime` as the host provides it to guests: `log` and
//! `step-context` (and the types-only `types` instance they use).

use std::time::Duration;

use wasmtime::component::{ComponentType, Lift, Linker, Lower};

use crate::retry::RetryPolicy;
use crate::sandbox::{GuestState, Identity, StepStatus};

/// The runtime package's version, as guests import it.
pub const VERSION: &str = "0.1.0";

/// `stepbox:runtime/log.level`.
#[expect(dead_code, reason = "variants are constructed by lifting them from the guest")]
#[derive(ComponentType, Lift, Clone, Copy, Debug, PartialEq, Eq)]
#[component(enum)]
#[repr(u8)]
enum Level {
    #[component(name = "trace")]
    Trace,
    #[component(name = "debug")]
    Debug,
    #[component(name = "info")]
    Info,
    #[component(name = "warn")]
    Warn,
    #[component(name = "error")]
    Error,
}

/// `stepbox:runtime/types.retry-policy`.
#[derive(ComponentType, Lower, Clone, Copy, Debug)]
#[component(record)]
struct WitRetryPolicy {
    #[component(name = "max-attempts")]
    max_attempts: u32,
    #[component(name = "initial-interval-ms")]
    initial_interval_ms: u64,
    #[component(name = "backoff-rate")]
    backoff_rate: f64,
    #[component(name = "max-interval-ms")]
    max_interval_ms: u64,
    jitter: f64,
}

/// `stepbox:runtime/types.attempt-limits`.
#[derive(ComponentType, Lower, Clone, Copy, Debug)]
#[component(record)]
struct WitAttemptLimits {
    #[component(name = "timeout-ms")]
    timeout_ms: u64,
    #[component(name = "max-memory-bytes")]
    max_memory_bytes: u64,
    #[component(name = "max-output-bytes")]
    max_output_bytes: u64,
    #[component(name = "max-result-bytes")]
    max_result_bytes: u64,
}

/// `stepbox:runtime/step-context.step-status`.
#[derive(ComponentType, Lower, Clone, Debug)]
#[component(record)]
struct WitStepStatus {
    #[component(name = "workflow-id")]
    workflow_id: String,
    step: String,
    attempt: u32,
    #[component(name = "max-attempts")]
    max_attempts: u32,
    policy: WitRetryPolicy,
    limits: WitAttemptLimits,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl From<&StepStatus> for WitStepStatus {
    fn from(status: &StepStatus) -> Self {
        let RetryPolicy { max_attempts, initial_interval, backoff_rate, max_interval, jitter } = status.policy;
        Self {
            workflow_id: status.workflow_id.clone(),
            step: status.step.clone(),
            attempt: status.attempt,
            max_attempts,
            policy: WitRetryPolicy {
                max_attempts,
                initial_interval_ms: millis(initial_interval),
                backoff_rate,
                max_interval_ms: millis(max_interval),
                jitter,
            },
            limits: WitAttemptLimits {
                timeout_ms: millis(status.limits.timeout),
                max_memory_bytes: status.limits.max_memory_bytes,
                max_output_bytes: status.limits.max_output_bytes,
                max_result_bytes: status.limits.max_result_bytes,
            },
        }
    }
}

/// Defines `stepbox:runtime/{types,log,step-context}` in `linker`.
pub fn add_to_linker(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    linker.instance(&format!("stepbox:runtime/types@{VERSION}"))?;
    linker.instance(&format!("stepbox:runtime/log@{VERSION}"))?.func_wrap(
        "log",
        |store, (level, message): (Level, String)| {
            emit(store.data().source(), level, &message);
            Ok(())
        },
    )?;
    linker.instance(&format!("stepbox:runtime/step-context@{VERSION}"))?.func_wrap("status", |store, (): ()| {
        let status = match &store.data().identity {
            Identity::Step(status) => Some(WitStepStatus::from(status)),
            Identity::Workflow { .. } => None,
        };
        Ok((status,))
    })?;
    Ok(())
}

/// Shows a guest's log message with where it came from, one log line per
/// line of text, control characters dropped, so a guest cannot forge host lines.
fn emit(source: &str, level: Level, message: &str) {
    for line in message.lines() {
        let line: String = line.chars().filter(|c| !c.is_control() || *c == '\t').collect();
        emit_line(source, level, &line);
    }
}

fn emit_line(source: &str, level: Level, message: &str) {
    match level {
        Level::Trace => tracing::trace!(target: "stepbox::guest", source, "{message}"),
        Level::Debug => tracing::debug!(target: "stepbox::guest", source, "{message}"),
        Level::Info => tracing::info!(target: "stepbox::guest", source, "{message}"),
        Level::Warn => tracing::warn!(target: "stepbox::guest", source, "{message}"),
        Level::Error => tracing::error!(target: "stepbox::guest", source, "{message}"),
    }
}
