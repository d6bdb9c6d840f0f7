//! One step call, end to end: replay it from the journal if it finished,
//! continue its attempts if it was interrupted, else journal it; run each
//! attempt in a fresh instance, classify the outcome, back off, and hand the
//! workflow the value, the step's permanent error, or `retries-exhausted`.
//!
//! Write ordering (the journal is the source of truth; writes go through its
//! group commit, in order):
//! 1. each attempt's start is queued before the guest starts running (with
//!    the step call row, for the call's first attempt) and is durable with
//!    the attempt's outcome, or within the journal's lazy window if the
//!    attempt takes longer;
//! 2. a failed attempt's outcome is queued before the host waits for the
//!    next attempt; the wait's length is in that row, so a restarted host
//!    waits only what remains of it;
//! 3. the outcome that ends the call (and the call's output) is durable
//!    before the workflow sees the value.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wasmtime::component::types::Type;
use wasmtime::component::{ComponentExportIndex, InstancePre, Val};

use crate::journal::{
    self, AttemptOutcome, AttemptRecord, CallRef, Journal, JournalError, NewStepCall, PendingWrite, StepCallRecord,
    StepCallStatus,
};
use crate::retry::RetryPolicy;
use crate::sandbox::{AttemptReport, CallFailure, FailureKind, GuestState, Sandbox, StepStatus};
use crate::settings::StepSettings;
use crate::step_name::StepName;
use crate::values::{self, AttemptFailure, Returned};

/// A step function ready to be called: its component, export, result type and policy.
pub struct StepTarget {
    pub name: StepName,
    pub pre: InstancePre<GuestState>,
    pub export: ComponentExportIndex,
    /// The step's `result<T, E>`, to read journaled outputs back.
    pub result_type: Type,
    pub settings: StepSettings,
}

/// A step call could not be made; the workflow stops without being marked failed.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(
        "non-determinism in workflow {workflow_id}: step call {seq} is `{now}` now, but the journal recorded \
         `{recorded}` for it. The workflow must make the same step calls, with the same arguments, on every \
         replay; resume it with the component and inputs it started with"
    )]
    NonDeterminism { workflow_id: String, seq: i64, recorded: String, now: String },
    #[error("the journaled output of step call {seq} ({step}) does not fit its result type: {message}")]
    UnreadableOutput { seq: i64, step: String, message: String },
}

/// Where an interrupted call picks up.
struct Progress {
    max_attempts: u32,
    /// The number of the next attempt (or of the interrupted one).
    attempt: u32,
    failures: Vec<AttemptFailure>,
    /// An attempt that started (at this wall-clock ms) but never finished: it counts as failed.
    interrupted: Option<i64>,
    /// Wall-clock ms at which the next attempt is due.
    due_at: Option<i64>,
}

/// Runs step calls against the journal and the sandbox.
pub struct Invoker {
    journal: Journal,
    sandbox: Sandbox,
    /// This process's executor id: journal writes succeed only while it owns the workflow.
    executor: String,
    /// The journaled step calls of each running workflow not yet replayed, by seq.
    histories: Mutex<HashMap<String, BTreeMap<i64, StepCallRecord>>>,
}

impl Invoker {
    /// An invoker writing to `journal` as `executor` and running attempts in `sandbox`.
    pub fn new(journal: Journal, sandbox: Sandbox, executor: String) -> Self {
        Self { journal, sandbox, executor, histories: Mutex::default() }
    }

    /// Reads the step calls workflow `workflow_id` has journaled (none for a
    /// new one), so replaying them needs no further reads.
    pub async fn begin(&self, workflow_id: &str, fresh: bool) -> Result<(), JournalError> {
        let calls = if fresh { Vec::new() } else { self.journal.step_calls(workflow_id).await? };
        let history = calls.into_iter().map(|call| (call.seq, call)).collect();
        self.lock_histories().insert(workflow_id.to_string(), history);
        Ok(())
    }

    /// Drops what [`Invoker::begin`] read, once the workflow stops.
    pub fn end(&self, workflow_id: &str) {
        self.lock_histories().remove(workflow_id);
    }

