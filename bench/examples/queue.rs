//! The side-by-side workloads of one `host worker`, alone, on a fresh `stepbox_bench` database of
//! the PostgreSQL at `STEPBOX_BENCH_POSTGRES` (default 127.0.0.1:5432): a loop to change one thing
//! at a time against. Needs `target/release/host` (`cargo build --release -p stepbox`).
//!
//! - `cargo run --release -p stepbox-bench --example queue -- burst 1000 5`: five bursts of 1,000
//!   3-step workflows submitted at once from 32 tasks, each with its commits and CPU per workflow;
//! - `cargo run --release -p stepbox-bench --example queue -- result 200`: 200 3-step workflows
//!   submitted one at a time, submit → result and where the journal's time went;
//! - `cargo run --release -p stepbox-bench --example queue -- start 200`: 200 one-step workflows
//!   submitted one at a time, submit → the step's first line;
//! - `cargo run --release -p stepbox-bench --example queue -- baseline 1000 10 3`: three rounds of
//!   1,000 workflows × 10 no-op steps through the in-process `Runner`, then through one worker.

use std::path::Path;

use anyhow::{Context as _, bail};
use stepbox_bench::QueueProbe;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let workload = args.next().unwrap_or_else(|| "burst".into());
    let mut number = |default: usize| -> anyhow::Result<usize> {
        args.next().map_or(Ok(default), |count| count.parse().context("a count is not a number"))
    };
    let postgres =
        std::env::var("STEPBOX_BENCH_POSTGRES").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432".into());
    match workload.as_str() {
        "burst" => {
            let (workflows, rounds) = (number(1000)?, number(5)?);
            let probe = QueueProbe::new(&postgres, Path::new("target/release/host")).await?;
            for _ in 0..rounds {
                let burst = probe.burst(workflows).await?;
                println!(
                    "{:.0} workflows/s; per workflow: {:.2} commits, CPU {:.0} µs worker, {:.0} µs client, {:.0} µs \
                     machine",
                    burst.workflows_per_second(),
                    burst.commits_per_workflow,
                    burst.cpu.worker,
                    burst.cpu.client,
                    burst.cpu.machine
                );
            }
        }
        "result" => {
            let samples = number(200)?;
            let probe = QueueProbe::new(&postgres, Path::new("target/release/host")).await?;
            let result = probe.submit_to_result(samples).await?;
            let phases = result.phases;
            println!(
                "submit → result p50 {:.2} ms at the client, {:.1} ms in the journal (mean {:.2}); phases (means): \
                 to claim {:.2}, to first step {:.2}, steps {:.2}, to finish {:.2} ms",
                result.client.median,
                result.journal.median,
                phases.to_claim + phases.to_first_step + phases.steps + phases.to_finish,
                phases.to_claim,
                phases.to_first_step,
                phases.steps,
                phases.to_finish
            );
            let alone = result.alone;
            println!(
                "alone (medians): submit {:.0} µs, claim {:.0} µs, finish {:.0} µs",
                alone.submit.median, alone.claim.median, alone.finish.median
            );
        }
        "start" => {
            let samples = number(200)?;
            let probe = QueueProbe::new(&postgres, Path::new("target/release/host")).await?;
            let start = probe.submit_to_start(samples).await?;
            println!(
                "submit → the step's first line p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms (wall clock)",
                start.median, start.p90, start.p99
            );
        }
        "baseline" => {
            let (workflows, steps, rounds) = (number(1000)?, number(10)?, number(3)?);
            let probe = QueueProbe::new(&postgres, Path::new("target/release/host")).await?;
            for _ in 0..rounds {
                let (in_process, worker) = probe.baseline(workflows, u32::try_from(steps)?).await?;
                println!(
                    "{workflows} × {steps}: in-process {in_process:.0} steps/s, one worker {worker:.0} steps/s ({:.0} %)",
                    100.0 * worker / in_process
                );
            }
        }
        other => bail!("no such workload {other:?}: burst, result, start or baseline"),
    }
    Ok(())
}
