//! stepbox's benchmarks (issue 6): per-attempt overhead, sequential and
//! concurrent durable steps against the PostgreSQL commit floor, the
//! exhaustion path, start-up per language, workers and queues, workflows
//! that wait (issue 24), and the peers — DBOS Transact, Restate and Temporal
//! — on the same workloads in the same run, side by side (issue 27). Writes
//! the results into BENCHMARKS.md and draws the throughput chart. Run it
//! with `bench/run` (the `stepbox` bench target calls [`run`]).

mod chart;
mod cpu;
mod floor;
mod peer;
mod queues;
mod report;
mod startup;
mod stats;
mod waits;
mod workloads;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Parser;
use plotters::style::RGBColor;
use sqlx::{Connection as _, Executor as _};
use stepbox::journal::{Journal, JournalOptions};
use stepbox_test_artifacts as artifacts;

use crate::floor::OwnCall;
use crate::peer::{Engine, Peer};
/// The side-by-side figures of a worker, for the probe that runs them alone (`examples/queue.rs`).
pub use crate::queues::{Burst, BurstCpu, PathStatements, Phases, ResultLatency};
use crate::queues::{Queues, WorkerThroughput};
use crate::report::{BatchFloor, FanOutWide, QueueResults, Results, SideBySide};
use crate::startup::StartCase;
/// Latency percentiles, as the probes print them.
pub use crate::stats::Summary;
/// A step's attempts without a workflow, for probes that profile one loop (`examples/attempts.rs`).
pub use crate::workloads::BareStep;
use crate::workloads::{Throughput, Workflows};

/// The database the benchmark makes (and drops first) on the server.
const DATABASE: &str = "stepbox_bench";
const RESULTS_START: &str = "<!-- results:start -->";
const RESULTS_END: &str = "<!-- results:end -->";

/// The benchmark's command line.
#[derive(Parser)]
#[command(about = "Benchmarks stepbox on one PostgreSQL server, and DBOS Transact, Restate and Temporal beside it")]
pub struct Args {
    /// PostgreSQL server URL without a database; the benchmark makes `stepbox_bench` on it.
    #[arg(long, env = "STEPBOX_BENCH_POSTGRES", default_value = "postgresql://postgres@127.0.0.1:5432")]
    postgres: String,
    /// Fewer samples and no 1,000-workflow point: a smoke run in about a minute.
    #[arg(long)]
    quick: bool,
    /// Skip every peer (DBOS, Restate, Temporal).
    #[arg(long, conflicts_with = "peers")]
    no_peer: bool,
    /// Run only this peer (repeatable); without it, all three.
    #[arg(long = "peer", value_name = "NAME", value_enum)]
    peers: Vec<Engine>,
    /// A peer whose install failed (bench/run passes it): reported as not measured.
    #[arg(long = "not-installed", value_name = "NAME", value_enum, hide = true)]
    not_installed: Vec<Engine>,
    /// Also run DBOS at 1,000 concurrent workflows (6-8 more minutes on 2 cores).
    #[arg(long)]
    peer_1000: bool,
    /// The Python that has `dbos` installed (bench/run makes this virtualenv).
    #[arg(long, default_value = "bench/dbos/.venv/bin/python")]
    python: PathBuf,
    /// The Node.js that runs the Restate peer (bench/restate/install fills its node_modules).
    #[arg(long, default_value = "node")]
    node: PathBuf,
    /// The Python that has `temporalio` installed (bench/temporal/install makes this virtualenv).
    #[arg(long, default_value = "bench/temporal/.venv/bin/python")]
    temporal_python: PathBuf,
    /// The `host` binary whose start-up is measured.
    #[arg(long, default_value = "target/release/host")]
    host: PathBuf,
    /// The report to write the results into, between its results markers.
    #[arg(long, default_value = "BENCHMARKS.md")]
    report: PathBuf,
    /// Where to draw the throughput chart.
    #[arg(long, default_value = "bench/throughput.png")]
    chart: PathBuf,
    /// Passed by `cargo bench` to every bench target; nothing to do with it.
    #[arg(long = "bench", hide = true)]
    _bench: bool,
}

