//! The results as a markdown report: what was measured, how, against which
//! floor or peer, whether each target is met, and the peers side by side on
//! the workloads of bench/PEERS.md.

use std::fmt::Write as _;

use crate::CURVE_STEPS as CURVE;
use crate::peer::{Peer, PeerResults, TEMPORAL_DEFAULT_VARIANT, Workloads};
use crate::queues::{Burst, ResultLatency, WorkerThroughput};
use crate::startup::StartTimes;
use crate::stats::{Rounds, Summary};
use crate::waits::{MessageWake, SLEEP_MS, WaitResults};
use crate::workloads::{FanOut, SeedRuns, Throughput};

/// Everything one benchmark run measured.
pub struct Results {
    pub machine: String,
    /// Cores the benchmark could use (shared with PostgreSQL).
    pub cores: usize,
    pub quick: bool,
    /// (a) µs per attempt: sandbox only, then with the journal on SQLite and PostgreSQL.
    pub attempt_bare: Summary,
    pub attempt_sqlite: Summary,
    pub attempt_postgres: Summary,
    /// µs per single-row commit.
    pub floor_postgres: Summary,
    /// µs per sequential step's own transaction, sent by a plain loop (`floor::own_transaction`).
    pub floor_step: Summary,
    /// µs per exhausted call's own transaction, sent by a plain loop.
    pub floor_exhausted: Summary,
    pub floor_sqlite: Summary,
    /// (b) runs of one workflow of sequential steps.
    pub sequential_postgres: Vec<Throughput>,
    pub sequential_sqlite: Vec<Throughput>,
    /// (c) concurrent workflows on PostgreSQL, with group commit and without.
    pub curve: Vec<Throughput>,
    pub curve_unbatched: Vec<Throughput>,
    /// (d) µs per exhausted 3-attempt call, one sample per workflow run.
    pub exhaustion_postgres: Summary,
    /// (d) write transactions per exhausted call (median over runs).
    pub exhaustion_commits: f64,
    /// (d) CPU µs of this process per exhausted call (mean over runs).
    pub exhaustion_cpu: f64,
    pub exhaustion_calls: u32,
    /// (c) the same rows written by a plain loop of batches, per curve point of 100 workflows and more.
    pub floors: Vec<BatchFloor>,
    /// (e) µs per attempt of a step that succeeds at once, journal off, per language.
    pub attempt_languages: Vec<(&'static str, Summary)>,
    /// (e) per language.
    pub starts: Vec<(&'static str, StartTimes)>,
    /// DBOS's own keys: the rows beside stepbox's in the first table.
    pub dbos: Option<PeerResults>,
    pub queues: QueueResults,
    /// The peers' workloads on stepbox, and the peers.
    pub side: SideBySide,
    /// 1,000 no-op steps fanned out, sequential, and as 1,000 workflows.
    pub fan_wide: FanOutWide,
    /// Workflows that wait (issue 24).
    pub waits: WaitResults,
}

/// What stepbox measured only for the side-by-side tables, and every peer's run.
pub struct SideBySide {
    pub seed: SeedRuns,
    pub submit_to_result: ResultLatency,
    pub burst: Burst,
    /// One workflow running 100 no-op steps at once, again and again.
    pub fanout: FanOut,
    pub peers: Vec<Peer>,
}

/// The same 1,000 no-op steps three ways: fanned out from one workflow, one
/// after another in one workflow, and as 1,000 workflows of one step.
pub struct FanOutWide {
    pub fan_out: Throughput,
    pub sequential: Throughput,
    pub workflows: Throughput,
}

/// The rows of a concurrency point written by a plain loop of batches (`floor::batched`).
pub struct BatchFloor {
    pub workflows: usize,
    /// Steps per batch: what group commit reached at this point.
    pub batch: usize,
    pub steps_per_second: f64,
    /// CPU µs per step the whole machine used meanwhile.
    pub machine_cpu_micros_per_step: f64,
}

/// Workers and queues (issue 14).
pub struct QueueResults {
    /// Submit → the step's first line, ms of the wall clock.
    pub latency_notify: Summary,
    pub latency_poll: Summary,
    /// 1, 2 and 4 worker processes on the same workload (rounds' steps/s).
    pub workers: Vec<Rounds<WorkerThroughput>>,
    /// The same workload through one in-process `Runner` (rounds' steps/s).
    pub in_process: Rounds<Throughput>,
    /// Single-row commits per second from many connections at once.
    pub commit_capacity: f64,
    pub commit_capacity_connections: usize,
}

const TARGET_LATENCY_MS: f64 = 5.0;
/// Issue 24: a message wakes its waiting workflow within this (p50).
const TARGET_MESSAGE_MS: f64 = 10.0;
const TARGET_TWO_WORKERS_SHARE: f64 = 0.8;
const TARGET_QUEUE_RATIO: f64 = 30.0;

const TARGET_ATTEMPT_US: f64 = 30.0;
/// Issue 11: what is left above one commit per sequential step is hand-off.
const TARGET_COMMITS_PER_STEP: f64 = 1.25;
const TARGET_SEQUENTIAL_RATIO: f64 = 10.0;
const TARGET_THROUGHPUT: f64 = 10_000.0;
const TARGET_THROUGHPUT_RATIO: f64 = 35.0;
/// Issue 11: share of the batch floor at 100 and 1,000 workflows.
const TARGET_FLOOR_SHARE: f64 = 0.7;
/// Issue 11: an exhausted call in single-row commits.
const TARGET_EXHAUSTION_COMMITS: f64 = 2.0;
const TARGET_PYTHON_CACHED_US: f64 = 150_000.0;
/// Issue 11: half the per-attempt cost measured before (1.6 ms Python, 1.15 ms JavaScript).
const TARGET_ATTEMPT_PYTHON_US: f64 = 800.0;
const TARGET_ATTEMPT_JS_US: f64 = 575.0;

fn met(ok: bool) -> &'static str {
    if ok { "**met**" } else { "not met" }
}

/// Whether a target in commits is met, and when not, whether `floor` (a
/// part of the path measured alone, in commits) already exceeds it.
fn met_within(value: f64, target: f64, floor: f64, part: &str) -> String {
    if value <= target {
        met(true).into()
    } else if floor > target {
        format!("not met: out of reach on this machine ({part} alone is {floor:.2} commits)")
    } else {
        met(false).into()
    }
}

fn us(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.1} ms", value / 1000.0)
    } else if value >= 1000.0 {
        format!("{:.2} ms", value / 1000.0)
    } else {
        format!("{value:.1} µs")
    }
}

