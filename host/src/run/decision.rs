//! What happens after an attempt, as pure functions of the call's progress,
//! the attempt's outcome and the retry policy (the pattern of Temporal's
//! `retry_logic.rs`): hand the workflow its value, retry after a delay, or
//! give up with `retries-exhausted`. And where an interrupted call picks up,
//! from its journaled attempts. No I/O, no clock: tested with numbers.

use std::time::Duration;

use super::values::AttemptFailure;
use crate::config::RetryPolicy;
use crate::journal::{AttemptOutcome, AttemptRecord, FailureKind, Timestamp};

/// How an attempt ended, as the decision sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    /// `ok(...)`.
    Ok,
    /// The step's `permanent` case.
    Rejected,
    /// A failure that counts against the attempts; `retry_after` when the
    /// step asked for its own delay.
    Failed { kind: FailureKind, retry_after: Option<Duration> },
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Hand the workflow the step's own value (`ok` or `permanent`).
    Return,
    /// Run attempt `attempt + 1` after `delay`.
    Retry { delay: Duration },
    /// Every allowed attempt failed: hand the workflow `retries-exhausted`.
    Exhaust,
}

/// Decides after attempt number `attempt` ended as `ended`. `unit` in `[0, 1)`
/// draws the policy's jitter.
pub fn decide(attempt: u32, ended: &Ended, policy: &RetryPolicy, unit: f64) -> Decision {
    match ended {
        Ended::Ok | Ended::Rejected => Decision::Return,
        Ended::Failed { retry_after, .. } => match policy.delay_after(attempt, unit) {
            None => Decision::Exhaust,
            Some(delay) => Decision::Retry { delay: retry_after.unwrap_or(delay) },
        },
    }
}

/// Where a call that was interrupted picks up.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// The number of the next attempt (or of the unfinished one).
    pub attempt: u32,
    /// The failures so far, for `retries-exhausted`.
    pub failures: Vec<AttemptFailure>,
    /// An attempt that started (at this time) but has no outcome: the host
    /// stopped during it. It counts as failed (`interrupted`).
    pub unfinished: Option<Timestamp>,
    /// When the next attempt is due, if a backoff wait was under way.
    pub due_at: Option<Timestamp>,
}

impl Progress {
    /// A call with no attempt yet.
    pub fn new() -> Self {
        Self { attempt: 1, failures: Vec::new(), unfinished: None, due_at: None }
    }