/// How many samples each part takes.
struct Sizes {
    bare_attempts: usize,
    journal_attempts: usize,
    floor_commits: usize,
    sequential_steps: u32,
    sequential_runs: usize,
    curve: &'static [usize],
    unbatched_curve: &'static [usize],
    exhaustion_runs: usize,
    exhaustion_calls: u32,
    cold_starts: usize,
    cached_starts: usize,
    latency_samples: usize,
    poll_latency_samples: usize,
    queue_workflows: usize,
    /// Rounds of each queue throughput point (in-process and per worker count): the median is reported.
    queue_rounds: usize,
    language_attempts: usize,
    seed_runs: usize,
    result_samples: usize,
    burst: usize,
    /// Runs of the 100-step fan-out (the peers' workload), and the calls of the wide one.
    fanout_runs: usize,
    fanout_wide: u32,
    waits: waits::WaitSizes,
}

const FULL: Sizes = Sizes {
    bare_attempts: 5000,
    journal_attempts: 1000,
    floor_commits: 1000,
    sequential_steps: 1000,
    sequential_runs: 5,
    curve: &[1, 10, 100, 1000],
    unbatched_curve: &[1, 10, 100],
    exhaustion_runs: 10,
    exhaustion_calls: 100,
    cold_starts: 3,
    cached_starts: 10,
    latency_samples: 200,
    poll_latency_samples: 30,
    queue_workflows: 1000,
    queue_rounds: 5,
    language_attempts: 300,
    seed_runs: 3,
    result_samples: 200,
    burst: 1000,
    fanout_runs: 10,
    fanout_wide: 1000,
    waits: waits::WaitSizes { messages: 200, sleepers: 200, ticks: 30 },
};

const QUICK: Sizes = Sizes {
    bare_attempts: 1000,
    journal_attempts: 300,
    floor_commits: 300,
    sequential_steps: 1000,
    sequential_runs: 2,
    curve: &[1, 10, 100],
    unbatched_curve: &[1, 10],
    exhaustion_runs: 5,
    exhaustion_calls: 50,
    cold_starts: 1,
    cached_starts: 5,
    latency_samples: 50,
    poll_latency_samples: 10,
    queue_workflows: 200,
    queue_rounds: 1,
    language_attempts: 50,
    seed_runs: 1,
    result_samples: 30,
    burst: 100,
    fanout_runs: 3,
    fanout_wide: 1000,
    waits: waits::WaitSizes { messages: 30, sleepers: 30, ticks: 8 },
};

/// Steps per workflow in the queue throughput runs.
const QUEUE_STEPS: u32 = 10;

/// Connections of the concurrent commit floor (as many as workers would hold).
const CAPACITY_CONNECTIONS: usize = 16;

/// Steps per workflow in the concurrency curve.
const CURVE_STEPS: u32 = 100;

