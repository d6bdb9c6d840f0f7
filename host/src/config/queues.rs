//! Queue limits as people declare them: `host queue set` flags, or a TOML
//! file for `host queue apply` (one `[queues.NAME]` table per queue), with
//! rates written "100/1m".

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::units::parse_duration;
use crate::journal::QueueLimits;

/// Queue names appear in URLs, NOTIFY payloads and logs: a plain alphabet.
pub fn check_queue_name(name: &str) -> Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if (1..=100).contains(&name.len()) && name.chars().all(plain) {
        Ok(())
    } else {
        Err(format!("invalid queue name {name:?}: use 1 to 100 letters, digits, '-', '_' or '.'"))
    }
}

/// A start-rate limit: at most `starts` first starts per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub starts: i32,
    pub period: Duration,
}

/// Parses "100/1m", "5/1s": starts per period.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let explain = || format!("invalid rate {text:?}: write starts per period, like \"100/1m\" or \"5/1s\"");
    let (starts, period) = text.split_once('/').ok_or_else(explain)?;
    let starts: i32 = starts.trim().parse().map_err(|_| explain())?;
    let period = parse_duration(period).map_err(|_| explain())?;
    if starts < 1 || period < Duration::from_millis(1) || period > Duration::from_secs(86_400 * 366) {
        return Err(format!("{}; the count must be at least 1 and the period between 1ms and a year", explain()));
    }
    Ok(Rate { starts, period })
}

/// One queue's limits as declared; absent means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct QueueSpec {
    /// Most workflows of the queue running at once, across all workers.
    pub concurrency: Option<u32>,
    /// Most workflows of one partition key running at once.
    pub partition_concurrency: Option<u32>,
    /// Most first starts per period, "100/1m".
    pub rate: Option<String>,
}

impl QueueSpec {
    /// The journal's limits for queue `name`.
    pub fn limits(&self, name: &str) -> Result<QueueLimits, String> {
        check_queue_name(name)?;
        let count = |value: Option<u32>, what: &str| -> Result<Option<i32>, String> {
            value
                .map(|value| match i32::try_from(value) {
                    Ok(value) if value >= 1 => Ok(value),
                    _ => Err(format!("queue {name}: {what} must be between 1 and {}", i32::MAX)),
                })
                .transpose()
        };
        let rate =
            self.rate.as_deref().map(parse_rate).transpose().map_err(|error| format!("queue {name}: {error}"))?;
        Ok(QueueLimits {
            name: name.to_string(),
            concurrency: count(self.concurrency, "concurrency")?,
            partition_concurrency: count(self.partition_concurrency, "partition-concurrency")?,
            rate_limit: rate.map(|rate| rate.starts),
            rate_period_ms: rate.map(|rate| i64::try_from(rate.period.as_millis()).unwrap_or(i64::MAX)),
        })
    }
}

/// A queue file: `[queues.NAME]` tables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueFile {
    #[serde(default)]
    queues: BTreeMap<String, QueueSpec>,
}

/// A queue file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum QueueFileError {
    #[error("cannot read the queue file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the queue file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
}

/// Reads every queue's limits from a queue file.
pub fn read_queue_file(path: &Path) -> Result<Vec<QueueLimits>, QueueFileError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| QueueFileError::Read { path: path.to_path_buf(), source })?;
    parse_queue_file(&text).map_err(|message| QueueFileError::Parse { path: path.to_path_buf(), message })
}

fn parse_queue_file(text: &str) -> Result<Vec<QueueLimits>, String> {
    let file: QueueFile = toml::from_str(text).map_err(|error| error.to_string())?;
    if file.queues.is_empty() {
        return Err("it declares no queue; add a [queues.NAME] table".into());
    }
    file.queues.iter().map(|(name, spec)| spec.limits(name)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_plain() {
        for good in ["default", "emails", "eu-west.1", "a_b"] {
            assert!(check_queue_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "q:1", "é", &"x".repeat(101)] {
            assert!(check_queue_name(bad).unwrap_err().contains("invalid queue name"), "{bad}");
        }
    }

    #[test]
    fn rates_read_as_starts_per_period() {
        assert_eq!(parse_rate("100/1m").unwrap(), Rate { starts: 100, period: Duration::from_secs(60) });
        assert_eq!(parse_rate(" 5 / 250ms").unwrap(), Rate { starts: 5, period: Duration::from_millis(250) });
        for bad in ["100", "0/1s", "-1/1s", "x/1s", "5/", "5/0s", "5/soon"] {
            assert!(parse_rate(bad).unwrap_err().contains("100/1m"), "{bad}");
        }
    }

    #[test]
    fn a_queue_file_declares_each_queue_s_limits() {
        let limits = parse_queue_file(
            "[queues.emails]\nconcurrency = 10\nrate = \"100/1m\"\n\n[queues.reports]\npartition-concurrency = 1\n",
        )
        .unwrap();
        assert_eq!(
            limits,
            [
                QueueLimits {
                    name: "emails".into(),
                    concurrency: Some(10),
                    partition_concurrency: None,
                    rate_limit: Some(100),
                    rate_period_ms: Some(60_000)
                },
                QueueLimits {
                    name: "reports".into(),
                    concurrency: None,
                    partition_concurrency: Some(1),
                    rate_limit: None,
                    rate_period_ms: None
                },
            ]
        );
        assert!(parse_queue_file("[queues.a]\nconcurency = 1\n").unwrap_err().contains("concurency"));
        assert!(parse_queue_file("[queues.a]\nconcurrency = 0\n").unwrap_err().contains("between 1"));
        assert!(parse_queue_file("").unwrap_err().contains("no queue"));
        assert!(parse_queue_file("[queues.\"a b\"]\n").unwrap_err().contains("invalid queue name"));
    }
}

/// Most characters of a workflow id.
pub const MAX_WORKFLOW_ID: usize = 1000;

/// A workflow id: 1 to 1,000 characters, no control characters, and not
/// `.` or `..` (no URL can carry those as a path segment). Anything else —
/// spaces, slashes, quotes, `?`, `#`, any script — is a valid id, and every
/// link and API path encodes it.
pub fn check_workflow_id(id: &str) -> Result<(), String> {
    let length = id.chars().count();
    if length == 0 || length > MAX_WORKFLOW_ID {
        return Err(format!("a workflow id has 1 to {MAX_WORKFLOW_ID} characters; this one has {length}"));
    }
    if let Some(c) = id.chars().find(|c| c.is_control()) {
        return Err(format!("a workflow id has no control characters; this one has {:?}", c));
    }
    if id == "." || id == ".." {
        return Err(format!("{id:?} cannot be a workflow id (no URL can name it); pick another"));
    }
    Ok(())
}

#[cfg(test)]
mod id_tests {
    use super::*;

    #[test]
    fn workflow_ids_are_anything_printable_but_dot_segments() {
        for id in
            ["a", "order-7", "x\"><img src=x onerror=alert(4)>", "ünï☃ a/../b?c=1#frag", "+", "...", &"a".repeat(1000)]
        {
            assert!(check_workflow_id(id).is_ok(), "{id}");
        }
        for id in ["", ".", "..", "a\nb", "\u{7f}", &"a".repeat(1001)] {
            assert!(check_workflow_id(id).is_err(), "{id:?}");
        }
    }
}
