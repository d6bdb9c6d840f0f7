//! `cargo bench -p stepbox-bench --bench stepbox -- [--quick] [--no-peer]`: every benchmark of
//! BENCHMARKS.md (see `bench/run`, which builds the host first).

use anyhow::Context as _;
use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` starts bench targets in their package's folder; paths are the workspace's.
    let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    std::env::set_current_dir(workspace).with_context(|| format!("cannot enter the workspace {workspace}"))?;
    stepbox_bench::run(stepbox_bench::Args::parse()).await
}