/// Runs every benchmark and writes the report and the chart.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let sizes = if args.quick { &QUICK } else { &FULL };
    let host = args.host.clone();
    if !host.exists() {
        bail!("no host binary at {}: build it with `cargo build --release -p stepbox` or pass --host", host.display());
    }
    let server = args.postgres.trim_end_matches('/');
    let database_url = fresh_database(server).await?;
    let scratch = tempfile::tempdir()?;
    let cache = scratch.path().join("cache");
    let machine = machine(&database_url).await;
    progress(&format!("machine: {machine}"));

    progress("(a) no-op attempt without the journal");
    let bare = BareStep::load(Path::new(artifacts::NOOP))?;
    let attempt_bare = bare.without_journal(sizes.bare_attempts).await?;
    let sqlite = Journal::open(&scratch.path().join("bench.db").display().to_string()).await?;
    let postgres = Journal::open(&database_url).await?;
    progress("(a) no-op attempt with the journal, and the single-row commit floor");
    let floor_sqlite = floor::sqlite(&scratch.path().join("floor.db"), sizes.floor_commits).await?;
    let attempt_sqlite = bare.with_journal(&sqlite, sizes.journal_attempts).await?;
    let floor_postgres = floor::postgres(&database_url, sizes.floor_commits).await?;
    let floor_step = floor::own_transaction(&database_url, OwnCall::Succeeded, sizes.floor_commits).await?;
    let floor_exhausted = floor::own_transaction(&database_url, OwnCall::Exhausted, sizes.floor_commits).await?;
    let attempt_postgres = bare.with_journal(&postgres, sizes.journal_attempts).await?;
    progress("(e) attempts of a step that succeeds at once, journal off, per language");
    let mut attempt_languages = Vec::new();
    for (language, component) in
        [("Rust", artifacts::FLAKY), ("Python", artifacts::FLAKY_PY.path()), ("JavaScript", artifacts::FLAKY_JS.path())]
    {
        let step = BareStep::flaky(Path::new(component))?;
        let summary = step.without_journal(sizes.language_attempts).await?;
        progress(&format!("    {language}: {:.0} µs median, {:.0} µs p99", summary.median, summary.p99));
        attempt_languages.push((language, summary));
    }

    let (workflow, steps) = (Path::new(artifacts::BENCH_LOOP), Path::new(artifacts::NOOP));
    let on_postgres = Workflows::link(workflow, steps, &postgres, &cache).await?;
    progress("(b) one workflow of sequential no-op steps, and (d) the exhaustion path, on one thread");
    let one = {
        let (database_url, sqlite_path, cache) =
            (database_url.clone(), scratch.path().join("one-workflow.db"), cache.clone());
        tokio::task::spawn_blocking(move || one_workflow(sizes, &database_url, &sqlite_path, &cache)).await??
    };

    progress("(c) concurrent workflows, with group commit");
    let mut curve = Vec::new();
    let mut floors = Vec::new();
    for &workflows in sizes.curve {
        let point = on_postgres.concurrent(workflows, CURVE_STEPS).await?;
        progress(&format!("    {workflows} workflows: {:.0} steps/s", point.steps_per_second()));
        if workflows >= 100 {
            // The same rows in the same batch sizes, by a plain loop: the floor group commit stands on.
            let batch = point.steps_per_batch();
            let (steps_per_second, machine_cpu_micros_per_step) =
                floor::batched(&database_url, workflows, CURVE_STEPS, batch).await?;
            progress(&format!("    floor, batches of {batch} steps: {steps_per_second:.0} steps/s"));
            floors.push(BatchFloor { workflows, batch, steps_per_second, machine_cpu_micros_per_step });
        }
        curve.push(point);
    }
    progress("(c) concurrent workflows, one transaction per write (before group commit)");
    let unbatched =
        Journal::open_with(&database_url, JournalOptions { group_commit: false, ..JournalOptions::default() }).await?;
    let on_unbatched = Workflows::link(workflow, steps, &unbatched, &cache).await?;
    let mut curve_unbatched = Vec::new();
    for &workflows in sizes.unbatched_curve {
        curve_unbatched.push(on_unbatched.concurrent(workflows, CURVE_STEPS).await?);
    }

    progress("(f) fan-out: one workflow starting its no-op steps at once");
    let fanout = on_postgres.fan_out_runs(100, sizes.fanout_runs).await?;
    progress(&format!("    100 steps: {:.1} ms median", fanout.median_ms));
    let fan_wide = FanOutWide {
        fan_out: on_postgres.fan_out(sizes.fanout_wide).await?,
        sequential: on_postgres.concurrent(1, sizes.fanout_wide).await?,
        workflows: on_postgres.concurrent(sizes.fanout_wide as usize, 1).await?,
    };
    progress(&format!(
        "    {} steps: fan-out {:.0} steps/s, sequential {:.0}, {} workflows of one step {:.0}",
        sizes.fanout_wide,
        fan_wide.fan_out.steps_per_second(),
        fan_wide.sequential.steps_per_second(),
        sizes.fanout_wide,
        fan_wide.workflows.steps_per_second()
    ));

    progress("(e) start-up of `host run`, cold and cached");
    let mut starts = Vec::new();
    for (language, step) in
        [("Rust", artifacts::FLAKY), ("Python", artifacts::FLAKY_PY.path()), ("JavaScript", artifacts::FLAKY_JS.path())]
    {
        let case = StartCase { language, workflow: artifacts::RETRY_DEMO.into(), step: step.into() };
        starts.push((language, startup::measure(&host, &case, sizes.cold_starts, sizes.cached_starts)?));
    }

    progress("(q) workers and queues: submit to the step's first line, NOTIFY and poll-only");
    let queues = Queues::new(&host, &database_url, workflow, steps, &cache).await?;
    let latency_notify = queues.latency(queues::Wakeups::Notify, sizes.latency_samples).await?;
    let latency_poll = queues.latency(queues::Wakeups::Poll, sizes.poll_latency_samples).await?;
    progress(&format!("    NOTIFY p50 {:.0} ms, poll-only p50 {:.0} ms", latency_notify.median, latency_poll.median));
    // One round of a few seconds swings 2-3× on this kind of machine (either side): a round
    // untimed first, then the median of `queue_rounds` rounds of each, in-process and per
    // worker count, with their range.
    on_postgres.concurrent(sizes.queue_workflows, QUEUE_STEPS).await?;
    let mut rounds = Vec::new();
    for _ in 0..sizes.queue_rounds {
        rounds.push(on_postgres.concurrent(sizes.queue_workflows, QUEUE_STEPS).await?);
    }
    let in_process = stats::median_round(rounds, Throughput::steps_per_second).context("no in-process round")?;
    progress_rounds("in-process", &in_process);
    let mut workers = Vec::new();
    for count in [1, 2, 4] {
        // The workload spread over the workers, as many at once as in process (within a worker's limit).
        let concurrency = (sizes.queue_workflows / count).clamp(1, 500);
        let mut rounds = Vec::new();
        for _ in 0..sizes.queue_rounds {
            rounds.push(queues.throughput(count, sizes.queue_workflows, QUEUE_STEPS, concurrency).await?);
        }
        let point = stats::median_round(rounds, WorkerThroughput::steps_per_second).context("no worker round")?;
        progress_rounds(&format!("{count} worker(s)"), &point);
        workers.push(point);
    }
    let commit_capacity = floor::postgres_concurrent(&database_url, CAPACITY_CONNECTIONS, 300).await?;
    let queue_results = QueueResults {
        latency_notify,
        latency_poll,
        workers,
        in_process,
        commit_capacity,
        commit_capacity_connections: CAPACITY_CONNECTIONS,
    };

    progress("(p) the peers' workloads on stepbox: the seed, submit → result and a burst");
    let seed = workloads::seed(&postgres, &cache, sizes.seed_runs).await?;
    progress(&format!("    seed {:.2} s, provision example {:.2} s", seed.seconds.median, seed.provision_seconds));
    let submit_to_result = queues.submit_to_result(sizes.result_samples).await?;
    progress(&format!("    submit → result p50 {:.1} ms", submit_to_result.client.median));
    let burst = queues.burst(sizes.burst).await?;
    progress(&format!("    burst of {}: {:.0} workflows/s", burst.workflows, burst.workflows_per_second()));
    let waits = waits::measure(&queues, sizes.waits).await?;

    let (dbos, peers) = run_peers(&args, sizes, server).await?;

    let results = Results {
        machine,
        cores: cpu::cores(),
        quick: args.quick,
        attempt_bare,
        attempt_sqlite,
        attempt_postgres,
        floor_postgres,
        floor_step,
        floor_exhausted,
        floor_sqlite,
        sequential_postgres: one.sequential_postgres,
        sequential_sqlite: one.sequential_sqlite,
        curve,
        curve_unbatched,
        exhaustion_postgres: one.exhaustion,
        exhaustion_commits: one.exhaustion_commits,
        exhaustion_cpu: one.exhaustion_cpu,
        exhaustion_calls: sizes.exhaustion_calls,
        floors,
        attempt_languages,
        starts,
        dbos,
        queues: queue_results,
        side: SideBySide { seed, submit_to_result, burst, fanout, peers },
        fan_wide,
        waits,
    };
    let markdown = results.markdown();
    println!("{markdown}");
    splice(&args.report, &markdown)?;
    draw(&args.chart, &results)?;
    progress(&format!("wrote {} and {}", args.report.display(), args.chart.display()));
    Ok(())
}

