//! One step call, end to end: replay it from the journal if it finished,
//! continue its attempts if it was interrupted, else journal it; run each
//! attempt in a fresh instance, classify the outcome, let `decision` say
//! what follows, back off, and hand the workflow the value, the step's
//! permanent error, or `retries-exhausted`.
//!
//! Write ordering (the journal is the source of truth; writes go through its
//! group commit, in order):
//! 1. each attempt's start is queued before the guest starts running (with
//!    the step call row, for the call's first attempt) and is durable with
//!    the attempt's outcome, or within the journal's lazy window if the
//!    attempt takes longer;
//! 2. a failed attempt's outcome is queued before the host waits for the
//!    next attempt; the time the next one is due is in that row, so a
//!    restarted host waits only what remains of it;
//! 3. the outcome that ends the call (and the call's output) is durable
//!    before the workflow sees the value.

use std::future::Future;
use std::time::Duration;

use tracing::Instrument as _;
use wasmtime::component::types::{ComponentFunc, Type};
use wasmtime::component::{ComponentExportIndex, InstancePre, Val};

use super::clock::{Clock, SystemClock};
use super::context::CallSlot;
use super::decision::{self, Decision, Ended, Progress};
use super::values::{self, AttemptFailure, Returned, TooLarge};
use crate::config::{RetryPolicy, StepName, StepSettings};
use crate::journal::{
    AttemptEnd, AttemptOutcome, CallEnd, CallRef, CallStatus, FailureKind, Journal, JournalError, NewStepCall,
    PendingWrite, Timestamp, Waiting,
};
use crate::wasm::{AttemptReport, CallFailure, GuestState, Interrupt, Sandbox, StepIdentity, StopReason};

/// A step function ready to be called: its component, export, result type and settings.
pub struct StepTarget {
    pub name: StepName,
    pub pre: InstancePre<GuestState>,
    pub export: ComponentExportIndex,
    /// The step's `result<T, E>`, to read journaled outputs back.
    pub result_type: Type,
    /// Its signature, to read the JSON arguments of `start-call`.
    pub func: ComponentFunc,
    pub settings: StepSettings,
}

/// Runs one attempt of a step: the sandbox in production, a script in tests.
pub trait Attempts: Send + Sync + 'static {
    /// Runs `target` once with `params`; `interrupt` stops it early.
    fn attempt(
        &self,
        target: &StepTarget,
        identity: StepIdentity,
        params: &[Val],
        interrupt: &Interrupt,
    ) -> impl Future<Output = AttemptReport> + Send;
}

impl Attempts for Sandbox {
    async fn attempt(
        &self,
        target: &StepTarget,
        identity: StepIdentity,
        params: &[Val],
        interrupt: &Interrupt,
    ) -> AttemptReport {
        self.call_step(&target.pre, &target.export, identity, &target.settings.grants, params, interrupt).await
    }
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
    #[error("the workflow must stop ({0:?})")]
    Stopped(StopReason),
    /// Its next attempt is due later than the park threshold: the workflow
    /// gives up its slot and is claimed again then (queued workflows only).
    #[error("the workflow waits for its next attempt until {0}; it gives up its slot until then")]
    Parked(Timestamp),
    /// Its own code waits (a sleep, a `recv`) longer than the park threshold:
    /// the workflow gives up its slot (queued workflows only).
    #[error("the workflow waits ({0:?}); it gives up its slot until then")]
    Waiting(Waiting),
}

impl InvokeError {
    /// What the error means for whoever must act on it.
    pub fn disposition(&self) -> crate::Disposition {
        match self {
            Self::Journal(error) => error.disposition(),
            // The workflow or its inputs changed since the journal recorded them: a human fixes that.
            Self::NonDeterminism { .. } | Self::UnreadableOutput { .. } => crate::Disposition::Refused,
            Self::Stopped(_) | Self::Parked(_) | Self::Waiting(_) => crate::Disposition::Stopped,
        }
    }
}