/// "median of N rounds, range A–B" (steps/s), or "one round".
fn spread<T>(rounds: &Rounds<T>) -> String {
    match rounds.count {
        1 => "one round".into(),
        count => format!("median of {count} rounds, range {}–{}", rate(rounds.lowest), rate(rounds.highest)),
    }
}

fn rate(value: f64) -> String {
    let rounded = value.round() as u64;
    let digits = rounded.to_string();
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// The (c) row that says whether the floor's target fits the machine's CPU:
/// 70 % of the floor on `cores` cores leaves a budget of CPU per step for
/// everything (the host and the database), against what this run spent.
fn cpu_budget(floor: &BatchFloor, point: &Throughput, cores: usize) -> String {
    let capacity = cores as f64 * 1e6;
    let budget = capacity / (TARGET_FLOOR_SHARE * floor.steps_per_second);
    let busy = point.steps_per_second() * point.machine_cpu_micros_per_step / capacity;
    let host = point.cpu_micros_per_step;
    let rows = floor.machine_cpu_micros_per_step;
    let verdict = if host > budget {
        "out of reach on this machine: the host process alone needs more CPU per step than the budget"
    } else if host + rows > budget {
        "out of reach on this machine: the host's CPU plus what the same rows cost the database in the floor exceed the budget"
    } else {
        "within the budget: the gap is not the CPU"
    };
    format!(
        "| c | CPU at {} workflows: the whole machine's CPU per step (this process, PostgreSQL, the rest) and how busy its {cores} cores were; 70 % of the floor leaves a budget of {} of CPU per step on {cores} cores | {} per step (host {}), cores {:.0} % busy | floor: {} per step (the rows, mostly PostgreSQL) | host + floor's rows {} against the budget {} | | {verdict} |",
        floor.workflows,
        us(budget),
        us(point.machine_cpu_micros_per_step),
        us(host),
        busy * 100.0,
        us(rows),
        us(host + rows),
        us(budget),
    )
}

/// Median µs per step over runs, and the slowest run.
fn per_step(runs: &[Throughput]) -> Summary {
    crate::stats::summarize(runs.iter().map(Throughput::micros_per_step).collect())
}

fn at(curve: &[Throughput], workflows: usize) -> Option<&Throughput> {
    curve.iter().find(|point| point.workflows == workflows)
}

impl Results {
    /// The report: a results table, the concurrency curve, group commit before/after, startup, notes.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let peer = self.dbos.as_ref();
        let _ = writeln!(
            out,
            "Machine: {}.{}\n",
            self.machine,
            if self.quick { " **Quick run** (--quick): fewer samples." } else { "" }
        );
        out.push_str("| | what | stepbox | reference | ratio | target | |\n|---|---|---|---|---|---|---|\n");
        let bare = self.attempt_bare;
        let _ = writeln!(
            out,
            "| a | no-op Rust attempt, journal off (new store + instantiate + call + drop; median / p99 of {}) | {} / {} | | | ≤ 30 µs | {} |",
            bare.samples,
            us(bare.median),
            us(bare.p99),
            met(bare.median <= TARGET_ATTEMPT_US)
        );
        for (name, summary, floor) in [
            ("SQLite", self.attempt_sqlite, self.floor_sqlite),
            ("PostgreSQL", self.attempt_postgres, self.floor_postgres),
        ] {
            let _ = writeln!(
                out,
                "| a | same, journal on, {name} (start queued + outcome durable; median / p99 of {}) | {} / {} | single-row commit {} / {} | {:.2} commits | | |",
                summary.samples,
                us(summary.median),
                us(summary.p99),
                us(floor.median),
                us(floor.p99),
                summary.median / floor.median
            );
        }
        let sequential = per_step(&self.sequential_postgres);
        let steps = self.sequential_postgres.first().map_or(0, |run| run.steps);
        let commits = self.sequential_postgres.first().map_or(f64::NAN, |run| run.commits_per_step);
        let in_commits = sequential.median / self.floor_postgres.median;
        let _ = writeln!(
            out,
            "| b | sequential durable steps, PostgreSQL: one workflow of {steps} no-op steps (median of {} runs, µs per step = run time / steps) | {} per step ({} steps/s), {commits:.2} write transactions per step | single-row commit {} | {in_commits:.2} commits | ≤ 1.25 commits | {} |",
            self.sequential_postgres.len(),
            us(sequential.median),
            rate(1e6 / sequential.median),
            us(self.floor_postgres.median),
            met_within(
                in_commits,
                TARGET_COMMITS_PER_STEP,
                self.floor_step.median / self.floor_postgres.median,
                "the step's own transaction"
            )
        );
        let in_statement =
            crate::stats::summarize(self.sequential_postgres.iter().map(|run| run.commit_micros_per_step).collect())
                .median;
        let _ = writeln!(
            out,
            "| b | where a sequential step's time goes: the attempt batch's statement and commit, as the writer times it / the rest (the Wasm attempt, the workflow, hand-offs between tasks) | {} / {} | single-row commit {} | {:.2} / {:.2} commits | | |",
            us(in_statement),
            us(sequential.median - in_statement),
            us(self.floor_postgres.median),
            in_statement / self.floor_postgres.median,
            (sequential.median - in_statement) / self.floor_postgres.median
        );
        let own = self.floor_step.median;
        let _ = writeln!(
            out,
            "| b | the step's own transaction with nothing around it: the statement group commit sends for one fast step (fence lock, call row, attempt row; the journal's own tables and indexes), from a plain loop (median / p99 of {}) | {} per step | step transaction {} / {} = {:.2} single-row commits | {:.2}× its own transaction | | |",
            self.floor_step.samples,
            us(sequential.median),
            us(own),
            us(self.floor_step.p99),
            own / self.floor_postgres.median,
            sequential.median / own
        );
        let cpu = self.sequential_postgres.iter().map(|run| run.cpu_micros_per_step).sum::<f64>()
            / self.sequential_postgres.len().max(1) as f64;
        let _ = writeln!(
            out,
            "| b | this process's CPU per sequential step (all threads, mean of the runs): the attempt, the workflow, encoding, the writer, the socket; on one thread it runs between one commit and the next | {} | single-row commit {} | {:.2} commits | | |",
            us(cpu),
            us(self.floor_postgres.median),
            cpu / self.floor_postgres.median
        );
        if let Some(peer) = peer {
            let ratio = peer.sequential_step_us / sequential.median;
            let _ = writeln!(
                out,
                "| b | same against DBOS {} (median step inside its workflow) | {} | DBOS {} per step | {ratio:.1}× | ≥ 10× DBOS | {} |",
                peer.version,
                us(sequential.median),
                us(peer.sequential_step_us),
                met(ratio >= TARGET_SEQUENTIAL_RATIO)
            );
        }
        let sqlite = per_step(&self.sequential_sqlite);
        let _ = writeln!(
            out,
            "| b | sequential durable steps, SQLite file (same workflow) | {} per step ({} steps/s) | single-row commit {} | {:.2} commits | | |",
            us(sqlite.median),
            rate(1e6 / sqlite.median),
            us(self.floor_sqlite.median),
            sqlite.median / self.floor_sqlite.median
        );
        if let Some(point) = at(&self.curve, 100) {
            let throughput = point.steps_per_second();
            let _ = writeln!(
                out,
                "| c | 100 workflows × 100 no-op steps at once, PostgreSQL, one process | {} steps/s, {:.3} write transactions per step | | | ≥ 10,000 steps/s | {} |",
                rate(throughput),
                point.commits_per_step,
                met(throughput >= TARGET_THROUGHPUT)
            );
            if let Some(&(_, dbos)) =
                peer.and_then(|peer| peer.concurrent.iter().find(|(workflows, _)| *workflows == 100))
            {
                let ratio = throughput / dbos;
                let _ = writeln!(
                    out,
                    "| c | same against DBOS | {} steps/s | DBOS {} steps/s | {ratio:.1}× | ≥ 35× DBOS | {} |",
                    rate(throughput),
                    rate(dbos),
                    met(ratio >= TARGET_THROUGHPUT_RATIO)
                );
            }
        }
        for floor in &self.floors {
            let Some(point) = at(&self.curve, floor.workflows) else { continue };
            let share = point.steps_per_second() / floor.steps_per_second;
            let _ = writeln!(
                out,
                "| c | {} workflows × {CURVE} no-op steps at once against the batch floor: the same rows (workflow, call and attempt rows) written by a plain loop, one transaction per batch of {} steps (the batch size group commit reached), no Wasm | {} steps/s ({} of host CPU and {} of the writer's transactions per step) | floor {} steps/s ({} per step) | {:.0} % | ≥ 70 % of the floor | {} |",
                floor.workflows,
                floor.batch,
                rate(point.steps_per_second()),
                us(point.cpu_micros_per_step),
                us(point.commit_micros_per_step),
                rate(floor.steps_per_second),
                us(1e6 / floor.steps_per_second),
                share * 100.0,
                met(share >= TARGET_FLOOR_SHARE)
            );
            let _ = writeln!(out, "{}", cpu_budget(floor, point, self.cores));
        }
        let exhaustion = self.exhaustion_postgres;
        let exhaustion_in_commits = exhaustion.median / self.floor_postgres.median;
        let _ = writeln!(
            out,
            "| d | exhaustion path in commits: per exhausted call / single-row commit ({:.2} write transactions per call) | {} | single-row commit {} | {exhaustion_in_commits:.2} commits | ≤ 2 commits | {} |",
            self.exhaustion_commits,
            us(exhaustion.median),
            us(self.floor_postgres.median),
            met_within(
                exhaustion_in_commits,
                TARGET_EXHAUSTION_COMMITS,
                (self.floor_exhausted.median + 3.0 * self.attempt_bare.median) / self.floor_postgres.median,
                "the call's own transaction with three bare attempts"
            )
        );
        let own = self.floor_exhausted;
        let _ = writeln!(
            out,
            "| d | where an exhausted call's time goes: its own transaction with nothing around it (fence lock, the call row with its retries-exhausted value, 3 failed attempt rows), from a plain loop (median of {}) / this process's CPU per call (3 attempts, the workflow, encoding, the writer, the socket; mean of the runs) | {} / {} | single-row commit {} | {:.2} / {:.2} commits | | |",
            own.samples,
            us(own.median),
            us(self.exhaustion_cpu),
            us(self.floor_postgres.median),
            own.median / self.floor_postgres.median,
            self.exhaustion_cpu / self.floor_postgres.median
        );
        let rust = self.attempt_languages.iter().find(|(language, _)| *language == "Rust").map(|(_, s)| s.median);
        for (language, summary) in &self.attempt_languages {
            let target = match *language {
                "Python" => format!("≤ 0.8 ms (half of 1.6 ms) | {}", met(summary.median <= TARGET_ATTEMPT_PYTHON_US)),
                "JavaScript" => {
                    format!("≤ 0.58 ms (half of 1.15 ms) | {}", met(summary.median <= TARGET_ATTEMPT_JS_US))
                }
                _ => " | ".into(),
            };
            let _ = writeln!(
                out,
                "| e | attempt of a {language} step that succeeds at once (`flaky(0)`), journal off: new store + instantiate + call + drop (median / p99 of {}) | {} / {} | {} | | {target} |",
                summary.samples,
                us(summary.median),
                us(summary.p99),
                rust.filter(|_| *language != "Rust").map_or(String::new(), |rust| format!("Rust {}", us(rust)))
            );
        }
        let dbos_exhaustion = peer.map(|peer| peer.exhaustion_ms);
        let _ = writeln!(
            out,
            "| d | exhaustion path: a step failing 3 attempts, interval 0, PostgreSQL (per call = run time / {} calls; median / max of {} runs) | {} / {} | {} | {} | | |",
            self.exhaustion_calls,
            exhaustion.samples,
            us(exhaustion.median),
            us(exhaustion.p99),
            dbos_exhaustion.map_or(String::new(), |(median, p99)| format!(
                "DBOS {} / {}",
                us(median * 1000.0),
                us(p99 * 1000.0)
            )),
            dbos_exhaustion.map_or(String::new(), |(median, _)| format!("{:.1}×", median * 1000.0 / exhaustion.median)),
        );
        for (language, times) in &self.starts {
            let target = if *language == "Python" {
                format!("≤ 150 ms cached | {}", met(times.cached.median <= TARGET_PYTHON_CACHED_US))
            } else {
                " | ".to_string()
            };
            let _ = writeln!(
                out,
                "| e | `host run` start to exit, {language} step (median of {} cold / {} cached) | cold {} · cached {} | | | {target} |",
                times.cold.samples,
                times.cached.samples,
                us(times.cold.median),
                us(times.cached.median)
            );
        }

        out.push_str("\n### Throughput against concurrency (PostgreSQL, 100 no-op steps per workflow)\n\n");
        out.push_str("| workflows | stepbox, group commit | write transactions per step | stepbox, one transaction per write | write transactions per step | DBOS |\n|---|---|---|---|---|---|\n");
        for point in &self.curve {
            let unbatched = at(&self.curve_unbatched, point.workflows);
            let dbos = peer.and_then(|peer| peer.concurrent.iter().find(|(n, _)| *n == point.workflows));
            let _ = writeln!(
                out,
                "| {} | {} steps/s | {:.3} | {} | {} | {} |",
                point.workflows,
                rate(point.steps_per_second()),
                point.commits_per_step,
                unbatched.map_or("—".into(), |p| format!("{} steps/s", rate(p.steps_per_second()))),
                unbatched.map_or("—".into(), |p| format!("{:.3}", p.commits_per_step)),
                dbos.map_or("—".into(), |(_, value)| format!("{} steps/s", rate(*value)))
            );
        }
        self.queue_section(&mut out);
        self.waits_section(&mut out);
        self.side_by_side(&mut out);
        if let Some(peer) = peer {
            let _ = writeln!(out, "\nDBOS concurrency: {}", peer.concurrent_method);
            for note in &peer.notes {
                let _ = writeln!(out, "- DBOS note: {note}");
            }
        }
        out
    }
}