/// The (p) workloads of one `host worker` alone, on a fresh `stepbox_bench`
/// database, for a probe that changes one thing at a time (`examples/queue.rs`).
pub struct QueueProbe {
    queues: Queues,
    /// The same workflow through an in-process `Runner` on the same database.
    in_process: Workflows,
    _scratch: tempfile::TempDir,
}

impl QueueProbe {
    /// A fresh `stepbox_bench` database on the server at `postgres`, and `host` to run workers with.
    pub async fn new(postgres: &str, host: &Path) -> anyhow::Result<Self> {
        let database_url = fresh_database(postgres.trim_end_matches('/')).await?;
        let scratch = tempfile::tempdir()?;
        let (workflow, steps) = (Path::new(artifacts::BENCH_LOOP), Path::new(artifacts::NOOP));
        let cache = scratch.path().join("cache");
        let queues = Queues::new(host, &database_url, workflow, steps, &cache).await?;
        let in_process = Workflows::link(workflow, steps, &Journal::open(&database_url).await?, &cache).await?;
        Ok(Self { queues, in_process, _scratch: scratch })
    }

    /// `workflows` × `steps` no-op steps through the in-process `Runner`, then
    /// through one worker (as many at once, within its limit): steps/s of each.
    pub async fn baseline(&self, workflows: usize, steps: u32) -> anyhow::Result<(f64, f64)> {
        let in_process = self.in_process.concurrent(workflows, steps).await?;
        let worker = self.queues.throughput(1, workflows, steps, workflows.clamp(1, 500)).await?;
        Ok((in_process.steps_per_second(), worker.steps_per_second()))
    }

