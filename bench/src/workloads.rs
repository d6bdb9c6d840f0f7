//! The in-process workloads: one attempt through the sandbox (and the
//! journal), workflows of sequential no-op steps, many such workflows at
//! once, and the exhaustion path — all through stepbox's library API, on
//! components built from source.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use serde_json::json;
use stepbox::config::{AttemptLimits, Grants};
use stepbox::config::{RetryPolicy, SettingsLayer};
use stepbox::journal::{
    AttemptEnd, AttemptOutcome, CallEnd, CallRef, CallStatus, CommitCount, Finish, Journal, NewStepCall, NewWorkflow,
    Timestamp, WorkflowStatus,
};
use stepbox::run::{DEFAULT_LEASE, Executor, RunRequest, RunSpec, Runner, to_json, to_wave};
use stepbox::wasm::{self, ComponentLoader, Interrupt, Sandbox, StepIdentity};
use wasmtime::component::{ComponentExportIndex, InstancePre, Val};

use crate::cpu;
use crate::stats::{Summary, summarize};

const STEPS_INTERFACE: &str = "guests:bench/steps";

/// A step that succeeds at once, ready to run in a sandbox, without a workflow around it.
pub struct BareStep {
    sandbox: Sandbox,
    pre: InstancePre<wasm::GuestState>,
    export: ComponentExportIndex,
    /// Whether its argument is the attempt's number (`noop(n)`) or zero (`flaky(0)`: fail no time).
    counts: bool,
}

impl BareStep {
    /// Loads and links the Rust `noop` from `component` on a default engine.
    pub fn load(component: &Path) -> anyhow::Result<Self> {
        Self::load_function(component, STEPS_INTERFACE, "noop", true)
    }

    /// `flaky(0)` of the `guests:flaky` steps in any language: it succeeds on its first attempt.
    pub fn flaky(component: &Path) -> anyhow::Result<Self> {
        Self::load_function(component, "guests:flaky/steps", "flaky", false)
    }

    fn load_function(component: &Path, interface: &str, function: &str, counts: bool) -> anyhow::Result<Self> {
        let engine = wasm::new_engine().map_err(|e| anyhow!("{e:#}"))?;
        let component = ComponentLoader::new(&engine, None).load(component)?.component;
        let linker = wasm::step_linker(&engine).map_err(|e| anyhow!("{e:#}"))?;
        let pre = linker.instantiate_pre(&component).map_err(|e| anyhow!("{e:#}"))?;
        let index = component.get_export_index(None, interface).with_context(|| format!("{interface} not exported"))?;
        let export =
            component.get_export_index(Some(&index), function).with_context(|| format!("{function} not exported"))?;
        Ok(Self { sandbox: Sandbox::new(&engine), pre, export, counts })
    }

    /// One attempt: new store, instantiate, call, drop. Returns the value.
    async fn attempt(&self, n: u32) -> anyhow::Result<Val> {
        let identity = StepIdentity {
            workflow_id: "bench".into(),
            step: "noop".into(),
            attempt: 1,
            policy: RetryPolicy::default(),
            limits: AttemptLimits::default(),
        };
        let params = [Val::U32(if self.counts { n } else { 0 })];
        let interrupt = Interrupt::default();
        let report =
            self.sandbox.call_step(&self.pre, &self.export, identity, &Grants::default(), &params, &interrupt).await;
        report.result.map_err(|failure| anyhow!("the no-op step failed: {}", failure.message))
    }

    /// (a) without the journal: µs per attempt, after a warm-up tenth.
    pub async fn without_journal(&self, attempts: usize) -> anyhow::Result<Summary> {
        let mut samples = Vec::with_capacity(attempts);
        for n in 0..attempts + attempts / 10 {
            let started = Instant::now();
            self.attempt(n as u32).await?;
            if n >= attempts / 10 {
                samples.push(micros(started.elapsed()));
            }
        }
        Ok(summarize(samples))
    }