impl Results {
    /// Workers and queues: latency, throughput per worker count, and where one PostgreSQL saturates.
    fn queue_section(&self, out: &mut String) {
        let queues = &self.queues;
        let dbos = self.dbos.as_ref().and_then(|peer| peer.queue.as_ref());
        out.push_str("\n### Workers and queues (PostgreSQL, `host worker` processes)\n\n");
        out.push_str("| what | stepbox | reference | ratio | target | |\n|---|---|---|---|---|---|\n");
        let notify = queues.latency_notify;
        let _ = writeln!(
            out,
            "| submit → the step's first line, worker woken by NOTIFY (median / p99 of {}, wall clock) | {:.1} ms / {:.1} ms | {} | {} | p50 ≤ 5 ms | {} |",
            notify.samples,
            notify.median,
            notify.p99,
            dbos.map_or(String::new(), |queue| format!(
                "DBOS queue {:.0} ms / {:.0} ms",
                queue.latency_ms.0, queue.latency_ms.1
            )),
            dbos.map_or(String::new(), |queue| format!("{:.0}×", queue.latency_ms.0 / notify.median.max(0.001))),
            met(notify.median <= TARGET_LATENCY_MS)
        );
        let poll = queues.latency_poll;
        let _ = writeln!(
            out,
            "| same, `--poll-only` (1 s poll, ±20 % jitter) | {:.0} ms / {:.0} ms | | | | |",
            poll.median, poll.p99
        );
        let in_process = queues.in_process.median.steps_per_second();
        for rounds in &queues.workers {
            let point = &rounds.median;
            let share = point.steps_per_second() / in_process;
            let target = if point.workers == 2 {
                format!("≥ 80 % of in-process | {}", met(share >= TARGET_TWO_WORKERS_SHARE))
            } else {
                " | ".into()
            };
            let _ = writeln!(
                out,
                "| {} worker process(es), {} workflows × {} no-op steps (first claim to last finish; {}) | {} steps/s, {:.2} commits and {:.2} rows written per step | in-process `Runner`, same workload (one untimed round, then the {}): {} steps/s | {:.0} % | {target} |",
                point.workers,
                point.workflows,
                point.steps / point.workflows.max(1),
                spread(rounds),
                rate(point.steps_per_second()),
                point.commits_per_step,
                point.rows_per_step,
                spread(&queues.in_process),
                rate(in_process),
                share * 100.0
            );
        }
        if let (Some(queue), Some(two)) =
            (dbos, queues.workers.iter().map(|rounds| &rounds.median).find(|point| point.workers == 2))
        {
            let ratio = two.steps_per_second() / queue.steps_per_second;
            let _ = writeln!(
                out,
                "| 2 worker processes against DBOS's queue, same workload | {} steps/s | DBOS queue {} steps/s | {ratio:.1}× | ≥ 30× DBOS | {} |",
                rate(two.steps_per_second()),
                rate(queue.steps_per_second),
                met(ratio >= TARGET_QUEUE_RATIO)
            );
        }
        if let Some(queue) = dbos {
            let _ = writeln!(
                out,
                "\nDBOS queue latency: {}\n\nDBOS queue throughput: {}",
                queue.latency_method, queue.throughput_method
            );
        }
        out.push_str(&self.saturation_model());
    }

