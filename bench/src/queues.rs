//! Workers and queues (issue 14): submit → the step's first line with a
//! `host worker` woken by NOTIFY and with one polling, and the throughput of
//! 1, 2 and 4 worker processes on one PostgreSQL — each figure read from
//! the journal's timestamps, with what PostgreSQL committed meanwhile —
//! and the peers' client-side workloads through a worker: submit → result
//! of a 3-step workflow, and a burst of them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use sqlx::Connection as _;
use stepbox::config::SettingsLayer;
use stepbox::journal::{Finish, Journal, Timestamp, WorkflowStatus};
use stepbox::run::RunSpec;
use stepbox::wasm::{self, ComponentLoader};
use stepbox::worker::{Client, SubmitRequest, Submittable};

use crate::cpu;
use crate::stats::{Summary, summarize};

/// How a worker learns of new work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wakeups {
    Notify,
    Poll,
}

/// Throughput of `workers` worker processes.
#[derive(Debug, Clone, Copy)]
pub struct WorkerThroughput {
    pub workers: usize,
    pub workflows: usize,
    pub steps: usize,
    /// First claim to last finish, from the journal.
    pub elapsed: Duration,
    /// Transactions PostgreSQL committed in the journal's database meanwhile, per step.
    pub commits_per_step: f64,
    /// Rows inserted, updated and deleted meanwhile, per step.
    pub rows_per_step: f64,
}

impl WorkerThroughput {
    pub fn steps_per_second(&self) -> f64 {
        self.steps as f64 / self.elapsed.as_secs_f64()
    }
}

/// Submit → result of one workflow at a time, ms: as the client saw it, and from the journal.
#[derive(Debug, Clone, Copy)]
pub struct ResultLatency {
    /// From before the submit call to the client reading the finished row
    /// (`operate::result`, woken by the finish's announcement).
    pub client: Summary,
    /// The row's `finished_at` − `created_at`: when the result was durable.
    pub journal: Summary,
    /// Where the journal's time went, ms (means of millisecond timestamps' differences).
    pub phases: Phases,
    /// The path's own workflow-level statements, each committed alone.
    pub alone: PathStatements,
}

/// The workflow-level statements on a submit → result path, timed one by
/// one through the journal's API with nothing else running (no worker, no
/// Wasm), µs: what the same rows cost, against the single-row floor.
#[derive(Debug, Clone, Copy)]
pub struct PathStatements {
    /// `Client::submit`: the row and its NOTIFY.
    pub submit: Summary,
    /// `Journal::claim_workflows` of one workflow: its lease.
    pub claim: Summary,
    /// `Journal::finish_workflow`: its output, under the lease's fence.
    pub finish: Summary,
}

/// The phases of one submit → result, from the journal's timestamps (each
/// kept to the millisecond, so each a mean over the samples, not a median).
#[derive(Debug, Clone, Copy, Default)]
pub struct Phases {
    /// `created_at` → `started_at`: the submit's commit, the NOTIFY, the worker's claim.
    pub to_claim: f64,
    /// Claimed → the first attempt started: the runner, the workflow's instance, its first call.
    pub to_first_step: f64,
    /// The first attempt's start → the last attempt's finish: the three steps.
    pub steps: f64,
    /// The last attempt's finish → `finished_at`: the workflow's own end.
    pub to_finish: f64,
}

/// Workflows submitted at once to one worker: first submit to last finish,
/// and what they cost (where the time goes).
#[derive(Debug, Clone, Copy)]
pub struct Burst {
    pub workflows: usize,
    pub elapsed: Duration,
    /// Transactions PostgreSQL committed meanwhile, per workflow (submits, claims, steps, finishes).
    pub commits_per_workflow: f64,
    /// CPU per workflow, µs: the worker process, the submitting client, the whole machine.
    pub cpu: BurstCpu,
}

/// CPU per workflow of a burst, µs.
#[derive(Debug, Clone, Copy)]
pub struct BurstCpu {
    pub worker: f64,
    pub client: f64,
    pub machine: f64,
}

impl Burst {
    pub fn workflows_per_second(&self) -> f64 {
        self.workflows as f64 / self.elapsed.as_secs_f64()
    }
}