/// Runs step calls against the journal and the sandbox. It keeps nothing of
/// the workflows it serves: each call brings its workflow's [`CallSlot`].
pub struct Invoker<A: Attempts = Sandbox, C: Clock = SystemClock> {
    journal: Journal,
    attempts: A,
    clock: C,
}

impl<A: Attempts, C: Clock> Invoker<A, C> {
    /// An invoker writing to `journal`, running attempts with `attempts`, waiting on `clock`.
    pub fn new(journal: Journal, attempts: A, clock: C) -> Self {
        Self { journal, attempts, clock }
    }

    /// Makes `slot`'s call of `target`: replays it if the journal recorded
    /// its end, continues its attempts if it was interrupted, else runs it.
    /// Guest failures become values for the workflow; only the journal,
    /// replay and a stop fail the call. With the slot's `park_after`, a
    /// backoff longer than it parks the workflow ([`InvokeError::Parked`]).
    pub async fn call(&self, slot: CallSlot, target: &StepTarget, params: &[Val]) -> Result<Val, InvokeError> {
        let CallSlot { lease, interrupt, seq, recorded, park_after } = slot;
        let workflow_id = lease.workflow_id.as_str();
        let step = target.name.to_string();
        let input = values::to_wave_tuple(params);
        let call_ref = CallRef { lease: &lease, seq };
        let mut policy = target.settings.policy;
        let (progress, new_call) = match recorded {
            Some(call) if call.step != step || call.input != input => {
                return Err(InvokeError::NonDeterminism {
                    workflow_id: workflow_id.to_string(),
                    seq,
                    recorded: format!("{}{}", call.step, call.input),
                    now: format!("{step}{input}"),
                });
            }
            Some(call) if call.status == CallStatus::Cancelled => {
                return Err(InvokeError::Stopped(StopReason::Cancelled));
            }
            Some(call) if call.status != CallStatus::Running => {
                let output = call.output.unwrap_or_default();
                let value = Val::from_wave(&target.result_type, &output).map_err(|error| {
                    InvokeError::UnreadableOutput { seq, step: step.clone(), message: error.to_string() }
                })?;
                tracing::debug!(
                    source = "host",
                    "Step {} (call {seq}) replayed from the journal: {output}",
                    target.name.function
                );
                return Ok(value);
            }
            Some(call) => {
                policy.max_attempts = u32::try_from(call.max_attempts).unwrap_or(policy.max_attempts);
                let progress = Progress::resume(&self.journal.call_attempts(workflow_id, seq).await?);
                tracing::info!(
                    source = "host",
                    "Step {} (call {seq}) resumes at attempt {} of {}",
                    target.name.function,
                    progress.attempt.min(policy.max_attempts),
                    policy.max_attempts
                );
                (progress, None)
            }
            None => (Progress::new(), Some(values::to_json_tuple(params))),
        };
        let call = Call {
            invoker: self,
            target,
            call_ref,
            policy,
            interrupt: &interrupt,
            step: &step,
            input: &input,
            park_after,
        };
        let span = crate::telemetry::call_span(workflow_id, seq, &step, &target.name.function);
        call.run(progress, new_call, params).instrument(span).await
    }
}

/// One step call in progress.
struct Call<'a, A: Attempts, C: Clock> {
    invoker: &'a Invoker<A, C>,
    target: &'a StepTarget,
    call_ref: CallRef<'a>,
    policy: RetryPolicy,
    interrupt: &'a Interrupt,
    step: &'a str,
    input: &'a str,
    park_after: Option<Duration>,
}

