//! The peers: DBOS Transact, Restate and Temporal running the workloads of
//! bench/PEERS.md in the same run, each through its standalone script (one
//! JSON object on stdout, progress on stderr). A peer that cannot run is
//! reported as not measured, with the reason, and the run goes on: stepbox's
//! figures never depend on a peer.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A peer engine, as `--peer` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    Dbos,
    Restate,
    Temporal,
}

impl Engine {
    /// Every peer, in the order they run and appear in the tables.
    pub const ALL: [Engine; 3] = [Engine::Dbos, Engine::Restate, Engine::Temporal];

    /// The engine's name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Dbos => "DBOS",
            Engine::Restate => "Restate",
            Engine::Temporal => "Temporal",
        }
    }

    /// What installs it, for the reason of a failed run.
    fn installer(self) -> &'static str {
        match self {
            Engine::Dbos => "bench/run (it makes bench/dbos/.venv)",
            Engine::Restate => "bench/restate/install",
            Engine::Temporal => "bench/temporal/install",
        }
    }
}

/// Temporal's dev-server flags in the side-by-side run: without the poll
/// limit raised, its one shard's transfer queue paces every sequential step
/// at about 50 ms, which measures the limiter, not the engine.
pub const TEMPORAL_TUNED: [&str; 3] =
    ["--sqlite-wal", "--dynamic-config-value", "history.transferProcessorMaxPollRPS=1000"];

/// How the tables name Temporal's tuned run.
pub const TEMPORAL_TUNED_VARIANT: &str = "tuned: --sqlite-wal, history.transferProcessorMaxPollRPS=1000";

/// How the tables name Temporal's run with the dev server's shipped
/// defaults, on the sequential workload alone (the one the poll limit paces).
pub const TEMPORAL_DEFAULT_VARIANT: &str = "shipped defaults, sequential only";

/// One peer's run as the tables show it: what it measured, or why not.
#[derive(Debug, Clone)]
pub struct Peer {
    pub engine: Engine,
    /// How it was set up when not as shipped, or what part of it ran.
    pub variant: Option<String>,
    /// The reason it was not measured, as `Err`.
    pub measured: Result<PeerRun, String>,
}

impl Peer {
    /// A peer that was not run: `reason` says why.
    pub fn not_measured(engine: Engine, variant: Option<String>, reason: String) -> Self {
        Self { engine, variant, measured: Err(reason) }
    }

    /// "Restate 1.7.12", "Temporal 1.9.1 (tuned: …)".
    pub fn label(&self) -> String {
        let version = self.measured.as_ref().map(|run| format!(" {}", run.version)).unwrap_or_default();
        match &self.variant {
            Some(variant) => format!("{}{version} ({variant})", self.engine.name()),
            None => format!("{}{version}", self.engine.name()),
        }
    }

    /// Its common workloads, when it ran.
    pub fn workloads(&self) -> Option<&Workloads> {
        self.measured.as_ref().ok().map(|run| &run.workloads)
    }
}

/// What one peer script printed: the common part (bench/PEERS.md).
#[derive(Debug, Clone)]
pub struct PeerRun {
    pub version: String,
    /// Its durable store and when it fsyncs, in its own words.
    pub store: String,
    pub quick: bool,
    pub workloads: Workloads,
    pub notes: Vec<String>,
    /// Other facts it states (its SDK, its server's version line, its dynamic config).
    pub details: Vec<String>,
}

/// The common workloads; each is `None` when the peer did not run it.
#[derive(Debug, Clone, Default)]
pub struct Workloads {
    pub seed: Option<Seed>,
    pub sequential: Option<Sequential>,
    pub concurrent: Option<Concurrent>,
    pub submit_to_start: Option<Latency>,
    pub submit_to_result: Option<Latency>,
    pub burst: Option<Burst>,
    pub fanout: Option<Fanout>,
    /// 1,000 no-op steps from one workflow at once (DBOS only).
    pub fanout_wide: Option<Fanout>,
    /// Each workload's `method`: exactly what it timed.
    pub methods: Vec<(String, String)>,
}

/// A step failing 3 attempts 1 s then 2 s apart, caught: wall seconds, submit → result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seed {
    pub seconds: f64,
    pub runs: usize,
}

/// One workflow of sequential no-op steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sequential {
    pub steps: usize,
    /// The median step, as the peer times one.
    pub step_median_us: f64,
    /// Submit → result over the steps.
    pub us_per_step: f64,
}

/// Workflows of no-op steps started at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Concurrent {
    pub workflows: usize,
    pub steps_per_workflow: usize,
    pub steps_per_second: f64,
}

