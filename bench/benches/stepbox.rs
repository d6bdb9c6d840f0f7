//! `cargo bench -p stepbox-bench --bench stepbox -- [--quick] [--no-peer]`: every benchmark of
//! BENCHMARKS.md (see `bench/run`, which builds the host first).

use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    stepbox_bench::run(stepbox_bench::Args::parse()).await
}
