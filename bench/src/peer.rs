//! The peer: DBOS Transact running the same workloads on the same
//! PostgreSQL server, through `bench/dbos/peer.py`, in the same run.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};
use serde_json::Value;

/// What the DBOS script measured.
#[derive(Debug, Clone)]
pub struct PeerResults {
    pub version: String,
    /// µs per step of one workflow of sequential steps.
    pub sequential_step_us: f64,
    /// (workflows, steps/s) for 100-step workflows started together.
    pub concurrent: Vec<(usize, f64)>,
    pub concurrent_method: String,
    /// ms per 3-attempt exhausted step call (median, p99).
    pub exhaustion_ms: (f64, f64),
    /// The queue workloads, when asked for.
    pub queue: Option<PeerQueue>,
    pub notes: Vec<String>,
}

/// DBOS's queue: enqueue → first step (ms, median and p99) and throughput.
#[derive(Debug, Clone)]
pub struct PeerQueue {
    pub latency_ms: (f64, f64),
    pub steps_per_second: f64,
    pub latency_method: String,
    pub throughput_method: String,
}

/// Runs the peer script with `python` against the server at `postgres`.
pub fn run(
    python: &Path,
    script: &Path,
    postgres: &str,
    quick: bool,
    workflows: &[usize],
    queue: Option<(usize, u32)>,
) -> anyhow::Result<PeerResults> {
    let mut command = Command::new(python);
    let workflows = workflows.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    command.arg(script).args(["--postgres", postgres, "--workflows", &workflows]);
    if let Some((workflows, steps)) = queue {
        command.args(["--queue", &format!("{workflows}x{steps}")]);
    }
    if quick {
        command.arg("--quick");
    }
    let output = command.output().with_context(|| format!("cannot run {} {}", python.display(), script.display()))?;
    if !output.status.success() {
        bail!(
            "the DBOS peer failed ({}):\n{}\nInstall it with `bench/run` (it makes bench/dbos/.venv), or pass --no-peer",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let json: Value = serde_json::from_slice(&output.stdout).context("the DBOS peer printed no JSON")?;
    parse(&json).context("the DBOS peer's JSON lacks a field")
}

fn parse(json: &Value) -> Option<PeerResults> {
    let number = |value: &Value, key: &str| value.get(key).and_then(Value::as_f64);
    let text = |value: &Value, key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
    let sequential = json.get("sequential")?;
    let exhaustion = json.get("exhaustion")?;
    let concurrent = json
        .get("concurrent")?
        .as_array()?
        .iter()
        .map(|point| Some((number(point, "workflows")? as usize, number(point, "steps_per_second")?)))
        .collect::<Option<Vec<_>>>()?;
    let queue = match json.get("queue") {
        Some(queue) if !queue.is_null() => {
            let latency = queue.get("latency")?;
            let throughput = queue.get("throughput")?;
            Some(PeerQueue {
                latency_ms: (number(latency, "median_ms")?, number(latency, "p99_ms")?),
                steps_per_second: number(throughput, "steps_per_second")?,
                latency_method: text(latency, "method").unwrap_or_default(),
                throughput_method: text(throughput, "method").unwrap_or_default(),
            })
        }
        _ => None,
    };
    Some(PeerResults {
        queue,
        version: text(json, "dbos_version")?,
        sequential_step_us: number(sequential, "step_median_us")?,
        concurrent,
        concurrent_method: text(json, "concurrent_method").unwrap_or_default(),
        exhaustion_ms: (number(exhaustion, "step_median_ms")?, number(exhaustion, "step_p99_ms")?),
        notes: json
            .get("notes")
            .and_then(Value::as_array)
            .map(|notes| notes.iter().filter_map(|note| note.as_str().map(str::to_string)).collect())
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_peer_json() {
        let json = serde_json::json!({
            "dbos_version": "3.4.0",
            "sequential": {"step_median_us": 1500.0},
            "concurrent": [{"workflows": 100, "steps_per_second": 800.0}],
            "concurrent_method": "threads",
            "exhaustion": {"step_median_ms": 4.0, "step_p99_ms": 6.0},
            "notes": ["n"]
        });
        let results = parse(&json).expect("parses");
        assert_eq!(results.concurrent, vec![(100, 800.0)]);
        assert_eq!(results.exhaustion_ms, (4.0, 6.0));
        assert!(results.queue.is_none());
        let mut with_queue = json.clone();
        with_queue["queue"] = serde_json::json!({
            "latency": {"median_ms": 520.0, "p99_ms": 990.0, "method": "m"},
            "throughput": {"steps_per_second": 300.0, "method": "t"}
        });
        let queue = parse(&with_queue).expect("parses").queue.expect("a queue result");
        assert_eq!((queue.latency_ms, queue.steps_per_second), ((520.0, 990.0), 300.0));
    }
}
