//! `cargo run --release -p stepbox-bench --example attempts -- python 3000`: one language's
//! `flaky(0)` attempts in a steady loop, journal off, as the bench's (e) runs them — a loop long
//! enough for `perf record -g` or `perf stat` to see where a language's per-attempt time goes.

use std::path::Path;

use anyhow::{Context as _, bail};
use stepbox_bench::BareStep;
use stepbox_test_artifacts as artifacts;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let language = args.next().unwrap_or_else(|| "python".into());
    let attempts: usize = args.next().map_or(Ok(3000), |count| count.parse()).context("the count is not a number")?;
    let component = match language.as_str() {
        "rust" => artifacts::FLAKY,
        "python" => artifacts::FLAKY_PY.path(),
        "js" => artifacts::FLAKY_JS.path(),
        other => bail!("no such language {other:?}: rust, python or js"),
    };
    let step = BareStep::flaky(Path::new(component))?;
    let summary = step.without_journal(attempts).await?;
    println!("{language}: {:.0} µs median, {:.0} µs p99 over {attempts} attempts", summary.median, summary.p99);
    Ok(())
}