    /// (a) with the journal: µs per attempt including its journal writes —
    /// the start queued before the guest runs, the outcome and call result
    /// durable before the value would be released — as the invoker does.
    pub async fn with_journal(&self, journal: &Journal, attempts: usize) -> anyhow::Result<Summary> {
        let executor = format!("bench:{}", std::process::id());
        let id = format!("attempts-{}", Timestamp::now().millis());
        let workflow = NewWorkflow {
            id: id.clone(),
            name: "bench".into(),
            component: "bench".into(),
            component_digest: "bench".into(),
            entry: "bench".into(),
            input: "()".into(),
            input_json: json!([]),
            options: json!({}),
            created_at: Timestamp::now(),
        };
        let Some(lease) = journal.create_workflow(&workflow, &executor, Duration::from_secs(86_400)).await? else {
            bail!("workflow {id} already exists");
        };
        let mut samples = Vec::with_capacity(attempts);
        for n in 0..attempts + attempts / 10 {
            let call = CallRef { lease: &lease, seq: n as i64 + 1 };
            let started = Instant::now();
            let input = format!("({n})");
            let input_json = json!([n]);
            let new_call = NewStepCall {
                step: "guests:bench/steps.noop",
                input: &input,
                input_json: &input_json,
                max_attempts: 3,
            };
            let start = journal.start_attempt(call, 1, Timestamp::now(), Some(&new_call));
            let value = self.attempt(n as u32).await?;
            let end = AttemptEnd {
                outcome: AttemptOutcome::Ok,
                kind: None,
                message: None,
                retry_at: None,
                finished_at: Some(Timestamp::now()),
                stdout: None,
                stderr: None,
            };
            let call_end = CallEnd {
                status: CallStatus::Succeeded,
                output: Some(to_wave(&value)),
                output_json: Some(to_json(&value)),
            };
            journal.finish_attempt(call, 1, end, Some(call_end)).durable().await?;
            start.durable().await?;
            if n >= attempts / 10 {
                samples.push(micros(started.elapsed()));
            }
        }
        let finish =
            Finish { status: WorkflowStatus::Succeeded, output: Some("()".into()), output_json: None, error: None };
        journal.finish_workflow(&lease, &finish).await?;
        Ok(summarize(samples))
    }
}

/// The bench workflow and its steps, linked once against a journal.
pub struct Workflows {
    sequential: Arc<Runner>,
    /// The same no-op steps, started at once with `start-call` (at most [`FAN_OUT_LIMIT`] at once).
    fan_out: Arc<Runner>,
    exhaust: Runner,
}

/// `max-concurrent-calls` of the fan-out workflow: every call of the 1,000 at once, as the peers start theirs.
pub const FAN_OUT_LIMIT: u32 = 1000;

/// One workflow fanning out no-op steps, run again and again: its median.
#[derive(Debug, Clone)]
pub struct FanOut {
    pub steps: u32,
    pub runs_ms: Vec<f64>,
    pub median_ms: f64,
}

impl FanOut {
    pub fn steps_per_second(&self) -> f64 {
        f64::from(self.steps) / (self.median_ms / 1000.0)
    }
}

/// What a batch of workflows did, and what the journal committed meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub workflows: usize,
    pub steps: usize,
    pub elapsed: Duration,
    /// Write transactions per durable step (attempt batches and workflow rows).
    pub commits_per_step: f64,
    /// Group-commit transactions that carried attempt writes.
    pub batches: u64,
    /// µs per step the writer spent in those transactions (statement and commit).
    pub commit_micros_per_step: f64,
    /// CPU µs per step this process used (user + system, all threads).
    pub cpu_micros_per_step: f64,
    /// CPU µs per step the whole machine used (this process, PostgreSQL, the rest).
    pub machine_cpu_micros_per_step: f64,
}

impl Throughput {
    pub fn steps_per_second(&self) -> f64 {
        self.steps as f64 / self.elapsed.as_secs_f64()
    }

    /// Steps per attempt-write transaction: the batch size group commit reached.
    pub fn steps_per_batch(&self) -> usize {
        (self.steps as f64 / self.batches.max(1) as f64).round() as usize
    }

    /// Mean µs per step (meaningful for one workflow).
    pub fn micros_per_step(&self) -> f64 {
        micros(self.elapsed) / self.steps as f64
    }
}