    /// Rebuilds an interrupted call's progress from its attempt rows: the
    /// failures so far, the next attempt's number, and when it is due.
    pub fn resume(attempts: &[AttemptRecord]) -> Self {
        let mut progress = Self::new();
        for row in attempts {
            let number = u32::try_from(row.attempt).unwrap_or(u32::MAX);
            match (row.outcome, row.kind) {
                (Some(AttemptOutcome::Failed), kind) => {
                    let elapsed = row.finished_at.map_or(Duration::ZERO, |finished| finished.since(row.started_at));
                    progress.failures.push(AttemptFailure {
                        attempt: number,
                        kind: kind.unwrap_or(FailureKind::Trapped),
                        message: row.message.clone().unwrap_or_default(),
                        elapsed,
                    });
                    progress.due_at = row.retry_at;
                    progress.unfinished = None;
                    progress.attempt = number.saturating_add(1);
                }
                // An ok or rejected attempt ends its call; the call row says so.
                (Some(_), _) => progress.attempt = number.saturating_add(1),
                (None, _) => {
                    progress.unfinished = Some(row.started_at);
                    progress.due_at = None;
                    progress.attempt = number;
                }
            }
        }
        progress
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

/// When the attempt after an interrupted one is due: its planned delay
/// counted from the interrupted attempt's start, but never before `now`
/// (its real end is unknown; the host noticed it at `now`).
pub fn after_interruption(started: Timestamp, delay: Duration, now: Timestamp) -> Timestamp {
    started.plus(delay).max(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(attempt: i32, started: i64, ended: Option<(Option<i64>, FailureKind, Option<i64>)>) -> AttemptRecord {
        AttemptRecord {
            seq: 1,
            attempt,
            executor: "e".into(),
            started_at: Timestamp::from_millis(started),
            finished_at: ended.and_then(|e| e.0).map(Timestamp::from_millis),
            outcome: ended.map(|_| AttemptOutcome::Failed),
            kind: ended.map(|e| e.1),
            message: ended.map(|_| "boom".to_string()),
            retry_at: ended.and_then(|e| e.2).map(Timestamp::from_millis),
            stdout: None,
            stderr: None,
        }
    }

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy { max_attempts, ..RetryPolicy::default() }
    }

    #[test]
    fn values_return_failures_retry_then_exhaust() {
        let failed = Ended::Failed { kind: FailureKind::ReturnedError, retry_after: None };
        assert_eq!(decide(1, &Ended::Ok, &policy(3), 0.0), Decision::Return);
        assert_eq!(decide(1, &Ended::Rejected, &policy(3), 0.0), Decision::Return);
        assert_eq!(decide(1, &failed, &policy(3), 0.0), Decision::Retry { delay: Duration::from_secs(1) });
        assert_eq!(decide(2, &failed, &policy(3), 0.0), Decision::Retry { delay: Duration::from_secs(2) });
        assert_eq!(decide(3, &failed, &policy(3), 0.0), Decision::Exhaust);
        assert_eq!(decide(1, &failed, &policy(1), 0.0), Decision::Exhaust);
    }

    #[test]
    fn a_step_may_ask_for_its_own_delay_but_not_for_more_attempts() {
        let asked = Ended::Failed { kind: FailureKind::ReturnedError, retry_after: Some(Duration::from_millis(4500)) };
        assert_eq!(decide(1, &asked, &policy(3), 0.0), Decision::Retry { delay: Duration::from_millis(4500) });
        assert_eq!(decide(3, &asked, &policy(3), 0.0), Decision::Exhaust);
    }

    #[test]
    fn resume_continues_after_the_last_finished_attempt_at_its_planned_time() {
        let progress = Progress::resume(&[row(1, 100, Some((Some(150), FailureKind::ReturnedError, Some(1150))))]);
        assert_eq!(
            (progress.attempt, progress.unfinished, progress.due_at),
            (2, None, Some(Timestamp::from_millis(1150)))
        );
        assert_eq!(progress.failures[0].elapsed, Duration::from_millis(50));
    }

    #[test]
    fn an_unfinished_attempt_is_interrupted_and_keeps_its_number() {
        let rows = [row(1, 100, Some((Some(150), FailureKind::Trapped, Some(160)))), row(2, 200, None)];
        let progress = Progress::resume(&rows);
        assert_eq!(
            (progress.attempt, progress.unfinished, progress.due_at),
            (2, Some(Timestamp::from_millis(200)), None)
        );
        assert_eq!(progress.failures[0].kind, FailureKind::Trapped);
    }

    #[test]
    fn an_interrupted_attempt_of_unknown_length_counts_with_no_duration() {
        let rows = [row(1, 100, Some((None, FailureKind::Interrupted, Some(5000))))];
        let progress = Progress::resume(&rows);
        assert_eq!(progress.failures[0].elapsed, Duration::ZERO);
        assert_eq!(progress.due_at, Some(Timestamp::from_millis(5000)));
    }

    #[test]
    fn the_attempt_after_an_interruption_is_never_due_in_the_past() {
        let started = Timestamp::from_millis(1000);
        assert_eq!(after_interruption(started, Duration::from_secs(2), Timestamp::from_millis(1500)).millis(), 3000);
        assert_eq!(after_interruption(started, Duration::from_secs(2), Timestamp::from_millis(9000)).millis(), 9000);
        assert_eq!(Progress::resume(&[]), Progress::new());
    }
}