/// Tasks submitting a burst at once (DBOS's peer starts from 32 threads).
const SUBMITTERS: usize = 32;

/// Submits bench-loop workflows to the journal of `database_url` and runs `host worker` processes.
pub struct Queues {
    host: PathBuf,
    database_url: String,
    cache: PathBuf,
    client: Arc<Client>,
    sequential: Arc<Submittable>,
    /// `bench-loop.marked`: one step that returns the wall clock at its first line.
    marked: Submittable,
}

impl Queues {
    /// A client for `bench-loop.sequential` with the no-op steps.
    pub async fn new(
        host: &Path,
        database_url: &str,
        workflow: &Path,
        steps: &Path,
        cache: &Path,
    ) -> anyhow::Result<Self> {
        let journal = Journal::open(database_url).await?;
        let engine = wasm::new_engine().map_err(|error| anyhow::anyhow!("{error:#}"))?;
        let client = Client::new(journal, ComponentLoader::new(&engine, Some(cache.to_path_buf())));
        let sequential = client.prepare(&spec(workflow, &[steps], "sequential")).await?;
        let marked = client.prepare(&spec(workflow, &[steps], "marked")).await?;
        Ok(Self {
            host: host.to_path_buf(),
            database_url: database_url.to_string(),
            cache: cache.to_path_buf(),
            client: Arc::new(client),
            sequential: Arc::new(sequential),
            marked,
        })
    }

    /// The client that submits (and sends messages, and sets schedules).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `invoke` of `workflow` with `steps`, ready to submit.
    pub async fn prepare(&self, workflow: &Path, steps: &[&Path], invoke: &str) -> anyhow::Result<Submittable> {
        Ok(self.client.prepare(&spec(workflow, steps, invoke)).await?)
    }

    /// The journal's database, for the queries that read its timestamps.
    pub async fn database(&self) -> anyhow::Result<sqlx::PgConnection> {
        Ok(sqlx::PgConnection::connect(&self.database_url).await?)
    }

    fn journal(&self) -> &Journal {
        self.client.journal()
    }

    /// Starts a `host worker` on `queue`.
    fn worker(&self, queue: &str, concurrency: usize, wakeups: Wakeups) -> anyhow::Result<Worker> {
        self.worker_with(queue, concurrency, wakeups, &[])
    }

    /// Starts a `host worker` on `queue` with `extra` arguments, and waits until it listens.
    pub async fn started_worker(&self, queue: &str, concurrency: usize, extra: &[&str]) -> anyhow::Result<Worker> {
        let worker = self.worker_with(queue, concurrency, Wakeups::Notify, extra)?;
        self.registered(1).await?;
        Ok(worker)
    }

    /// Starts a `host worker` on `queue` with `extra` arguments.
    fn worker_with(&self, queue: &str, concurrency: usize, wakeups: Wakeups, extra: &[&str]) -> anyhow::Result<Worker> {
        let concurrency = concurrency.to_string();
        let mut command = Command::new(&self.host);
        command
            .args(["worker", "--journal", &self.database_url, "--queue", queue, "--concurrency", &concurrency])
            .args(extra)
            .env("STEPBOX_CACHE_DIR", &self.cache)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if wakeups == Wakeups::Poll {
            command.arg("--poll-only");
        }
        let child = command.spawn().with_context(|| format!("cannot start {}", self.host.display()))?;
        Ok(Worker { child })
    }