/// A latency distribution in ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// 3-step workflows submitted at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Burst {
    pub workflows: usize,
    pub workflows_per_second: f64,
}

/// One workflow running no-op steps concurrently.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fanout {
    pub steps: usize,
    pub runs: usize,
    pub ms: f64,
    pub steps_per_second: f64,
}

/// What the DBOS script's own keys measured (beside the common workloads).
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

/// How long a peer may run before it is stopped and reported as not measured.
pub fn timeout(quick: bool) -> Duration {
    Duration::from_secs(if quick { 20 * 60 } else { 60 * 60 })
}

/// DBOS against the server at `postgres`: its own keys (the rows beside
/// stepbox's) and the common workloads.
pub fn dbos(
    python: &Path,
    postgres: &str,
    quick: bool,
    workflows: &[usize],
    queue: Option<(usize, u32)>,
) -> (Option<PeerResults>, Peer) {
    let workflows = workflows.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    let mut args = vec!["bench/dbos/peer.py".to_string(), "--postgres".into(), postgres.into()];
    args.extend(["--workflows".into(), workflows]);
    if let Some((workflows, steps)) = queue {
        args.extend(["--queue".into(), format!("{workflows}x{steps}")]);
    }
    if quick {
        args.push("--quick".into());
    }
    match run_script(Engine::Dbos, python, &args, timeout(quick)) {
        Ok(json) => {
            let own = parse_dbos(&json);
            let mut peer = common(Engine::Dbos, None, &json);
            if own.is_none()
                && let Ok(run) = &mut peer.measured
            {
                run.notes.push("its own keys (sequential, concurrent, exhaustion, queue) could not be read".into());
            }
            (own, peer)
        }
        Err(reason) => (None, Peer::not_measured(Engine::Dbos, None, reason)),
    }
}

/// Restate through `node bench/restate/peer.mjs`.
pub fn restate(node: &Path, quick: bool) -> Peer {
    let mut args = vec!["bench/restate/peer.mjs".to_string()];
    if quick {
        args.push("--quick".into());
    }
    match run_script(Engine::Restate, node, &args, timeout(quick)) {
        Ok(json) => common(Engine::Restate, None, &json),
        Err(reason) => Peer::not_measured(Engine::Restate, None, reason),
    }
}

/// Temporal through `bench/temporal/peer.py`, with `flags` for its dev
/// server, only the workloads in `only` when given; `variant` names the setup.
pub fn temporal(python: &Path, quick: bool, flags: &[&str], only: Option<&str>, variant: &str) -> Peer {
    let mut args = vec!["bench/temporal/peer.py".to_string()];
    args.extend(flags.iter().map(ToString::to_string));
    if let Some(only) = only {
        args.extend(["--only".into(), only.into()]);
    }
    if quick {
        args.push("--quick".into());
    }
    let variant = Some(variant.to_string());
    match run_script(Engine::Temporal, python, &args, timeout(quick)) {
        Ok(json) => common(Engine::Temporal, variant, &json),
        Err(reason) => Peer::not_measured(Engine::Temporal, variant, reason),
    }
}

/// Runs `program args` from the workspace; its stderr is passed through
/// (the last lines kept for the reason of a failure), its stdout parsed as JSON.
fn run_script(engine: Engine, program: &Path, args: &[String], timeout: Duration) -> Result<Value, String> {
    let shown = format!("{} {}", program.display(), args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot start `{shown}` ({error}); install it with {}", engine.installer()))?;
    let stdout = child.stdout.take().map(|mut out| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = out.read_to_end(&mut bytes);
            bytes
        })
    });
    let stderr = child.stderr.take().map(|err| {
        std::thread::spawn(move || {
            let mut tail = VecDeque::new();
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("{line}");
                if tail.len() == 40 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
            tail
        })
    });
    let status = wait(&mut child, timeout);
    let stdout = stdout.and_then(|thread| thread.join().ok()).unwrap_or_default();
    let tail = stderr.and_then(|thread| thread.join().ok()).unwrap_or_default();
    let status = status.map_err(|waited| format!("`{shown}` {waited}"))?;
    if !status.success() {
        return Err(format!("`{shown}` failed ({status}): {}", last_error(&tail)));
    }
    serde_json::from_slice(&stdout).map_err(|error| format!("`{shown}` printed no JSON object ({error})"))
}