impl Workflows {
    /// Links `bench-loop` with the `noop` steps against `journal`; the
    /// exhaustion runner's steps get 3 attempts and no backoff.
    pub async fn link(workflow: &Path, steps: &Path, journal: &Journal, cache_dir: &Path) -> anyhow::Result<Self> {
        let spec = |invoke: &str, cli_settings: SettingsLayer| RunSpec {
            workflow: workflow.to_path_buf(),
            steps: vec![steps.to_path_buf()],
            invoke: Some(invoke.to_string()),
            config: None,
            cli_settings,
        };
        let engine = wasm::new_engine().map_err(|e| anyhow!("{e:#}"))?;
        let loader = ComponentLoader::new(&engine, Some(PathBuf::from(cache_dir)));
        let executor = Executor::start(journal.clone(), DEFAULT_LEASE);
        let sequential = Runner::open(&spec("sequential", SettingsLayer::default()), &loader, executor.clone())?;
        let mut no_backoff = SettingsLayer { origin: "the benchmark".into(), ..SettingsLayer::default() };
        no_backoff.all.retry.max_attempts = Some(3);
        no_backoff.all.retry.interval = Some(Duration::ZERO);
        let exhaust = Runner::open(&spec("exhaust", no_backoff), &loader, executor.clone())?;
        let wide = SettingsLayer {
            origin: "the benchmark".into(),
            max_concurrent_calls: Some(FAN_OUT_LIMIT),
            ..SettingsLayer::default()
        };
        let fan_out = Runner::open(&spec("fan-out", wide), &loader, executor)?;
        Ok(Self { sequential: Arc::new(sequential), fan_out: Arc::new(fan_out), exhaust })
    }

    /// `workflows` workflows of `steps` sequential no-op steps each, all at once.
    pub async fn concurrent(&self, workflows: usize, steps: u32) -> anyhow::Result<Throughput> {
        self.batch(&self.sequential, workflows, steps).await
    }

    /// One workflow starting `steps` no-op steps at once (`start-call`, `await-all`).
    pub async fn fan_out(&self, steps: u32) -> anyhow::Result<Throughput> {
        self.batch(&self.fan_out, 1, steps).await
    }

    /// [`Workflows::fan_out`] `runs` times, one after another: each run's time and the median.
    pub async fn fan_out_runs(&self, steps: u32, runs: usize) -> anyhow::Result<FanOut> {
        let mut runs_ms = Vec::with_capacity(runs);
        for _ in 0..runs {
            runs_ms.push(micros(self.fan_out(steps).await?.elapsed) / 1000.0);
        }
        let mut sorted = runs_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let median_ms = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
        Ok(FanOut { steps, runs_ms, median_ms })
    }

    /// `workflows` runs of `runner`'s workflow with `steps`, all at once; each must return the sum of 0..steps.
    async fn batch(&self, runner: &Arc<Runner>, workflows: usize, steps: u32) -> anyhow::Result<Throughput> {
        let before = self.sequential.journal().commit_count();
        let cpu_before = cpu::process();
        let machine_before = cpu::machine();
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workflows {
            let runner = runner.clone();
            tasks.spawn(async move { runner.run(RunRequest { id: None, arguments: vec![steps.to_string()] }).await });
        }
        while let Some(result) = tasks.join_next().await {
            let outcome = result.context("a workflow task panicked")??;
            let expected = (0..u64::from(steps)).sum::<u64>();
            if outcome.output != expected.to_string() {
                bail!("a workflow returned {} instead of {expected}", outcome.output);
            }
        }
        let elapsed = started.elapsed();
        let cpu = cpu::process().saturating_sub(cpu_before);
        let machine = cpu::machine().saturating_sub(machine_before);
        let total = workflows * steps as usize;
        let after = self.sequential.journal().commit_count();
        let commits = commits(before, after);
        let batches = after.attempt_batches - before.attempt_batches;
        let commit_time = after.attempt_commit_time.saturating_sub(before.attempt_commit_time);
        Ok(Throughput {
            workflows,
            steps: total,
            elapsed,
            commits_per_step: commits as f64 / total as f64,
            batches,
            commit_micros_per_step: micros(commit_time) / total as f64,
            cpu_micros_per_step: micros(cpu) / total as f64,
            machine_cpu_micros_per_step: micros(machine) / total as f64,
        })
    }