impl<A: Attempts, C: Clock> Call<'_, A, C> {
    fn short(&self) -> &str {
        &self.target.name.function
    }

    async fn run(
        &self,
        mut progress: Progress,
        mut new_call: Option<serde_json::Value>,
        params: &[Val],
    ) -> Result<Val, InvokeError> {
        let journal = &self.invoker.journal;
        let clock = &self.invoker.clock;
        // Writes nobody waited for yet: checked before each attempt, settled with the call.
        let mut lazy: Vec<PendingWrite> = Vec::new();
        // A backoff under way when the host stopped: its remainder is worth a log line.
        let mut resumed_wait = progress.due_at.is_some();
        loop {
            let attempt = progress.attempt;
            if attempt > self.policy.max_attempts {
                // Every allowed attempt already failed (the last one just before a stop).
                return self.exhaust(&progress.failures, None, lazy).await;
            }
            let (ended, result, end) = match progress.unfinished.take() {
                // The host stopped during this attempt: it counts, its end is unknown.
                Some(started) => {
                    let failure = CallFailure {
                        kind: FailureKind::Interrupted,
                        message: format!(
                            "the host stopped while this attempt ran (noticed at {}); its end is unknown",
                            clock.now()
                        ),
                    };
                    let ended = Ended::Failed { kind: failure.kind, retry_after: None };
                    (ended, Err(failure), Attempt { started, finished: None, stdout: None, stderr: None })
                }
                None => {
                    if let Some(due_at) = progress.due_at.take() {
                        if self.park_after.is_some_and(|threshold| due_at.since(clock.now()) > threshold) {
                            // The failed attempt (with its retry time) is durable before the slot is given up.
                            self.settled(settle_all(lazy)).await?;
                            return Err(InvokeError::Parked(due_at));
                        }
                        self.wait_until(due_at, attempt, std::mem::take(&mut resumed_wait)).await;
                    }
                    if let Some(reason) = self.interrupt.refusal() {
                        return self.stopped_between_attempts(reason, lazy).await;
                    }
                    if let Some(error) = lazy.iter_mut().find_map(PendingWrite::failed) {
                        return Err(error.into());
                    }
                    let input_json = new_call.take();
                    let first = input_json.as_ref().map(|input_json| NewStepCall {
                        step: self.step,
                        input: self.input,
                        input_json,
                        max_attempts: self.policy.max_attempts,
                    });
                    let started = clock.now();
                    lazy.push(journal.start_attempt(self.call_ref, attempt, started, first.as_ref()));
                    let identity = StepIdentity {
                        workflow_id: self.call_ref.lease.workflow_id.clone(),
                        step: self.step.to_string(),
                        attempt,
                        policy: self.policy,
                        limits: self.target.settings.limits,
                    };
                    let span = crate::telemetry::attempt_span(attempt);
                    let report = self
                        .invoker
                        .attempts
                        .attempt(self.target, identity, params, self.interrupt)
                        .instrument(span.clone())
                        .await;
                    let end = Attempt { started, finished: Some(clock.now()), stdout: None, stderr: None };
                    let (ended, result) = self.classify(report.result);
                    let took = end.finished.map_or(Duration::ZERO, |finished| finished.since(started));
                    let (outcome, kind) = match &ended {
                        Ended::Ok => (AttemptOutcome::Ok, None),
                        Ended::Rejected => (AttemptOutcome::Rejected, None),
                        Ended::Failed { kind, .. } => (AttemptOutcome::Failed, Some(kind.as_column())),
                    };
                    crate::telemetry::attempt(self.step, outcome.as_column(), kind, took);
                    let failure = result.as_ref().err().map(|failure| failure.message.as_str());
                    crate::telemetry::ended(&span, outcome.as_column(), kind, failure);
                    drop(span);
                    let end = end
                        .with_output(self.short(), attempt, report.stdout, report.stderr, result.as_ref().err())
                        .with_note(report.log_note);
                    (ended, result, end)
                }
            };
            let failure = match result {
                Ok(value) => {
                    let (outcome, status) = match ended {
                        Ended::Rejected => (AttemptOutcome::Rejected, CallStatus::Rejected),
                        _ => (AttemptOutcome::Ok, CallStatus::Succeeded),
                    };
                    return self.finish(value, attempt, outcome, status, end, lazy).await;
                }
                Err(failure) => failure,
            };
            // A stop during the attempt ends the call here.
            let stopped = matches!(failure.kind, FailureKind::Cancelled | FailureKind::Interrupted);
            if let Some(reason) = self.interrupt.reason().filter(|_| stopped && end.finished.is_some()) {
                return self.stopped(reason, attempt, failure, end, lazy).await;
            }
            let elapsed = end.finished.map_or(Duration::ZERO, |finished| finished.since(end.started));
            progress.failures.push(AttemptFailure {
                attempt,
                kind: failure.kind,
                message: failure.message.clone(),
                elapsed,
            });
            match decision::decide(attempt, &ended, &self.policy, jitter_unit(&self.policy)) {
                Decision::Retry { delay } => {
                    let due_at = match end.finished {
                        Some(finished) => finished.plus(delay),
                        None => decision::after_interruption(end.started, delay, clock.now()),
                    };
                    lazy.push(journal.finish_attempt(self.call_ref, attempt, end.failed(&failure, Some(due_at)), None));
                    tracing::warn!(
                        source = "host",
                        "Step {} being automatically retried (attempt {attempt} of {}) in {}\n{}",
                        self.short(),
                        self.policy.max_attempts,
                        humantime::format_duration(round_to_millis(delay)),
                        indent(&format!("{}: {}", failure.kind, failure.message))
                    );
                    progress.due_at = Some(due_at);
                    progress.attempt += 1;
                }
                // A failure never returns a value: only `Retry` or `Exhaust` reach here.
                Decision::Exhaust | Decision::Return => {
                    return self.exhaust(&progress.failures, Some((attempt, failure, end)), lazy).await;
                }
            }
        }
    }

    /// Sorts an attempt's result into how it ended and either the value it
    /// hands the workflow (`ok` or `permanent`) or its failure.
    fn classify(&self, result: Result<Val, CallFailure>) -> (Ended, Result<Val, CallFailure>) {
        let limit = self.target.settings.limits.max_result_bytes;
        let returned = result.and_then(|value| match values::to_wave_within(&value, limit) {
            Ok(_) => Ok(value),
            Err(TooLarge) => Err(CallFailure {
                kind: FailureKind::ResultTooLarge,
                message: format!("the step returned a value longer than its result limit of {limit} bytes (as WAVE)"),
            }),
        });
        match returned {
            Ok(value) => match values::classify(&value) {
                Returned::Ok => (Ended::Ok, Ok(value)),
                Returned::Rejected => (Ended::Rejected, Ok(value)),
                Returned::Error { message, retry_after } => {
                    let kind = FailureKind::ReturnedError;
                    (Ended::Failed { kind, retry_after }, Err(CallFailure { kind, message }))
                }
            },
            Err(failure) => (Ended::Failed { kind: failure.kind, retry_after: None }, Err(failure)),
        }
    }

    /// Journals the attempt that ends the call with the step's own value and
    /// hands it over once durable.
    async fn finish(
        &self,
        value: Val,
        attempt: u32,
        outcome: AttemptOutcome,
        status: CallStatus,
        end: Attempt,
        lazy: Vec<PendingWrite>,
    ) -> Result<Val, InvokeError> {
        let wave = values::to_wave(&value);
        let message = (status == CallStatus::Rejected).then(|| wave.clone());
        let attempt_end = AttemptEnd {
            outcome,
            kind: None,
            message,
            retry_at: None,
            finished_at: end.finished,
            stdout: end.stdout,
            stderr: end.stderr,
        };
        let call_end = CallEnd { status, output: Some(wave.clone()), output_json: Some(values::to_json(&value)) };
        self.settled(settle(
            self.invoker.journal.finish_attempt(self.call_ref, attempt, attempt_end, Some(call_end)),
            lazy,
        ))
        .await?;
        if status == CallStatus::Rejected {
            tracing::warn!(source = "host", "Step {} returned a permanent error, not retried: {wave}", self.short());
        } else {
            tracing::debug!(source = "host", "Step {} succeeded on attempt {attempt}", self.short());
        }
        Ok(value)
    }

    /// Every allowed attempt failed: journals the last one (if it ran now)
    /// with the call's exhaustion, and hands the workflow `retries-exhausted`.
    async fn exhaust(
        &self,
        failures: &[AttemptFailure],
        last: Option<(u32, CallFailure, Attempt)>,
        lazy: Vec<PendingWrite>,
    ) -> Result<Val, InvokeError> {
        let value = values::exhausted(self.step, failures);
        let wave = values::to_wave(&value);
        let call_end =
            CallEnd { status: CallStatus::Exhausted, output: Some(wave), output_json: Some(values::to_json(&value)) };
        let (attempt, end) = match &last {
            Some((attempt, failure, end)) => (*attempt, end.clone().failed(failure, None)),
            // Nothing ran now: close the call under its last attempt's row, unchanged.
            None => (
                failures.last().map_or(1, |failure| failure.attempt),
                AttemptEnd {
                    outcome: AttemptOutcome::Failed,
                    kind: failures.last().map(|failure| failure.kind),
                    message: None,
                    retry_at: None,
                    finished_at: None,
                    stdout: None,
                    stderr: None,
                },
            ),
        };
        self.settled(settle(self.invoker.journal.finish_attempt(self.call_ref, attempt, end, Some(call_end)), lazy))
            .await?;
        let (kind, message) =
            last.map_or((FailureKind::Interrupted, String::new()), |(_, failure, _)| (failure.kind, failure.message));
        tracing::error!(
            source = "host",
            "Step {} failed all {} attempts; the workflow receives retries-exhausted. Last error ({kind}):\n{}",
            self.short(),
            failures.len(),
            indent(&message)
        );
        Ok(value)
    }

    /// The workflow must stop during attempt `attempt`: journals the attempt
    /// (and, for a cancel or deadline, the call as cancelled), then stops.
    async fn stopped(
        &self,
        reason: StopReason,
        attempt: u32,
        failure: CallFailure,
        end: Attempt,
        lazy: Vec<PendingWrite>,
    ) -> Result<Val, InvokeError> {
        let journal = &self.invoker.journal;
        match reason {
            // Nothing more may be written.
            StopReason::LeaseLost | StopReason::LeaseExpired => {}
            StopReason::Cancelled | StopReason::Deadline => {
                let call_end = CallEnd { status: CallStatus::Cancelled, output: None, output_json: None };
                let write = journal.finish_attempt(self.call_ref, attempt, end.failed(&failure, None), Some(call_end));
                self.settled(settle(write, lazy)).await?;
            }
            StopReason::Shutdown => {
                // It counts as an interrupted attempt; a resume retries after the policy's delay.
                let delay = self.policy.delay_after(attempt, 0.0);
                let due_at = delay.map(|delay| end.finished.unwrap_or_else(|| self.invoker.clock.now()).plus(delay));
                let write = journal.finish_attempt(self.call_ref, attempt, end.failed(&failure, due_at), None);
                self.settled(settle(write, lazy)).await?;
            }
        }
        Err(InvokeError::Stopped(reason))
    }

    /// The workflow must stop between two attempts (none runs): settles what
    /// was written and, for a cancel or deadline, closes the call as cancelled.
    async fn stopped_between_attempts(&self, reason: StopReason, lazy: Vec<PendingWrite>) -> Result<Val, InvokeError> {
        if reason.lease_gone() {
            // Nothing more is this process's to write, or to wait for.
            return Err(InvokeError::Stopped(reason));
        }
        self.settled(settle_all(lazy)).await?;
        if matches!(reason, StopReason::Cancelled | StopReason::Deadline) {
            self.invoker.journal.cancel_call(self.call_ref).await?;
        }
        Err(InvokeError::Stopped(reason))
    }

    /// Waits until `writes` are durable, unless the workflow's lease is gone
    /// meanwhile: then nothing is this process's to wait for any more, and
    /// the workflow stops (in an outage, at its lease's local deadline, not
    /// at the end of the outage budget).
    async fn settled(&self, writes: impl Future<Output = Result<(), JournalError>>) -> Result<(), InvokeError> {
        tokio::select! {
            biased;
            reason = self.interrupt.lease_gone() => Err(InvokeError::Stopped(reason)),
            settled = writes => settled.map_err(InvokeError::from),
        }
    }

    /// Waits until `due_at` (the backoff before `attempt`), or until the workflow must stop; says so
    /// when the wait was under way before the host stopped (`resumed`).
    async fn wait_until(&self, due_at: Timestamp, attempt: u32, resumed: bool) {
        let clock = &self.invoker.clock;
        let remaining = due_at.since(clock.now());
        if remaining.is_zero() {
            return;
        }
        if resumed {
            tracing::info!(
                source = "host",
                "Step {} waits the remaining {} of its backoff before attempt {attempt}",
                self.short(),
                humantime::format_duration(round_to_millis(remaining))
            );
        }
        tokio::select! {
            () = clock.sleep_until(due_at) => {}
            _ = self.interrupt.refused() => {}
        }
    }
}

