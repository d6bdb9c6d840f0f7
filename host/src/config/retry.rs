//! The retry policy and its backoff schedule. Knows time, not SQL or wasm.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a step is retried; defaults match DBOS' `@DBOS.step(retries_allowed=True)`.
/// Recorded by value with each workflow, so a resume retries as the start did.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub max_attempts: u32,
    /// Delay before the second attempt.
    #[serde(rename = "interval", with = "super::units::exact_duration")]
    pub initial_interval: Duration,
    /// Multiplier applied to each further delay.
    pub backoff_rate: f64,
    /// Upper bound of any delay.
    #[serde(with = "super::units::exact_duration")]
    pub max_interval: Duration,
    /// Fraction (0..=1) of each delay that may be randomly shaved off.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_interval: Duration::from_secs(1),
            backoff_rate: 2.0,
            max_interval: Duration::from_secs(3600),
            jitter: 0.0,
        }
    }
}

/// A policy value outside its allowed range.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PolicyError {
    #[error("max-attempts must be at least 1 (got {0})")]
    MaxAttempts(u32),
    #[error("backoff-rate must be a finite number >= 1.0 (got {0})")]
    BackoffRate(f64),
    #[error("jitter must be between 0.0 and 1.0 (got {0})")]
    Jitter(f64),
}

impl RetryPolicy {
    /// Refuses values that would make the schedule meaningless.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.max_attempts == 0 {
            return Err(PolicyError::MaxAttempts(self.max_attempts));
        }
        if !self.backoff_rate.is_finite() || self.backoff_rate < 1.0 {
            return Err(PolicyError::BackoffRate(self.backoff_rate));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(PolicyError::Jitter(self.jitter));
        }
        Ok(())
    }

    /// The delay before attempt `done + 1` once `done` attempts have failed,
    /// or `None` when no attempt is left (so nothing sleeps after the last one).
    /// `unit` in `[0, 1)` draws the jitter; pass 0.0 for none.
    pub fn delay_after(&self, done: u32, unit: f64) -> Option<Duration> {
        if done == 0 || done >= self.max_attempts {
            return None;
        }
        let exponent = i32::try_from(done - 1).unwrap_or(i32::MAX);
        let cap = self.max_interval.as_secs_f64();
        let planned = (self.initial_interval.as_secs_f64() * self.backoff_rate.powi(exponent)).min(cap);
        let jittered = planned * (1.0 - self.jitter * unit.clamp(0.0, 1.0));
        Some(Duration::try_from_secs_f64(jittered).unwrap_or(self.max_interval))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(values: &[f64]) -> Vec<Duration> {
        values.iter().map(|s| Duration::from_secs_f64(*s)).collect()
    }

    fn schedule(policy: &RetryPolicy) -> Vec<Duration> {
        (1..).map_while(|done| policy.delay_after(done, 0.0)).collect()
    }

    #[test]
    fn defaults_match_dbos() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.max_attempts, 3);
        assert_eq!(schedule(&policy), secs(&[1.0, 2.0]));
    }

    #[test]
    fn no_delay_after_the_last_attempt() {
        let policy = RetryPolicy { max_attempts: 1, ..RetryPolicy::default() };
        assert_eq!(policy.delay_after(1, 0.0), None);
        assert_eq!(RetryPolicy::default().delay_after(3, 0.0), None);
        assert_eq!(RetryPolicy::default().delay_after(0, 0.0), None);
    }

    #[test]
    fn schedule_is_exponential_and_capped() {
        let policy = RetryPolicy {
            max_attempts: 7,
            initial_interval: Duration::from_secs(2),
            backoff_rate: 2.0,
            max_interval: Duration::from_secs(20),
            jitter: 0.0,
        };
        assert_eq!(schedule(&policy), secs(&[2.0, 4.0, 8.0, 16.0, 20.0, 20.0]));
    }

    #[test]
    fn huge_exponents_stay_at_the_cap() {
        let policy = RetryPolicy { max_attempts: u32::MAX, backoff_rate: 10.0, ..RetryPolicy::default() };
        assert_eq!(policy.delay_after(5000, 0.0), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn jitter_only_shortens_within_its_fraction() {
        let policy = RetryPolicy { jitter: 0.5, ..RetryPolicy::default() };
        assert_eq!(policy.delay_after(2, 0.0), Some(Duration::from_secs(2)));
        assert_eq!(policy.delay_after(2, 0.5), Some(Duration::from_millis(1500)));
        let shortest = policy.delay_after(2, 0.999_999).expect("attempt left");
        assert!(shortest >= Duration::from_millis(1000), "{shortest:?}");
    }

    #[test]
    fn validation_names_the_bad_value() {
        let bad = |policy: RetryPolicy| policy.validate().unwrap_err();
        assert_eq!(bad(RetryPolicy { max_attempts: 0, ..Default::default() }), PolicyError::MaxAttempts(0));
        assert_eq!(bad(RetryPolicy { backoff_rate: 0.5, ..Default::default() }), PolicyError::BackoffRate(0.5));
        assert_eq!(bad(RetryPolicy { jitter: 1.5, ..Default::default() }), PolicyError::Jitter(1.5));
        assert_eq!(RetryPolicy::default().validate(), Ok(()));
    }
}