    /// One workflow calling a step that fails all 3 attempts, `calls` times.
    pub async fn exhaust(&self, calls: u32) -> anyhow::Result<Exhaustion> {
        let before = self.exhaust.journal().commit_count();
        let cpu_before = cpu::process();
        let started = Instant::now();
        let outcome = self.exhaust.run(RunRequest { id: None, arguments: vec![calls.to_string()] }).await?;
        let elapsed = started.elapsed();
        let cpu = cpu::process().saturating_sub(cpu_before);
        if outcome.output != (3 * u64::from(calls)).to_string() {
            bail!("the exhaustion workflow returned {} instead of {}", outcome.output, 3 * calls);
        }
        let commits = commits(before, self.exhaust.journal().commit_count());
        Ok(Exhaustion {
            micros_per_call: micros(elapsed) / f64::from(calls),
            commits_per_call: commits as f64 / f64::from(calls),
            cpu_micros_per_call: micros(cpu) / f64::from(calls),
        })
    }
}

/// One run of the exhaustion workflow, per exhausted call.
#[derive(Debug, Clone, Copy)]
pub struct Exhaustion {
    /// The workflow's time over its calls.
    pub micros_per_call: f64,
    /// Write transactions.
    pub commits_per_call: f64,
    /// CPU this process used (user + system, all threads; in 10 ms ticks, so average over runs).
    pub cpu_micros_per_call: f64,
}

/// Write transactions between two counts.
fn commits(before: CommitCount, after: CommitCount) -> u64 {
    (after.attempt_batches - before.attempt_batches) + (after.workflow_commits - before.workflow_commits)
}

pub fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// The seed scenario, timed in process on one journal.
#[derive(Debug, Clone, Copy)]
pub struct SeedRuns {
    /// Seconds per run of the peers' shape: a step failing at once on each of
    /// 3 attempts, 1 s then 2 s apart, its exhaustion caught.
    pub seconds: Summary,
    /// Seconds of one run of the provision example itself, whose step also
    /// sleeps 1 s in each attempt.
    pub provision_seconds: f64,
}

/// The seed's shape: `retry-demo` calling `flaky(3)` under the default
/// policy (3 attempts, 1 s then 2 s), `runs` times, then the provision
/// example once; each from the run's start to its output, on `journal`.
pub async fn seed(journal: &Journal, cache_dir: &Path, runs: usize) -> anyhow::Result<SeedRuns> {
    let engine = wasm::new_engine().map_err(|e| anyhow!("{e:#}"))?;
    let loader = ComponentLoader::new(&engine, Some(PathBuf::from(cache_dir)));
    let executor = Executor::start(journal.clone(), DEFAULT_LEASE);
    let open = |workflow: &str, steps: &[&str], invoke: &str| {
        let spec = RunSpec {
            workflow: PathBuf::from(workflow),
            steps: steps.iter().map(PathBuf::from).collect(),
            invoke: Some(invoke.to_string()),
            config: None,
            cli_settings: SettingsLayer::default(),
        };
        Runner::open(&spec, &loader, executor.clone())
    };
    let artifacts = (stepbox_test_artifacts::RETRY_DEMO, stepbox_test_artifacts::FLAKY);
    let exhausting = open(artifacts.0, &[artifacts.1], "retry-then-succeed")?;
    let mut seconds = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let outcome = exhausting.run(RunRequest { id: None, arguments: vec!["3".into()] }).await?;
        seconds.push(started.elapsed().as_secs_f64());
        if !outcome.output.starts_with("err(retries-exhausted(") {
            bail!("the seed's shape returned {} instead of its exhaustion", outcome.output);
        }
    }
    let provision = open(stepbox_test_artifacts::PROVISION, &[], "run")?;
    let started = Instant::now();
    let outcome = provision.run(RunRequest { id: None, arguments: Vec::new() }).await?;
    let provision_seconds = started.elapsed().as_secs_f64();
    if outcome.output != "true" {
        bail!("the provision example returned {} instead of true", outcome.output);
    }
    Ok(SeedRuns { seconds: summarize(seconds), provision_seconds })
}