    fn lock_histories(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeMap<i64, StepCallRecord>>> {
        self.histories.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The journaled call `seq`, from the history read at the start (or from
    /// the journal, for a workflow that was not begun here).
    async fn recorded(&self, workflow_id: &str, seq: i64) -> Result<Option<StepCallRecord>, JournalError> {
        if let Some(history) = self.lock_histories().get_mut(workflow_id) {
            return Ok(history.remove(&seq));
        }
        self.journal.step_call(workflow_id, seq).await
    }

    /// Calls `target` as call `seq` of `workflow_id`. Guest failures become
    /// values for the workflow; only the journal and replay can fail the call.
    pub async fn call(
        &self,
        workflow_id: &str,
        seq: i64,
        target: &StepTarget,
        params: &[Val],
    ) -> Result<Val, InvokeError> {
        let step = target.name.to_string();
        let short = &target.name.function;
        let input = values::to_wave_tuple(params);
        let journal = &self.journal;
        let call_ref = CallRef { workflow_id, seq, executor: &self.executor };
        let mut new_call = None;
        let mut progress = match self.recorded(workflow_id, seq).await? {
            Some(call) if call.step != step || call.input != input => {
                return Err(InvokeError::NonDeterminism {
                    workflow_id: workflow_id.to_string(),
                    seq,
                    recorded: format!("{}{}", call.step, call.input),
                    now: format!("{step}{input}"),
                });
            }
            Some(call) if call.status != "running" => {
                let output = call.output.unwrap_or_default();
                let value = Val::from_wave(&target.result_type, &output).map_err(|error| {
                    InvokeError::UnreadableOutput { seq, step: step.clone(), message: error.to_string() }
                })?;
                tracing::debug!(source = "host", "Step {short} (call {seq}) replayed from the journal: {output}");
                return Ok(value);
            }
            Some(call) => {
                let max_attempts = u32::try_from(call.max_attempts).unwrap_or(target.settings.policy.max_attempts);
                let attempts = journal.call_attempts(workflow_id, seq).await?;
                let progress = resume(&attempts, max_attempts);
                tracing::info!(
                    source = "host",
                    "Step {short} (call {seq}) resumes at attempt {} of {max_attempts}",
                    progress.attempt
                );
                progress
            }
            None => {
                new_call =
                    Some(NewStepCall { step: &step, input: &input, max_attempts: target.settings.policy.max_attempts });
                Progress {
                    max_attempts: target.settings.policy.max_attempts,
                    attempt: 1,
                    failures: Vec::new(),
                    interrupted: None,
                    due_at: None,
                }
            }
        };
        let policy = RetryPolicy { max_attempts: progress.max_attempts, ..target.settings.policy };
        // Writes nobody waited for yet: checked before each attempt, settled with the call.
        let mut lazy: Vec<PendingWrite> = Vec::new();
        loop {
            let attempt = progress.attempt;
            let mut output = Output::default();
            // For an interrupted attempt, the backoff counts from when it started.
            let mut started_at = None;
            let (kind, message, elapsed) = if let Some(started) = progress.interrupted.take() {
                started_at = Some(started);
                let message = "the host stopped while this attempt was running".to_string();
                let elapsed = Duration::from_millis(u64::try_from(journal::now_ms() - started).unwrap_or(0));
                (FailureKind::Interrupted, message, elapsed)
            } else {
                if let Some(due_at) = progress.due_at.take() {
                    wait_until(due_at, short, attempt).await;
                }
                if let Some(error) = lazy.iter_mut().find_map(PendingWrite::failed) {
                    return Err(error.into());
                }
                lazy.push(journal.start_attempt(call_ref, attempt, new_call.take().as_ref()));
                let started = Instant::now();
                let status = StepStatus {
                    workflow_id: workflow_id.to_string(),
                    step: step.clone(),
                    attempt,
                    policy,
                    limits: target.settings.limits,
                };
                let report =
                    self.sandbox.call_step(&target.pre, &target.export, status, &target.settings.grants, params).await;
                let elapsed = started.elapsed();
                output = Output::captured(short, attempt, &report);
                // The value is encoded once: for the size limit and for the journal row.
                let returned = report.result.and_then(|value| {
                    let wave = values::to_wave(&value);
                    check_size(&wave, target.settings.limits.max_result_bytes).map(|()| (value, wave))
                });
                match returned {
                    Ok((value, wave)) => match values::classify(&value) {
                        Returned::Ok => {
                            let write = self.finish(call_ref, attempt, "ok", StepCallStatus::Succeeded, &wave, output);
                            settle(write, lazy).await?;
                            tracing::debug!(
                                source = "host",
                                "Step {short} succeeded on attempt {attempt} in {elapsed:?}"
                            );
                            return Ok(value);
                        }
                        Returned::Permanent => {
                            let write =
                                self.finish(call_ref, attempt, "permanent", StepCallStatus::Failed, &wave, output);
                            settle(write, lazy).await?;
                            tracing::warn!(
                                source = "host",
                                "Step {short} returned a permanent error, not retried: {wave}"
                            );
                            return Ok(value);
                        }
                        Returned::Error(message) => (FailureKind::ReturnedError, message, elapsed),
                    },
                    Err(failure) => (failure.kind, failure.message, elapsed),
                }
            };
            progress.failures.push(AttemptFailure { attempt, kind: kind.as_str(), message: message.clone(), elapsed });
            let Some(delay) = policy.delay_after(attempt, jitter_unit(&policy)) else {
                let value = values::exhausted(&step, &progress.failures);
                let wave = values::to_wave(&value);
                let outcome = outcome("failed", Some(kind), Some(message.clone()), None, output);
                let write =
                    journal.finish_attempt(call_ref, attempt, outcome, Some((StepCallStatus::Exhausted, &wave)));
                settle(write, lazy).await?;
                tracing::error!(
                    source = "host",
                    "Step {short} failed all {attempt} attempts; the workflow receives retries-exhausted. \
                     Last error ({}):\n{}",
                    kind.as_str(),
                    indent(&message)
                );
                return Ok(value);
            };
            let outcome = outcome("failed", Some(kind), Some(message.clone()), Some(delay), output);
            lazy.push(journal.finish_attempt(call_ref, attempt, outcome, None));
            tracing::warn!(
                source = "host",
                "Step {short} being automatically retried (attempt {attempt} of {}) in {}\n{}",
                policy.max_attempts,
                humantime::format_duration(round_to_millis(delay)),
                indent(&format!("{}: {message}", kind.as_str()))
            );
            match started_at {
                Some(started) => wait_until(started.saturating_add(millis(delay)), short, attempt + 1).await,
                // A zero delay retries at once: a zero-length tokio sleep still waits for the next timer tick.
                None if delay.is_zero() => {}
                None => tokio::time::sleep(delay).await,
            }
            progress.attempt += 1;
        }
    }

    /// Queues the journal write of an attempt that ended the call with the value `wave`.
    fn finish(
        &self,
        call_ref: CallRef<'_>,
        attempt: u32,
        outcome_name: &'static str,
        status: StepCallStatus,
        wave: &str,
        output: Output,
    ) -> PendingWrite {
        let message = (status == StepCallStatus::Failed).then(|| wave.to_string());
        let outcome = outcome(outcome_name, None, message, None, output);
        self.journal.finish_attempt(call_ref, attempt, outcome, Some((status, wave)))
    }
}

/// Waits until the call's final write is durable, then reports any earlier
/// write of the call that failed (they were committed in order before it).
async fn settle(last: PendingWrite, earlier: Vec<PendingWrite>) -> Result<(), JournalError> {
    last.durable().await?;
    for write in earlier {
        write.durable().await?;
    }
    Ok(())
}

/// Rebuilds an interrupted call's state from its attempt rows: the failures
/// so far, the next attempt's number, and when its backoff wait ends.
fn resume(attempts: &[AttemptRecord], max_attempts: u32) -> Progress {
    let mut progress = Progress { max_attempts, attempt: 1, failures: Vec::new(), interrupted: None, due_at: None };
    for row in attempts {
        let number = u32::try_from(row.attempt).unwrap_or(u32::MAX);
        match row.finished_at {
            Some(finished_at) => {
                progress.failures.push(AttemptFailure {
                    attempt: number,
                    kind: FailureKind::parse(row.kind.as_deref().unwrap_or_default()).as_str(),
                    message: row.message.clone().unwrap_or_default(),
                    elapsed: Duration::from_millis(u64::try_from(finished_at - row.started_at).unwrap_or(0)),
                });
                progress.due_at = row.next_delay_ms.map(|delay| finished_at.saturating_add(delay));
                progress.attempt = number.saturating_add(1);
            }
            None => {
                progress.interrupted = Some(row.started_at);
                progress.due_at = None;
                progress.attempt = number;
            }
        }
    }
    progress
}

/// Refuses a value (as WAVE, what the journal stores) over the step's result limit.
fn check_size(wave: &str, max_result_bytes: u64) -> Result<(), CallFailure> {
    let size = wave.len();
    if u64::try_from(size).unwrap_or(u64::MAX) > max_result_bytes {
        return Err(CallFailure {
            kind: FailureKind::ResultTooLarge,
            message: format!(
                "the step returned {size} bytes (as WAVE), more than its result limit of {max_result_bytes} bytes"
            ),
        });
    }
    Ok(())
}

/// Sleeps until the wall-clock time `due_at` (ms), if it is still ahead.
async fn wait_until(due_at: i64, step: &str, attempt: u32) {
    let remaining = due_at - journal::now_ms();
    if remaining > 0 {
        let remaining = Duration::from_millis(u64::try_from(remaining).unwrap_or(0));
        tracing::info!(
            source = "host",
            "Step {step} waits the remaining {} of its backoff before attempt {attempt}",
            humantime::format_duration(remaining)
        );
        tokio::time::sleep(remaining).await;
    }
}

/// What an attempt wrote to stdout and stderr (when captured), for its journal row.
#[derive(Debug, Default)]
struct Output {
    stdout: Option<String>,
    stderr: Option<String>,
}

impl Output {
    /// Takes the attempt's output and shows it in the log.
    fn captured(step: &str, attempt: u32, report: &AttemptReport) -> Self {
        let keep = |text: &str, stream: &str| {
            if text.is_empty() {
                return None;
            }
            for line in text.lines() {
                tracing::info!(target: "stepbox::guest", source = format!("{step} {stream}").as_str(), "{line}");
            }
            tracing::debug!(source = "host", "attempt {attempt} of {step} wrote {} bytes to {stream}", text.len());
            Some(text.to_string())
        };
        Self { stdout: keep(&report.stdout, "stdout"), stderr: keep(&report.stderr, "stderr") }
    }
}

fn outcome(
    outcome: &'static str,
    kind: Option<FailureKind>,
    message: Option<String>,
    next_delay: Option<Duration>,
    output: Output,
) -> AttemptOutcome {
    AttemptOutcome {
        outcome,
        kind: kind.map(FailureKind::as_str),
        message,
        next_delay,
        stdout: output.stdout,
        stderr: output.stderr,
    }
}

/// A uniform draw in `[0, 1)` when the policy asks for jitter.
fn jitter_unit(policy: &RetryPolicy) -> f64 {
    if policy.jitter > 0.0 { rand::random::<f64>() } else { 0.0 }
}

fn millis(delay: Duration) -> i64 {
    i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)
}

fn round_to_millis(delay: Duration) -> Duration {
    Duration::from_millis(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("    {line}")).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(attempt: i64, started_at: i64, finished: Option<(i64, &str, Option<i64>)>) -> AttemptRecord {
        AttemptRecord {
            seq: 1,
            attempt,
            started_at,
            finished_at: finished.map(|f| f.0),
            outcome: finished.map(|_| "failed".to_string()),
            kind: finished.map(|f| f.1.to_string()),
            message: finished.map(|_| "boom".to_string()),
            next_delay_ms: finished.and_then(|f| f.2),
            stdout: None,
            stderr: None,
        }
    }

    #[test]
    fn resume_continues_after_the_last_finished_attempt_at_its_planned_time() {
        let progress = resume(&[row(1, 100, Some((150, "returned-error", Some(1000))))], 3);
        assert_eq!((progress.attempt, progress.interrupted, progress.due_at), (2, None, Some(1150)));
        assert_eq!(progress.failures.len(), 1);
        assert_eq!(progress.failures[0].elapsed, Duration::from_millis(50));
    }

    #[test]
    fn an_unfinished_attempt_is_interrupted_and_keeps_its_number() {
        let rows = [row(1, 100, Some((150, "trapped", Some(10)))), row(2, 200, None)];
        let progress = resume(&rows, 3);
        assert_eq!((progress.attempt, progress.interrupted, progress.due_at), (2, Some(200), None));
        assert_eq!(progress.failures[0].kind, "trapped");
    }

    #[test]
    fn a_call_with_no_attempt_yet_starts_at_one() {
        let progress = resume(&[], 3);
        assert_eq!((progress.attempt, progress.interrupted, progress.failures.len()), (1, None, 0));
    }
}