    /// `workflows` 3-step workflows submitted at once to one worker.
    pub async fn burst(&self, workflows: usize) -> anyhow::Result<Burst> {
        self.queues.burst(workflows).await
    }

    /// Submit → the step's first line of a one-step workflow, one at a time, ms of the wall clock.
    pub async fn submit_to_start(&self, samples: usize) -> anyhow::Result<Summary> {
        self.queues.latency(queues::Wakeups::Notify, samples).await
    }

    /// Submit → result of a 3-step workflow, one at a time.
    pub async fn submit_to_result(&self, samples: usize) -> anyhow::Result<ResultLatency> {
        self.queues.submit_to_result(samples).await
    }
}

fn progress(message: &str) {
    eprintln!("== {message}");
}

/// A queue throughput point's median steps/s and range, as it is measured.
fn progress_rounds<T>(label: &str, rounds: &stats::Rounds<T>) {
    progress(&format!("(q) {label}: {:.0} steps/s ({:.0}–{:.0})", rounds.middle, rounds.lowest, rounds.highest));
}

/// The peers `--peer` and `--no-peer` leave, one after another (DBOS, Restate,
/// Temporal tuned, then Temporal's shipped defaults on the sequential workload
/// alone). One that fails is kept as not measured, with its reason.
async fn run_peers(args: &Args, sizes: &Sizes, server: &str) -> anyhow::Result<(Option<peer::PeerResults>, Vec<Peer>)> {
    let selected: Vec<Engine> = if args.no_peer {
        Vec::new()
    } else {
        Engine::ALL.into_iter().filter(|engine| args.peers.is_empty() || args.peers.contains(engine)).collect()
    };
    let quick = args.quick;
    let mut dbos = None;
    let mut peers = Vec::new();
    for engine in selected {
        let not_installed = args.not_installed.contains(&engine);
        let skipped = |variant: Option<&str>| {
            Peer::not_measured(engine, variant.map(str::to_string), "its install failed (bench/run says why)".into())
        };
        match engine {
            Engine::Dbos if not_installed => peers.push(skipped(None)),
            Engine::Dbos => {
                progress("DBOS Transact on the same server");
                let workflows: Vec<usize> =
                    sizes.curve.iter().copied().filter(|&workflows| workflows < 1000 || args.peer_1000).collect();
                let queue = Some((sizes.queue_workflows, QUEUE_STEPS));
                let (python, server) = (args.python.clone(), server.to_string());
                let (own, peer) = blocking(move || peer::dbos(&python, &server, quick, &workflows, queue)).await?;
                dbos = own;
                peers.push(peer);
            }
            Engine::Restate if not_installed => peers.push(skipped(None)),
            Engine::Restate => {
                progress("Restate (its own server and store)");
                let node = args.node.clone();
                peers.push(blocking(move || peer::restate(&node, quick)).await?);
            }
            Engine::Temporal => {
                for (flags, only, variant) in [
                    (&peer::TEMPORAL_TUNED[..], None, peer::TEMPORAL_TUNED_VARIANT),
                    (&[][..], Some("sequential"), peer::TEMPORAL_DEFAULT_VARIANT),
                ] {
                    if not_installed {
                        peers.push(skipped(Some(variant)));
                        continue;
                    }
                    progress(&format!("Temporal ({variant})"));
                    let python = args.temporal_python.clone();
                    peers.push(blocking(move || peer::temporal(&python, quick, flags, only, variant)).await?);
                }
            }
        }
        if let Some(Peer { measured: Err(reason), .. }) = peers.last() {
            progress(&format!("{} not measured: {reason}", engine.name()));
        }
    }
    Ok((dbos, peers))
}