    /// Waits until `count` worker rows are live (each registered, its LISTEN set up).
    async fn registered(&self, count: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let live = self.journal().workers().await?.iter().filter(|worker| worker.stopped_at.is_none()).count();
            if live >= count {
                // The LISTEN and its self-test follow the row: give them a moment.
                tokio::time::sleep(Duration::from_millis(2500)).await;
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{count} worker(s) did not start within a minute");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Submit → the step's first line, one workflow at a time, `samples`
    /// times: ms from the wall clock before the submit call to the wall clock
    /// the step read (µs resolution; the journal's timestamps are ms).
    pub async fn latency(&self, wakeups: Wakeups, samples: usize) -> anyhow::Result<Summary> {
        let queue = format!("latency-{}", if wakeups == Wakeups::Notify { "notify" } else { "poll" });
        let mut worker = self.worker(&queue, 10, wakeups)?;
        let result = async {
            self.registered(1).await?;
            let mut latencies = Vec::with_capacity(samples);
            for n in 0..samples + samples / 10 {
                let request = SubmitRequest { queue: Some(queue.clone()), ..SubmitRequest::default() };
                let submitted = wall_micros();
                let receipt = self.client.submit(&self.marked, &request).await?;
                let stepped = self.marked_output(&receipt.id).await?;
                if n >= samples / 10 {
                    latencies.push(stepped.saturating_sub(submitted) as f64 / 1000.0);
                }
                // Spread submissions over the poll period, as independent arrivals would be.
                if wakeups == Wakeups::Poll {
                    tokio::time::sleep(Duration::from_millis(137)).await;
                }
            }
            Ok(summarize(latencies))
        }
        .await;
        worker.stop();
        result
    }

    /// Waits for the `marked` workflow `id` to succeed; the wall clock its step read, µs.
    async fn marked_output(&self, id: &str) -> anyhow::Result<u64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let workflow = self.journal().workflow(id).await?.context("the submitted workflow is in the journal")?;
            if workflow.status == WorkflowStatus::Succeeded {
                let output = workflow.output.context("a workflow that succeeded has its output")?;
                return output.parse().with_context(|| format!("workflow {id} returned {output:?}, not a time"));
            }
            if workflow.status.is_final() {
                bail!("workflow {id} ended {}", workflow.status);
            }
            if Instant::now() > deadline {
                bail!("workflow {id} did not finish within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// `workflows` workflows of `steps` no-op steps submitted to a queue of their own, then
    /// run by `workers` worker processes of `concurrency` each.
    pub async fn throughput(
        &self,
        workers: usize,
        workflows: usize,
        steps: u32,
        concurrency: usize,
    ) -> anyhow::Result<WorkerThroughput> {
        // A queue of its own each time: the drain is told by the queue's rows alone.
        static ROUNDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let round = ROUNDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let queue = format!("throughput-{workers}-{round}");
        let request = SubmitRequest {
            arguments: vec![steps.to_string()],
            queue: Some(queue.clone()),
            ..SubmitRequest::default()
        };
        for _ in 0..workflows {
            self.client.submit(&self.sequential, &request).await?;
        }
        let mut database = sqlx::PgConnection::connect(&self.database_url).await?;
        let before = counters(&mut database).await?;
        let mut running = Vec::new();
        for _ in 0..workers {
            running.push(self.worker(&queue, concurrency, Wakeups::Notify)?);
        }
        let result = self.drained(&queue, workflows).await;
        // Backends report their counters when they exit (or about once a second): stop the
        // workers first, so their connections' commits and rows are all counted.
        for worker in &mut running {
            worker.stop();
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let after = counters(&mut database).await?;
        let elapsed = result?;
        let total = workflows * steps as usize;
        Ok(WorkerThroughput {
            workers,
            workflows,
            steps: total,
            elapsed,
            commits_per_step: (after.0 - before.0) as f64 / total as f64,
            rows_per_step: (after.1 - before.1) as f64 / total as f64,
        })
    }

    /// Submit → result of a 3-step workflow, one at a time, `samples` times
    /// (after a tenth more, discarded), through a worker woken by NOTIFY.
    pub async fn submit_to_result(&self, samples: usize) -> anyhow::Result<ResultLatency> {
        let queue = "submit-to-result";
        let mut worker = self.started_worker(queue, stepbox::worker::DEFAULT_CONCURRENCY, &[]).await?;
        let result = async {
            let request =
                SubmitRequest { arguments: vec!["3".into()], queue: Some(queue.into()), ..SubmitRequest::default() };
            let (mut client, mut journal) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
            let mut phases = Phases::default();
            for n in 0..samples + samples / 10 {
                let started = Instant::now();
                let receipt = self.client.submit(&self.sequential, &request).await?;
                let result = stepbox::operate::result(self.journal(), &receipt.id, Duration::from_secs(30)).await?;
                let seen = crate::workloads::micros(started.elapsed()) / 1000.0;
                if !result.status.is_final() {
                    bail!("workflow {} did not finish within 30 s", receipt.id);
                }
                let workflow = self.journal().workflow(&receipt.id).await?.context("the workflow is in the journal")?;
                if workflow.status != WorkflowStatus::Succeeded {
                    bail!("workflow {} ended {}", receipt.id, workflow.status);
                }
                let finished = workflow.finished_at.context("a finished workflow has its finish time")?;
                if n >= samples / 10 {
                    client.push(seen);
                    journal.push((finished.millis() - workflow.created_at.millis()) as f64);
                    let attempts = self.journal().attempts(&receipt.id).await?;
                    let (Some(first), Some(last), Some(claimed)) = (
                        attempts.first().map(|attempt| attempt.started_at),
                        attempts.last().and_then(|attempt| attempt.finished_at),
                        workflow.started_at,
                    ) else {
                        bail!("workflow {} has no finished attempts", receipt.id);
                    };
                    let gap = |from: Timestamp, to: Timestamp| (to.millis() - from.millis()) as f64;
                    phases.to_claim += gap(workflow.created_at, claimed);
                    phases.to_first_step += gap(claimed, first);
                    phases.steps += gap(first, last);
                    phases.to_finish += gap(last, finished);
                }
            }
            let runs = journal.len().max(1) as f64;
            let phases = Phases {
                to_claim: phases.to_claim / runs,
                to_first_step: phases.to_first_step / runs,
                steps: phases.steps / runs,
                to_finish: phases.to_finish / runs,
            };
            Ok((summarize(client), summarize(journal), phases))
        }
        .await;
        worker.stop();
        let (client, journal, phases) = result?;
        let alone = self.path_statements(samples).await?;
        Ok(ResultLatency { client, journal, phases, alone })
    }

    /// Submits, claims and finishes `samples` workflows one by one (after a
    /// tenth more, discarded), on a queue no worker serves, timing each call.
    async fn path_statements(&self, samples: usize) -> anyhow::Result<PathStatements> {
        let queue = "statements-alone";
        let request = SubmitRequest { arguments: vec!["3".into()], queue: Some(queue.into()), ..Default::default() };
        let finish = Finish {
            status: WorkflowStatus::Succeeded,
            output: Some("3".into()),
            output_json: Some(serde_json::json!(3)),
            error: None,
        };
        let (mut submits, mut claims, mut finishes) = (Vec::new(), Vec::new(), Vec::new());
        let lease = Duration::from_secs(30);
        for n in 0..samples + samples / 10 {
            let began = Instant::now();
            self.client.submit(&self.sequential, &request).await?;
            let submitted = began.elapsed();
            let began = Instant::now();
            let claimed = self.journal().claim_workflows(queue, "bench-statements-alone", 1, lease).await?;
            let claimed_in = began.elapsed();
            let claimed = claimed.into_iter().next().context("the workflow just submitted is claimable")?;
            let began = Instant::now();
            if !self.journal().finish_workflow(&claimed.lease, &finish).await? {
                bail!("workflow {} could not be finished under its fresh lease", claimed.workflow.id);
            }
            let finished_in = began.elapsed();
            if n >= samples / 10 {
                let micros = crate::workloads::micros;
                submits.push(micros(submitted));
                claims.push(micros(claimed_in));
                finishes.push(micros(finished_in));
            }
        }
        Ok(PathStatements { submit: summarize(submits), claim: summarize(claims), finish: summarize(finishes) })
    }

    /// `workflows` 3-step workflows submitted at once (from 32 tasks) to one
    /// worker of the default concurrency: first submit to last finish.
    pub async fn burst(&self, workflows: usize) -> anyhow::Result<Burst> {
        static ROUNDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        // A queue per burst: one drains only its own workflows.
        let queue = &format!("burst-{}", ROUNDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let mut worker = self.started_worker(queue, stepbox::worker::DEFAULT_CONCURRENCY, &[]).await?;
        let mut database = self.database().await?;
        let before = counters(&mut database).await?;
        let cpu_before = (cpu::of(worker.pid()), cpu::process(), cpu::machine());
        let result = async {
            let first = Timestamp::now();
            let mut submitters = tokio::task::JoinSet::new();
            for task in 0..SUBMITTERS {
                let (client, sequential) = (self.client.clone(), self.sequential.clone());
                let request = SubmitRequest {
                    arguments: vec!["3".into()],
                    queue: Some(queue.into()),
                    ..SubmitRequest::default()
                };
                let share = workflows / SUBMITTERS + usize::from(task < workflows % SUBMITTERS);
                submitters.spawn(async move {
                    for _ in 0..share {
                        client.submit(&sequential, &request).await?;
                    }
                    anyhow::Ok(())
                });
            }
            while let Some(submitted) = submitters.join_next().await {
                submitted.context("a submitting task panicked")??;
            }
            let (_, last) = self.drained_at(queue, workflows).await?;
            let elapsed = Duration::from_millis(u64::try_from(last.millis() - first.millis()).unwrap_or(0).max(1));
            let per = |spent: Duration| crate::workloads::micros(spent) / workflows as f64;
            let cpu = BurstCpu {
                worker: per(cpu::of(worker.pid()).saturating_sub(cpu_before.0)),
                client: per(cpu::process().saturating_sub(cpu_before.1)),
                machine: per(cpu::machine().saturating_sub(cpu_before.2)),
            };
            anyhow::Ok((elapsed, cpu))
        }
        .await;
        worker.stop();
        let (elapsed, cpu) = result?;
        // Backends report their counters when they exit (or about once a second).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let after = counters(&mut database).await?;
        let commits_per_workflow = (after.0 - before.0) as f64 / workflows as f64;
        Ok(Burst { workflows, elapsed, commits_per_workflow, cpu })
    }

    /// Waits until every workflow of `queue` succeeded; first claim to last finish.
    async fn drained(&self, queue: &str, workflows: usize) -> anyhow::Result<Duration> {
        let (first, last) = self.drained_at(queue, workflows).await?;
        Ok(Duration::from_millis(u64::try_from(last.millis() - first.millis()).unwrap_or(0).max(1)))
    }

    /// Waits until the `workflows` workflows of `queue` succeeded: their first claim and last finish.
    pub async fn drained_at(&self, queue: &str, workflows: usize) -> anyhow::Result<(Timestamp, Timestamp)> {
        let mut database = sqlx::PgConnection::connect(&self.database_url).await?;
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let (succeeded, other, first, last): (i64, i64, Option<f64>, Option<f64>) = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE status = 'succeeded'), \
                 count(*) FILTER (WHERE status NOT IN ('succeeded', 'enqueued', 'running', 'delayed', 'waiting')), \
                 extract(epoch FROM min(started_at))::float8, extract(epoch FROM max(finished_at))::float8 \
                 FROM stepbox.workflows WHERE queue = $1",
            )
            .bind(queue)
            .fetch_one(&mut database)
            .await?;
            if other > 0 {
                bail!("{other} workflow(s) of {queue} did not succeed");
            }
            if succeeded as usize == workflows {
                let at =
                    |epoch: Option<f64>| Timestamp::from_millis((epoch.unwrap_or_default() * 1000.0).round() as i64);
                return Ok((at(first), at(last)));
            }
            if Instant::now() > deadline {
                bail!("queue {queue} did not drain within 10 minutes ({succeeded} of {workflows} done)");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `invoke` of `workflow` linked with `steps`, with no settings of its own.
fn spec(workflow: &Path, steps: &[&Path], invoke: &str) -> RunSpec {
    RunSpec {
        workflow: workflow.to_path_buf(),
        steps: steps.iter().map(|step| step.to_path_buf()).collect(),
        invoke: Some(invoke.into()),
        config: None,
        cli_settings: SettingsLayer::default(),
    }
}

/// Transactions committed and rows written in the current database so far.
async fn counters(database: &mut sqlx::PgConnection) -> anyhow::Result<(i64, i64)> {
    sqlx::raw_sql("SELECT pg_stat_force_next_flush()").execute(&mut *database).await.ok();
    sqlx::raw_sql("SELECT pg_stat_clear_snapshot()").execute(&mut *database).await?;
    let counts = sqlx::query_as(
        "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database \
         WHERE datname = current_database()",
    )
    .fetch_one(database)
    .await?;
    Ok(counts)
}

/// A `host worker` process; stopped with SIGTERM.
pub struct Worker {
    child: Child,
}

impl Worker {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then SIGKILL if it has not exited within 30 s.
    pub fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// The wall clock, µs since the Unix epoch (what the `clock` step returns).
fn wall_micros() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
}