/// Waits for `child`, at most `timeout`; then SIGTERM (each peer stops what
/// it started on it), and SIGKILL if it is still there 30 s later.
fn wait(child: &mut Child, timeout: Duration) -> Result<std::process::ExitStatus, String> {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if started.elapsed() < timeout => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) => break,
            Err(error) => return Err(format!("could not be waited for ({error})")),
        }
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return Err(format!("did not finish within {} min and was stopped", timeout.as_secs() / 60));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!("did not finish within {} min and was killed", timeout.as_secs() / 60))
}

/// The line of a failed peer's stderr that says why: the last one naming an error, else the last.
fn last_error(tail: &VecDeque<String>) -> String {
    let lines = || tail.iter().map(|line| line.trim()).filter(|line| !line.is_empty());
    let line = lines()
        .rev()
        .find(|line| {
            let lower = line.to_lowercase();
            lower.contains("error") || lower.contains("failed") || lower.contains("exception")
        })
        .or_else(|| lines().next_back())
        .unwrap_or("no output on stderr");
    let mut line = line.to_string();
    if line.chars().count() > 300 {
        line = line.chars().take(300).collect::<String>() + "…";
    }
    line
}

fn number(value: &Value, key: &str) -> Option<f64> {
    value.get(key).and_then(Value::as_f64)
}

fn text(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_string)
}