/// Runs `work` (a peer's process, waited for) off the async runtime.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work).await.context("a peer's thread panicked")
}

/// What one workflow at a time measured: (b) on each journal and (d).
struct OneWorkflow {
    sequential_postgres: Vec<Throughput>,
    sequential_sqlite: Vec<Throughput>,
    exhaustion: stats::Summary,
    exhaustion_commits: f64,
    exhaustion_cpu: f64,
}

/// (b) and (d) on a runtime of one thread with journals opened on it, as
/// `host run` runs one workflow (its writer task on the same thread).
fn one_workflow(sizes: &Sizes, database_url: &str, sqlite_path: &Path, cache: &Path) -> anyhow::Result<OneWorkflow> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let (workflow, steps) = (Path::new(artifacts::BENCH_LOOP), Path::new(artifacts::NOOP));
        let sqlite = Journal::open(&sqlite_path.display().to_string()).await?;
        let postgres = Journal::open(database_url).await?;
        let on_sqlite = Workflows::link(workflow, steps, &sqlite, cache).await?;
        let on_postgres = Workflows::link(workflow, steps, &postgres, cache).await?;
        let mut sequential_postgres = Vec::new();
        let mut sequential_sqlite = Vec::new();
        for _ in 0..sizes.sequential_runs {
            sequential_postgres.push(on_postgres.concurrent(1, sizes.sequential_steps).await?);
            sequential_sqlite.push(on_sqlite.concurrent(1, sizes.sequential_steps).await?);
        }
        progress("(d) the exhaustion path");
        let mut exhaustion = Vec::new();
        let mut exhaustion_commits = Vec::new();
        let mut exhaustion_cpu = Vec::new();
        for _ in 0..sizes.exhaustion_runs {
            let run = on_postgres.exhaust(sizes.exhaustion_calls).await?;
            exhaustion.push(run.micros_per_call);
            exhaustion_commits.push(run.commits_per_call);
            exhaustion_cpu.push(run.cpu_micros_per_call);
        }
        Ok(OneWorkflow {
            sequential_postgres,
            sequential_sqlite,
            exhaustion: stats::summarize(exhaustion),
            exhaustion_commits: stats::summarize(exhaustion_commits).median,
            // A mean, not a median: `/proc` counts CPU in 10 ms ticks, coarse for one run.
            exhaustion_cpu: exhaustion_cpu.iter().sum::<f64>() / exhaustion_cpu.len().max(1) as f64,
        })
    })
}

