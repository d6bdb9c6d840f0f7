//! What one attempt may consume: time, memory, output and the size of the
//! value it returns. Defaults are chosen to stop runaway guests without
//! getting in the way of real steps (see the README's security section).

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// The limits one attempt runs under (recorded by value with each workflow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AttemptLimits {
    /// Wall-clock time of the attempt, CPU-bound loops included (epoch interruption).
    #[serde(with = "crate::config::units::exact_duration")]
    pub timeout: Duration,
    /// Largest size any one linear memory may grow to.
    pub max_memory_bytes: u64,
    /// Bytes of stdout and of stderr kept per attempt (the rest is counted, not kept).
    pub max_output_bytes: u64,
    /// Largest value the step may return, measured as WAVE text (what the journal stores).
    pub max_result_bytes: u64,
}

impl Default for AttemptLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            max_memory_bytes: 256 << 20,
            max_output_bytes: 64 << 10,
            max_result_bytes: 1 << 20,
        }
    }
}

/// Limits one source sets; unset fields fall through.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LimitOverrides {
    #[serde(default, with = "crate::config::units::duration", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, with = "crate::config::units::size", skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    #[serde(default, with = "crate::config::units::size", skip_serializing_if = "Option::is_none")]
    pub output: Option<ByteSize>,
    #[serde(default, with = "crate::config::units::size", skip_serializing_if = "Option::is_none")]
    pub result: Option<ByteSize>,
}

impl AttemptLimits {
    /// Refuses limits no attempt could run under.
    pub fn validate(&self) -> Result<(), String> {
        if self.timeout < Duration::from_millis(10) {
            return Err(format!("timeout {:?} is below 10ms", self.timeout));
        }
        if self.max_memory_bytes < 1 << 20 {
            return Err(format!("memory {} is below 1 MiB", ByteSize::b(self.max_memory_bytes).display().iec()));
        }
        Ok(())
    }
}

impl LimitOverrides {
    /// `base` with every limit this source sets replaced.
    pub fn apply(&self, base: AttemptLimits) -> AttemptLimits {
        AttemptLimits {
            timeout: self.timeout.unwrap_or(base.timeout),
            max_memory_bytes: self.memory.map_or(base.max_memory_bytes, |size| size.as_u64()),
            max_output_bytes: self.output.map_or(base.max_output_bytes, |size| size.as_u64()),
            max_result_bytes: self.result.map_or(base.max_result_bytes, |size| size.as_u64()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_survive_json_exactly_and_tiny_ones_are_refused() {
        let overrides = LimitOverrides { memory: Some(ByteSize::mb(100)), ..Default::default() };
        let text = serde_json::to_string(&overrides).unwrap();
        assert_eq!(text, r#"{"memory":100000000}"#);
        assert_eq!(serde_json::from_str::<LimitOverrides>(&text).unwrap(), overrides);
        let tiny = AttemptLimits { timeout: Duration::ZERO, ..AttemptLimits::default() };
        assert!(tiny.validate().unwrap_err().contains("below 10ms"));
        let small = AttemptLimits { max_memory_bytes: 1000, ..AttemptLimits::default() };
        assert!(small.validate().unwrap_err().contains("below 1 MiB"));
    }

    #[test]
    fn overrides_replace_only_what_they_set() {
        let overrides = LimitOverrides { memory: Some(ByteSize::mib(8)), ..Default::default() };
        let limits = overrides.apply(AttemptLimits::default());
        assert_eq!(limits.max_memory_bytes, 8 << 20);
        assert_eq!(limits.timeout, AttemptLimits::default().timeout);
    }
}