    /// Where one PostgreSQL saturates, fitted to this run's figures.
    fn saturation_model(&self) -> String {
        let queues = &self.queues;
        let points = || queues.workers.iter().map(|rounds| &rounds.median);
        let Some(best) = points().max_by(|a, b| a.steps_per_second().total_cmp(&b.steps_per_second())) else {
            return String::new();
        };
        let one = points().find(|point| point.workers == 1).unwrap_or(best);
        let commits_per_step = best.commits_per_step;
        let rows_per_step = best.rows_per_step;
        let ceiling = queues.commit_capacity / commits_per_step.max(1e-9);
        let commits_now = best.steps_per_second() * commits_per_step;
        let feeds = ceiling / one.steps_per_second();
        format!(
            "\n**Saturation model.** A durable step through a worker costs PostgreSQL {commits_per_step:.2} commits and {rows_per_step:.2} row writes here (the attempt batch, with the workflow's claim, lease renewals and finish spread over its steps). This server commits at most {} single-row transactions per second from {} connections at once (measured in this run); at {commits_per_step:.2} commits per step that caps one PostgreSQL at about {} steps/s, whatever the number of workers — commits, not rows, bind first, since group commit folds many rows into each. The best figure above used {} commits/s ({:.0} % of that capacity); one worker process runs {} steps/s on this 2-core machine, where workers and PostgreSQL share the CPU, so the workers are the bottleneck here. On a dedicated server with workers on their own machines, one PostgreSQL like this one feeds about {feeds:.0} such workers before commits saturate; past that, longer steps (fewer commits per second per worker) or larger batches, not more workers, raise the ceiling.\n",
            rate(queues.commit_capacity),
            queues.commit_capacity_connections,
            rate(ceiling),
            rate(commits_now),
            commits_now / queues.commit_capacity * 100.0,
            rate(one.steps_per_second()),
        )
    }
}

