//! stepbox embedded in a Rust program: one `Stepbox` (journal, engine,
//! executor), a `Runner` per workflow component, and runs side by side in
//! one process — two workflows whose steps misbehave (a busy loop, a memory
//! bomb) beside a normal one, which finishes as if they were not there.
//!
//! cargo build --release --target wasm32-wasip2 -p hostile -p hostile-caller -p flaky -p retry-demo
//! cargo run -p stepbox --example embed -- \
//!     target/wasm32-wasip2/release/hostile_caller.wasm target/wasm32-wasip2/release/hostile.wasm \
//!     target/wasm32-wasip2/release/retry_demo.wasm target/wasm32-wasip2/release/flaky.wasm

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use stepbox::Stepbox;
use stepbox::config::{Setting, SettingsLayer};
use stepbox::run::{RunRequest, RunSpec};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let paths: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    let [caller, hostile, demo, flaky] = paths.as_slice() else {
        bail!("usage: embed HOSTILE_CALLER.wasm HOSTILE.wasm RETRY_DEMO.wasm FLAKY.wasm");
    };
    let dir = tempfile::tempdir()?;
    let journal = dir.path().join("journal.db");
    let stepbox = Stepbox::open(&journal.display().to_string()).await?;

    // Misbehaving steps get a short leash: 16 MiB and 1 s per attempt, two attempts.
    let leash =
        SettingsLayer::from_flags([(Setting::Timeout, "1s"), (Setting::Memory, "16MiB"), (Setting::MaxAttempts, "2")])
            .map_err(anyhow::Error::msg)?;
    let hostile = |entry: &str| RunSpec {
        workflow: caller.clone(),
        steps: vec![hostile.clone()],
        invoke: Some(entry.into()),
        cli_settings: leash.clone(),
        ..RunSpec::default()
    };
    let spin = stepbox.runner(&hostile("spin"))?;
    let hog = stepbox.runner(&hostile("hog-memory"))?;
    let normal = stepbox.runner(&RunSpec {
        workflow: demo.clone(),
        steps: vec![flaky.clone()],
        invoke: Some("retry-then-succeed".into()),
        cli_settings: SettingsLayer::from_flags([(Setting::Interval, "10ms")]).map_err(anyhow::Error::msg)?,
        ..RunSpec::default()
    })?;

    let run = |id: &str, arguments: &[&str]| RunRequest {
        id: Some(id.into()),
        arguments: arguments.iter().map(ToString::to_string).collect(),
    };
    let (spun, hogged, normal) =
        tokio::join!(spin.run(run("spin", &[])), hog.run(run("hog", &[])), normal.run(run("normal", &["1"])));
    for (name, outcome) in [("spin", &spun), ("hog-memory", &hogged), ("normal", &normal)] {
        match outcome {
            Ok(outcome) => println!("{name}: {}", outcome.output),
            Err(error) => println!("{name}: {error}"),
        }
    }
    let spun = spun.context("the spinning workflow")?.output;
    let hogged = hogged.context("the hogging workflow")?.output;
    let normal = normal.context("the normal workflow")?.output;
    if !spun.contains("timed-out") || !hogged.contains("out-of-memory") || normal != "ok(2)" {
        bail!("the steps were not contained: spin {spun}, hog {hogged}, normal {normal}");
    }
    // Everything is in the journal, as for `host show`.
    let history = stepbox.journal().history("normal").await?.context("the normal workflow's journal")?;
    println!("normal: {} attempts journaled", history.calls.iter().map(|call| call.attempts.len()).sum::<usize>());
    Ok(())
}