fn texts(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(|item| item.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// The common part of a peer's JSON (bench/PEERS.md); a workload it lacks is `None`.
fn common(engine: Engine, variant: Option<String>, json: &Value) -> Peer {
    let version = text(json, "version").or_else(|| text(json, "dbos_version"));
    let Some(version) = version else {
        return Peer::not_measured(engine, variant, "its JSON has no `version`".into());
    };
    let mut notes = texts(json.get("notes").filter(|_| engine != Engine::Dbos));
    notes.extend(texts(json.get("workloads_notes")));
    let mut details = Vec::new();
    for key in ["sdk", "server", "python"] {
        if let Some(value) = text(json, key) {
            details.push(format!("{key}: {value}"));
        }
    }
    let dynamic = texts(json.get("dynamic_config"));
    if !dynamic.is_empty() {
        details.push(format!("dynamic config: {}", dynamic.join(", ")));
    }
    let pragmas = texts(json.get("sqlite_pragmas"));
    if !pragmas.is_empty() {
        details.push(format!("SQLite pragmas: {}", pragmas.join(", ")));
    }
    let run = PeerRun {
        version,
        store: text(json, "store").unwrap_or_default(),
        quick: json.get("quick").and_then(Value::as_bool).unwrap_or(false),
        workloads: json.get("workloads").map(workloads).unwrap_or_default(),
        notes,
        details,
    };
    Peer { engine, variant, measured: Ok(run) }
}

fn workloads(json: &Value) -> Workloads {
    let get = |key: &str| json.get(key).filter(|value| value.is_object());
    let latency = |value: &Value| {
        Some(Latency {
            samples: number(value, "n")? as usize,
            p50_ms: number(value, "p50_ms")?,
            p90_ms: number(value, "p90_ms"),
            p99_ms: number(value, "p99_ms"),
        })
    };
    let fanout = |value: &Value| {
        Some(Fanout {
            steps: number(value, "steps")? as usize,
            runs: number(value, "runs")? as usize,
            ms: number(value, "ms")?,
            steps_per_second: number(value, "steps_per_second")?,
        })
    };
    let methods = json
        .as_object()
        .map(|all| all.iter().filter_map(|(key, value)| Some((key.clone(), text(value, "method")?))).collect())
        .unwrap_or_default();
    Workloads {
        seed: get("seed").and_then(|seed| {
            let runs = seed.get("runs_seconds").and_then(Value::as_array).map_or(1, Vec::len);
            Some(Seed { seconds: number(seed, "seconds")?, runs })
        }),
        sequential: get("sequential").and_then(|sequential| {
            Some(Sequential {
                steps: number(sequential, "steps")? as usize,
                step_median_us: number(sequential, "step_median_us")?,
                us_per_step: number(sequential, "us_per_step")?,
            })
        }),
        concurrent: get("concurrent").and_then(|concurrent| {
            Some(Concurrent {
                workflows: number(concurrent, "workflows")? as usize,
                steps_per_workflow: number(concurrent, "steps_per_workflow")? as usize,
                steps_per_second: number(concurrent, "steps_per_second")?,
            })
        }),
        submit_to_start: get("submit_to_start").and_then(latency),
        submit_to_result: get("submit_to_result").and_then(latency),
        burst: get("burst").and_then(|burst| {
            Some(Burst {
                workflows: number(burst, "n")? as usize,
                workflows_per_second: number(burst, "workflows_per_second")?,
            })
        }),
        fanout: get("fanout").and_then(fanout),
        fanout_wide: get("fanout_wide").and_then(fanout),
        methods,
    }
}

/// The DBOS script's own keys (what the rows beside stepbox's compare with).
fn parse_dbos(json: &Value) -> Option<PeerResults> {
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
        notes: texts(json.get("notes")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_dbos_json() {
        let json = serde_json::json!({
            "dbos_version": "3.4.0",
            "sequential": {"step_median_us": 1500.0},
            "concurrent": [{"workflows": 100, "steps_per_second": 800.0}],
            "concurrent_method": "threads",
            "exhaustion": {"step_median_ms": 4.0, "step_p99_ms": 6.0},
            "notes": ["n"]
        });
        let results = parse_dbos(&json).expect("parses");
        assert_eq!(results.concurrent, vec![(100, 800.0)]);
        assert_eq!(results.exhaustion_ms, (4.0, 6.0));
        assert!(results.queue.is_none());
        let mut with_queue = json.clone();
        with_queue["queue"] = serde_json::json!({
            "latency": {"median_ms": 520.0, "p99_ms": 990.0, "method": "m"},
            "throughput": {"steps_per_second": 300.0, "method": "t"}
        });
        let queue = parse_dbos(&with_queue).expect("parses").queue.expect("a queue result");
        assert_eq!((queue.latency_ms, queue.steps_per_second), ((520.0, 990.0), 300.0));
        // Its own notes are not the common workloads' notes.
        let peer = common(Engine::Dbos, None, &json);
        assert_eq!(peer.measured.expect("measured").notes, Vec::<String>::new());
    }

    #[test]
    fn reads_the_common_workloads() {
        let json = serde_json::json!({
            "engine": "restate",
            "version": "1.7.12",
            "store": "RocksDB",
            "quick": true,
            "workloads": {
                "seed": {"seconds": 3.02, "runs_seconds": [3.02], "method": "s"},
                "sequential": {"steps": 200, "step_median_us": 1134.0, "us_per_step": 1461.0},
                "concurrent": {"workflows": 20, "steps_per_workflow": 100, "steps_per_second": 3452.0},
                "submit_to_start": {"n": 30, "p50_ms": 1.9, "p90_ms": 3.4, "p99_ms": 6.8},
                "submit_to_result": {"n": 30, "p50_ms": 7.1, "p99_ms": 22.6},
                "burst": {"n": 100, "workflows_per_second": 773.0},
                "fanout": {"steps": 100, "runs": 3, "ms": 42.5, "steps_per_second": 2354.0},
                "fanout_wide": {"steps": 1000, "runs": 1, "ms": 900.0, "steps_per_second": 1111.1}
            },
            "notes": ["one node"]
        });
        let peer = common(Engine::Restate, None, &json);
        assert_eq!(peer.label(), "Restate 1.7.12");
        let run = peer.measured.expect("measured");
        let workloads = &run.workloads;
        assert_eq!(workloads.seed, Some(Seed { seconds: 3.02, runs: 1 }));
        assert_eq!(workloads.sequential.map(|s| s.step_median_us), Some(1134.0));
        assert_eq!(workloads.concurrent.map(|c| c.workflows), Some(20));
        assert_eq!(workloads.submit_to_result.and_then(|l| l.p90_ms), None);
        assert_eq!(workloads.burst.map(|b| b.workflows), Some(100));
        assert_eq!(workloads.fanout.map(|f| f.ms), Some(42.5));
        assert_eq!(workloads.fanout_wide.map(|f| (f.steps, f.steps_per_second)), Some((1000, 1111.1)));
        assert_eq!(workloads.methods, vec![("seed".to_string(), "s".to_string())]);
        assert_eq!(run.notes, vec!["one node".to_string()]);
        assert!(run.quick);
    }

    #[test]
    fn a_peer_without_json_is_not_measured() {
        let peer = common(Engine::Temporal, Some("tuned".into()), &serde_json::json!({"workloads": {}}));
        assert_eq!(peer.label(), "Temporal (tuned)");
        assert!(peer.measured.is_err());
    }

    #[test]
    fn the_reason_is_the_last_error_line() {
        let tail: VecDeque<String> =
            ["progress", "Traceback", "RuntimeError: boom", "server log tail:", ""].map(String::from).into();
        assert_eq!(last_error(&tail), "RuntimeError: boom");
        assert_eq!(last_error(&VecDeque::new()), "no output on stderr");
    }
}