/// "stepbox 3.1× Restate": how many times better stepbox did (less time, or more per second).
fn versus(better: f64, peer: &str) -> String {
    if !better.is_finite() || better <= 0.0 {
        return String::new();
    }
    let times = if better >= 10.0 {
        format!("{better:.0}")
    } else if better >= 1.0 {
        format!("{better:.1}")
    } else {
        format!("{better:.2}")
    };
    format!("stepbox {times}× {peer}")
}

/// A latency table's stepbox row: `label`, then p50, p90 and p99 in ms and the sample count.
fn stepbox_latency_row(out: &mut String, label: &str, latency: &Summary) {
    let _ = writeln!(
        out,
        "| {label} | {} | {} | {} | {} | |",
        ms(latency.median),
        ms(latency.p90),
        ms(latency.p99),
        latency.samples
    );
}

fn ms(value: f64) -> String {
    if value.is_nan() {
        "—".into()
    } else if value >= 100.0 {
        format!("{value:.0} ms")
    } else {
        format!("{value:.1} ms")
    }
}

/// The short name a ratio uses: the engine, and Temporal's untuned run says so.
fn short(peer: &Peer) -> String {
    if peer.variant.as_deref() == Some(TEMPORAL_DEFAULT_VARIANT) {
        format!("{} with its defaults", peer.engine.name())
    } else {
        peer.engine.name().to_string()
    }
}

/// One row per peer of a side-by-side table: `row` renders a measured
/// peer's workload (`None`: it did not run that workload, no row); a peer
/// that was not measured gets its reason, once per table.
fn peer_rows(out: &mut String, peers: &[Peer], columns: usize, row: impl Fn(&Peer, &Workloads) -> Option<String>) {
    for peer in peers {
        match &peer.measured {
            Ok(run) => {
                if let Some(cells) = row(peer, &run.workloads) {
                    let quick = if run.quick { " (--quick)" } else { "" };
                    let _ = writeln!(out, "| {}{quick} | {cells} |", peer.label());
                }
            }
            Err(reason) => {
                let reason = reason.replace('|', "\\|");
                let _ = writeln!(out, "| {} | not measured: {reason} |{}", peer.label(), " |".repeat(columns - 1));
            }
        }
    }
}