/// An attempt's times and captured output, on its way to its journal row.
#[derive(Debug, Clone)]
struct Attempt {
    started: Timestamp,
    /// `None` when the host stopped during it and its end is unknown.
    finished: Option<Timestamp>,
    stdout: Option<String>,
    stderr: Option<String>,
}

impl Attempt {
    /// Keeps what the attempt wrote (when captured) and shows it in the log;
    /// a trap's stderr is already in its message, and is shown with it.
    fn with_output(
        mut self,
        step: &str,
        attempt: u32,
        stdout: String,
        stderr: String,
        failure: Option<&CallFailure>,
    ) -> Self {
        let shown_with_failure = failure.is_some_and(|failure| failure.kind == FailureKind::Trapped);
        let keep = |text: String, stream: &str, show: bool| {
            if text.is_empty() {
                return None;
            }
            if show {
                for line in text.lines() {
                    tracing::info!(target: "stepbox::guest", source = format!("{step} {stream}").as_str(), "{line}");
                }
            }
            tracing::debug!(source = "host", "attempt {attempt} of {step} wrote {} bytes to {stream}", text.len());
            Some(text)
        };
        self.stdout = keep(stdout, "stdout", true);
        self.stderr = keep(stderr, "stderr", !shown_with_failure);
        self
    }