/// Drops and recreates the benchmark's database on `server`; returns its URL.
async fn fresh_database(server: &str) -> anyhow::Result<String> {
    let admin = format!("{server}/postgres");
    let mut connection = sqlx::PgConnection::connect(&admin).await.with_context(|| {
        format!(
            "cannot connect to PostgreSQL at {admin}; start it (`pg_ctlcluster <version> main start`) or pass \
             --postgres URL"
        )
    })?;
    connection.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))).await?;
    connection.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {DATABASE}"))).await?;
    Ok(format!("{server}/{DATABASE}"))
}

/// CPU, cores, memory and the PostgreSQL server, as one line.
async fn machine(database_url: &str) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|line| {
            line.strip_prefix("model name").and_then(|rest| rest.split_once(':')).map(|(_, name)| name.trim())
        })
        .unwrap_or("unknown CPU");
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let kb: u64 = text.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{} GiB", kb / (1024 * 1024)))
        })
        .unwrap_or_default();
    let server = async {
        let mut connection = sqlx::PgConnection::connect(database_url).await.ok()?;
        let version: String = sqlx::query_scalar("SHOW server_version").fetch_one(&mut connection).await.ok()?;
        let fsync: String = sqlx::query_scalar("SHOW fsync").fetch_one(&mut connection).await.ok()?;
        let synchronous: String =
            sqlx::query_scalar("SHOW synchronous_commit").fetch_one(&mut connection).await.ok()?;
        Some(format!("PostgreSQL {version} on the same machine (fsync {fsync}, synchronous_commit {synchronous})"))
    }
    .await
    .unwrap_or_else(|| "PostgreSQL (version unknown)".into());
    format!("{cpu}, {cores} cores, {memory}; {server}")
}

/// Replaces what lies between the results markers of `report` with `markdown`.
fn splice(report: &Path, markdown: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(report).with_context(|| format!("cannot read {}", report.display()))?;
    let (Some(start), Some(end)) = (text.find(RESULTS_START), text.find(RESULTS_END)) else {
        bail!("{} has no `{RESULTS_START}` … `{RESULTS_END}` section to write the results into", report.display());
    };
    let spliced = format!("{}{RESULTS_START}\n{markdown}\n{}", &text[..start], &text[end..]);
    std::fs::write(report, spliced).with_context(|| format!("cannot write {}", report.display()))
}

fn draw(path: &Path, results: &Results) -> anyhow::Result<()> {
    let points = |curve: &[Throughput]| curve.iter().map(|p| (p.workflows, p.steps_per_second())).collect();
    let mut series = vec![
        chart::Series {
            label: "stepbox, group commit".into(),
            points: points(&results.curve),
            color: RGBColor(0, 110, 200),
        },
        chart::Series {
            label: "stepbox, one transaction per write".into(),
            points: points(&results.curve_unbatched),
            color: RGBColor(120, 170, 220),
        },
    ];
    if let Some(dbos) = &results.dbos {
        series.push(chart::Series {
            label: format!("DBOS Transact {}", dbos.version),
            points: dbos.concurrent.clone(),
            color: RGBColor(220, 90, 40),
        });
    }
    // Restate and Temporal run one point (their `concurrent` workload).
    for (peer, color) in results.side.peers.iter().filter_map(|peer| match peer.engine {
        Engine::Restate => Some((peer, RGBColor(40, 150, 70))),
        Engine::Temporal => Some((peer, RGBColor(130, 60, 180))),
        Engine::Dbos => None,
    }) {
        if let Some(concurrent) = peer.workloads().and_then(|workloads| workloads.concurrent) {
            series.push(chart::Series {
                label: format!("{} ({} workflows)", peer.label(), concurrent.workflows),
                points: vec![(concurrent.workflows, concurrent.steps_per_second)],
                color,
            });
        }
    }
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    chart::draw(path, &format!("Durable no-op steps per second, one PostgreSQL, {cores} cores"), &series)
}