impl Results {
    /// Workflows that wait: messages, timers and schedule ticks through a worker (issue 24).
    fn waits_section(&self, out: &mut String) {
        let waits = &self.waits;
        out.push_str("\n### Workflows that wait (PostgreSQL, one `host worker` woken by NOTIFY)\n\n");
        out.push_str(
            "Milliseconds between journal timestamps (the journal keeps milliseconds, so each figure is ±1 ms); \
             the `waiter` workflow of `guest-steps/rust/waiter`. **Parked**: the worker runs with `--park-after 0s`, \
             so a wait gives its slot back (status `waiting`, lease released) and the workflow is claimed and \
             replayed to its wait when woken. **Held**: `--park-after 1h`, the workflow waits in its slot.\n\n",
        );
        out.push_str("| what | p50 | p90 | p99 | samples | target | |\n|---|---|---|---|---|---|---|\n");
        let row = |out: &mut String, what: &str, summary: Summary, target: &str| {
            let _ = writeln!(
                out,
                "| {what} | {} | {} | {} | {} | {target} |",
                ms(summary.median),
                ms(summary.p90),
                ms(summary.p99),
                summary.samples
            );
        };
        let message = |out: &mut String, how: &str, wake: &MessageWake| {
            let target = format!("p50 ≤ 10 ms | {}", met(wake.received.median <= TARGET_MESSAGE_MS));
            row(
                out,
                &format!(
                    "message → running again, {how}: `approval` waiting in `recv`, then `host send`'s call \
                     (`Client::send`); `messages.received_at` − `sent_at`, the workflow's next journal write, one \
                     message at a time"
                ),
                wake.received,
                &target,
            );
            row(out, "same, to the workflow's end (`workflows.finished_at` − `sent_at`)", wake.finished, " |");
        };
        message(out, "parked", &waits.message_parked);
        message(out, "held in its slot", &waits.message_held);
        let timer = |out: &mut String, how: &str, late: Summary| {
            row(
                out,
                &format!(
                    "timer due → running, {how}: {} workflows `nap(ms)` submitted together, sleeping {:.1} to {:.1} s; \
                     lateness = the sleep's `finished_at` − (`started_at` + ms)",
                    waits.sleepers,
                    SLEEP_MS as f64 / 1000.0,
                    (SLEEP_MS + 10 * waits.sleepers.saturating_sub(1) as u64) as f64 / 1000.0
                ),
                late,
                " |",
            );
        };
        timer(out, "parked", waits.timer_parked);
        timer(out, "held in its slot", waits.timer_held);
        row(
            out,
            "schedule tick → first operation: `host schedule set` every second (`* * * * * *`) of `nap(0)`; the \
             tick's workflow's first operation `started_at` − `workflows.scheduled_at`, the first tick left out",
            waits.tick_first_operation,
            " |",
        );
        row(out, "same, tick → claimed (`workflows.started_at` − `scheduled_at`)", waits.tick_claimed, " |");
    }