    /// Adds a note (of dropped log bytes) to the journaled stderr.
    fn with_note(mut self, note: Option<String>) -> Self {
        if let Some(note) = note {
            self.stderr = Some(match self.stderr.take() {
                Some(stderr) => format!("{stderr}\n{note}"),
                None => note,
            });
        }
        self
    }

    /// The journal row's end of a failed attempt.
    fn failed(self, failure: &CallFailure, retry_at: Option<Timestamp>) -> AttemptEnd {
        AttemptEnd {
            outcome: AttemptOutcome::Failed,
            kind: Some(failure.kind),
            message: Some(failure.message.clone()),
            retry_at,
            finished_at: self.finished,
            stdout: self.stdout,
            stderr: self.stderr,
        }
    }
}

/// Waits until the call's final write is durable, then reports any earlier
/// write of the call that failed (they were committed in order before it).
async fn settle(last: PendingWrite, earlier: Vec<PendingWrite>) -> Result<(), JournalError> {
    settle_all(earlier.into_iter().chain(std::iter::once(last)).collect()).await
}

/// Waits for every write; the first one's error in write order if any failed
/// (a later write of the same call fails because an earlier one did: the
/// earlier error, an outage say, is the cause to report).
async fn settle_all(writes: Vec<PendingWrite>) -> Result<(), JournalError> {
    let mut first_error = None;
    for write in writes {
        if let Err(error) = write.durable().await {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
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

#[cfg(test)]
mod tests;
