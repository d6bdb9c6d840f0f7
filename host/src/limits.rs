//! What one attempt may consume: time, memory, output and the size of the
//! value it returns. Defaults are chosen to stop runaway guests without
//! getting in the way of real steps (see the README's security section).

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::settings::{duration, duration_text};

/// The limits one attempt runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptLimits {
    /// Wall-clock time of the attempt, CPU-bound loops included (epoch interruption).
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
    #[serde(
        default,
        deserialize_with = "duration",
        serialize_with = "duration_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<ByteSize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<ByteSize>,
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

/// Parses "64MiB", "1 GiB", "512KB"; the error says what is accepted.
pub fn parse_size(text: &str) -> Result<ByteSize, String> {
    text.trim().parse::<ByteSize>().map_err(|error| format!("invalid size {text:?} ({error}); write it like \"64MiB\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_humans_write_them() {
        assert_eq!(parse_size("64MiB").unwrap().as_u64(), 64 << 20);
        assert_eq!(parse_size("1 GiB").unwrap().as_u64(), 1 << 30);
        assert!(parse_size("lots").unwrap_err().contains("\"64MiB\""));
    }

    #[test]
    fn overrides_replace_only_what_they_set() {
        let overrides = LimitOverrides { memory: Some(ByteSize::mib(8)), ..Default::default() };
        let limits = overrides.apply(AttemptLimits::default());
        assert_eq!(limits.max_memory_bytes, 8 << 20);
        assert_eq!(limits.timeout, AttemptLimits::default().timeout);
    }
}