    /// The workloads of bench/PEERS.md on stepbox and on each peer, one table per workload.
    fn side_by_side(&self, out: &mut String) {
        let side = &self.side;
        let peers = &side.peers;
        out.push_str("\n### Side by side: stepbox, DBOS, Restate and Temporal on the same workloads\n\n");
        out.push_str(
            "The workloads of `bench/PEERS.md`, each engine with its own store on this machine, in this run, one \
             after the other (stepbox first). \"stepbox N× X\": stepbox took N times less time than X, or did N \
             times more per second (below 1: X did better). Temporal runs tuned (`--sqlite-wal`, \
             `history.transferProcessorMaxPollRPS=1000`): with the dev server's default of 20 polls a second of \
             its one shard's transfer queue, every sequential step waits up to 50 ms for the limiter, which \
             measures the limiter rather than the engine; its shipped defaults are run too, on the sequential \
             workload.\n",
        );
        if peers.is_empty() {
            out.push_str("\nNo peer ran (`--no-peer`).\n");
        }

        let seed = side.seed;
        out.push_str(
            "\n#### Seed: a step failing all 3 attempts, retried 1 s then 2 s later, the exhaustion caught \
             (submit → result)\n\n| engine | seconds (median) | runs | |\n|---|---|---|---|\n",
        );
        let _ = writeln!(
            out,
            "| stepbox (`retry-demo` calling `flaky(3)`, default policy, in process, PostgreSQL journal) | {:.2} s | {} | |",
            seed.seconds.median, seed.seconds.samples
        );
        let _ = writeln!(
            out,
            "| stepbox, the provision example itself (its step also sleeps 1 s in each attempt) | {:.2} s | 1 | |",
            seed.provision_seconds
        );
        peer_rows(out, peers, 3, |peer, workloads| {
            let run = workloads.seed?;
            Some(format!(
                "{:.2} s | {} | {}",
                run.seconds,
                run.runs,
                versus(run.seconds / seed.seconds.median, &short(peer))
            ))
        });
        out.push_str("| the retry delays alone (1 s + 2 s) | 3.00 s | | |\n");

        let sequential = per_step(&self.sequential_postgres);
        let steps = self.sequential_postgres.first().map_or(0, |run| run.steps);
        out.push_str(
            "\n#### Sequential: one workflow of no-op durable steps, each result durable before the next \
             step\n\n| engine | run ÷ steps | median step | steps | stepbox against its run ÷ steps / its median step |\n\
             |---|---|---|---|---|\n",
        );
        let _ = writeln!(
            out,
            "| stepbox (`Runner::run` on one thread, PostgreSQL journal; median of {} runs) | {} | (not timed per step) | {steps} | |",
            self.sequential_postgres.len(),
            us(sequential.median)
        );
        peer_rows(out, peers, 4, |peer, workloads| {
            let run = workloads.sequential?;
            let name = short(peer);
            Some(format!(
                "{} | {} | {} | {} / {}",
                us(run.us_per_step),
                us(run.step_median_us),
                run.steps,
                versus(run.us_per_step / sequential.median, &name),
                versus(run.step_median_us / sequential.median, &name)
            ))
        });
        let _ = writeln!(
            out,
            "| floor: one single-row commit, PostgreSQL (stepbox's and DBOS's store) | {} | | | |",
            us(self.floor_postgres.median)
        );
        let _ = writeln!(
            out,
            "| floor: stepbox's own step transaction (fence, call row, attempt row) from a plain loop | {} | | | |",
            us(self.floor_step.median)
        );
        let _ = writeln!(
            out,
            "| floor: one single-row commit, SQLite file, WAL, synchronous = FULL (Temporal's store, tuned) | {} | | | |",
            us(self.floor_sqlite.median)
        );

        out.push_str(
            "\n#### Concurrent: workflows of 100 no-op steps started at once\n\n\
             | engine | steps/s | workflows × steps | |\n|---|---|---|---|\n",
        );
        let stepbox_concurrent = at(&self.curve, 100);
        match stepbox_concurrent {
            Some(point) => {
                let _ = writeln!(
                    out,
                    "| stepbox (one process, PostgreSQL journal, group commit) | {} | 100 × {CURVE} | |",
                    rate(point.steps_per_second())
                );
            }
            None => out.push_str("| stepbox | not run at 100 workflows | | |\n"),
        }
        peer_rows(out, peers, 3, |peer, workloads| {
            let run = workloads.concurrent?;
            let ratio = stepbox_concurrent.map_or(f64::NAN, |point| point.steps_per_second() / run.steps_per_second);
            Some(format!(
                "{} | {} × {} | {}",
                rate(run.steps_per_second),
                run.workflows,
                run.steps_per_workflow,
                versus(ratio, &short(peer))
            ))
        });
        if let Some(floor) = self.floors.iter().find(|floor| floor.workflows == 100) {
            let _ = writeln!(
                out,
                "| floor: the same rows in the journal's tables by a plain loop, batches of {} steps | {} | 100 × {CURVE} | |",
                floor.batch,
                rate(floor.steps_per_second)
            );
        }

        let start = self.queues.latency_notify;
        out.push_str(
            "\n#### Submit → start: a one-step workflow submitted, then awaited before the next\n\n\
             | engine | p50 | p90 | p99 | samples | |\n|---|---|---|---|---|---|\n",
        );
        stepbox_latency_row(
            out,
            "stepbox (`Client::submit` to a `host worker` woken by NOTIFY; wall clock before the submit to the wall clock the step read, µs resolution)",
            &start,
        );
        let latency_cells = |peer: &Peer, latency: crate::peer::Latency, stepbox: f64| {
            format!(
                "{} | {} | {} | {} | {}",
                ms(latency.p50_ms),
                latency.p90_ms.map_or("—".into(), ms),
                latency.p99_ms.map_or("—".into(), ms),
                latency.samples,
                versus(latency.p50_ms / stepbox.max(0.001), &short(peer))
            )
        };
        peer_rows(out, peers, 5, |peer, workloads| Some(latency_cells(peer, workloads.submit_to_start?, start.median)));
        if let Some(queue) = self.dbos.as_ref().and_then(|dbos| dbos.queue.as_ref()) {
            let _ = writeln!(
                out,
                "| DBOS through its queue (its `queue` workload: enqueue → first step, default 1 s polling) | {} | | {} | | {} |",
                ms(queue.latency_ms.0),
                ms(queue.latency_ms.1),
                versus(queue.latency_ms.0 / start.median.max(0.001), "DBOS's queue")
            );
        }
        let _ = writeln!(
            out,
            "| floor: one single-row commit, PostgreSQL | {} | | | | |",
            ms(self.floor_postgres.median / 1000.0)
        );

        let result = side.submit_to_result;
        out.push_str(
            "\n#### Submit → result: a workflow of 3 no-op steps, one at a time\n\n\
             | engine | p50 | p90 | p99 | samples | |\n|---|---|---|---|---|---|\n",
        );
        stepbox_latency_row(
            out,
            "stepbox (`Client::submit` to a `host worker` woken by NOTIFY; the client waits with `operate::result`, woken by the finish's NOTIFY, as `host result --wait` and the API's `?wait=` do)",
            &result.client,
        );
        stepbox_latency_row(
            out,
            "stepbox, from the journal (`finished_at` − `created_at`: the result durable)",
            &result.journal,
        );
        peer_rows(out, peers, 5, |peer, workloads| {
            Some(latency_cells(peer, workloads.submit_to_result?, result.client.median))
        });
        let phases = result.phases;
        let floor_ms = self.floor_postgres.median / 1000.0;
        // On its path: the submit, the claim, one batch per step (its start rides with its finish), the finish.
        let commits = 6.0;
        let _ = writeln!(
            out,
            "\nWhere stepbox's time goes, from the journal's timestamps (means over the samples, each \
             timestamp kept to the millisecond): submit → claimed (the submit's commit, the NOTIFY, the \
             worker's claim) {}; claimed → first attempt started (the runner, the workflow's instance, its \
             first call) {}; first attempt started → last attempt finished (3 steps, each one commit) {}; \
             last attempt → workflow finished (its finish's commit) {}. On the path are {commits:.0} commits: \
             (commits + 1) × the single-row commit ({}) = {}, against the journal's {} median.",
            ms(phases.to_claim),
            ms(phases.to_first_step),
            ms(phases.steps),
            ms(phases.to_finish),
            ms(floor_ms),
            ms((commits + 1.0) * floor_ms),
            ms(result.journal.median),
        );
        let alone = result.alone;
        let path = alone.submit.median + alone.claim.median + 3.0 * self.floor_step.median + alone.finish.median;
        let _ = writeln!(
            out,
            "\nThe same commits alone, each through the journal's API with nothing else running (medians of \
             {}): the submit {}, the claim {}, a step's own transaction {} (three of them), the \
             finish {}; together {}, {:.1}× the six single-row commits: each writes a workflow's row \
             (its recorded options and deployment, with the indexes the listings and the claim read) or a \
             step's call and attempt rows, not one narrow row. The rest of the journal's median is the \
             NOTIFY's wake-up, the runner and the instances, and waiting for the CPU.",
            alone.submit.samples,
            us(alone.submit.median),
            us(alone.claim.median),
            us(self.floor_step.median),
            us(alone.finish.median),
            ms(path / 1000.0),
            path / (commits * self.floor_postgres.median),
        );

        let burst = side.burst;
        out.push_str(
            "\n#### Burst: 3-step workflows submitted at once, first submit → last result\n\n\
             | engine | workflows/s | workflows | |\n|---|---|---|---|\n",
        );
        let _ = writeln!(
            out,
            "| stepbox (32 tasks calling `Client::submit`, one `host worker` of the default concurrency, 100; the last `finished_at`) | {} | {} | |",
            rate(burst.workflows_per_second()),
            burst.workflows
        );
        peer_rows(out, peers, 3, |peer, workloads| {
            let run = workloads.burst?;
            Some(format!(
                "{} | {} | {}",
                rate(run.workflows_per_second),
                run.workflows,
                versus(burst.workflows_per_second() / run.workflows_per_second, &short(peer))
            ))
        });
        let _ = writeln!(
            out,
            "\nstepbox's burst cost, per workflow: {:.2} commits (concurrent submits from one process share a \
             statement, as concurrent finishes do; steps share group commits), CPU {} µs in the worker, {} µs in \
             the submitting client, {} µs on the whole machine (PostgreSQL included; the machine's {} cores \
             allow {} workflows/s at that cost).",
            burst.commits_per_workflow,
            rate(burst.cpu.worker),
            rate(burst.cpu.client),
            rate(burst.cpu.machine),
            self.cores,
            rate(self.cores as f64 * 1e6 / burst.cpu.machine.max(1.0)),
        );

        out.push_str(
            "\n#### Fan-out: one workflow running 100 no-op steps concurrently, submit → result\n\n\
             | engine | ms (median) | steps/s | runs |\n|---|---|---|---|\n",
        );
        let fanout = &self.side.fanout;
        let _ = writeln!(
            out,
            "| stepbox (in process: `Runner::run` of a workflow that calls `start-call` 100 times, then `await-all`) | {} | {} | {} |",
            ms(fanout.median_ms),
            rate(fanout.steps_per_second()),
            fanout.runs_ms.len()
        );
        peer_rows(out, peers, 3, |peer, workloads| {
            let run = workloads.fanout?;
            Some(format!(
                "{} | {} | {} ({})",
                ms(run.ms),
                rate(run.steps_per_second),
                run.runs,
                versus(run.ms / fanout.median_ms, &short(peer))
            ))
        });
        let wide = &self.fan_wide;
        let _ = writeln!(
            out,
            "\n#### The same {} no-op steps three ways (stepbox, PostgreSQL, in process), and DBOS fanning them out\n\n\
             | how | steps/s | commits/step | |\n|---|---|---|---|\n\
             | fanned out from one workflow (`start-call` × {0}, `await-all`; max-concurrent-calls {}) | {} | {:.3} | |\n\
             | one after another in one workflow | {} | {:.3} | fan-out {:.1}× |\n\
             | {0} workflows of one step, all at once | {} | {:.3} | fan-out {:.1}× |",
            wide.fan_out.steps,
            crate::workloads::FAN_OUT_LIMIT,
            rate(wide.fan_out.steps_per_second()),
            wide.fan_out.commits_per_step,
            rate(wide.sequential.steps_per_second()),
            wide.sequential.commits_per_step,
            wide.fan_out.steps_per_second() / wide.sequential.steps_per_second(),
            rate(wide.workflows.steps_per_second()),
            wide.workflows.commits_per_step,
            wide.fan_out.steps_per_second() / wide.workflows.steps_per_second(),
        );
        for peer in peers {
            let Ok(run) = &peer.measured else { continue };
            let Some(theirs) = run.workloads.fanout_wide else { continue };
            let _ = writeln!(
                out,
                "| {}: fanned out from one workflow, submit → result (median of {}) | {} | | stepbox fan-out {:.1}× |",
                peer.label(),
                theirs.runs,
                rate(theirs.steps_per_second),
                wide.fan_out.steps_per_second() / theirs.steps_per_second,
            );
        }

        self.peer_notes(out);
    }

    /// Each peer's version, store, setup and notes, and exactly what each workload timed.
    fn peer_notes(&self, out: &mut String) {
        if self.side.peers.is_empty() {
            return;
        }
        out.push_str("\n#### The peers: versions, stores and notes\n\n");
        for peer in &self.side.peers {
            match &peer.measured {
                Err(reason) => {
                    let _ = writeln!(out, "- **{}**: not measured: {reason}", peer.label());
                }
                Ok(run) => {
                    let _ = writeln!(out, "- **{}**. Store: {}.", peer.label(), run.store);
                    for detail in &run.details {
                        let _ = writeln!(out, "  - {detail}");
                    }
                    for note in &run.notes {
                        let _ = writeln!(out, "  - {note}");
                    }
                    if !run.workloads.methods.is_empty() {
                        let _ = writeln!(out, "  - What each workload timed:");
                        for (workload, method) in &run.workloads.methods {
                            let _ = writeln!(out, "    - `{workload}`: {method}");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_grouped_by_thousands() {
        assert_eq!(rate(12345.6), "12,346");
        assert_eq!(rate(999.0), "999");
        assert_eq!(rate(1_000_000.0), "1,000,000");
    }

    #[test]
    fn ratios_say_who_did_better() {
        assert_eq!(versus(3.12, "Restate"), "stepbox 3.1× Restate");
        assert_eq!(versus(0.456, "Restate"), "stepbox 0.46× Restate");
        assert_eq!(versus(76.3, "DBOS"), "stepbox 76× DBOS");
        assert_eq!(versus(f64::NAN, "DBOS"), "");
    }

    #[test]
    fn durations_pick_a_readable_unit() {
        assert_eq!(us(25.04), "25.0 µs");
        assert_eq!(us(1530.0), "1.53 ms");
        assert_eq!(us(40_000.0), "40.0 ms");
    }
}
