//! What epoch interruption costs per attempt: the same step components run
//! through the sandbox on an engine with interruption on and one with it off,
//! side by side, medians and p99 over many attempts.
//!
//! cargo build --release --target wasm32-wasip2 -p flaky -p hostile
//! cargo run --release -p stepbox --example epoch_cost -- \
//!     target/wasm32-wasip2/release/flaky.wasm target/wasm32-wasip2/release/hostile.wasm

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use stepbox::config::RetryPolicy;
use stepbox::config::{AttemptLimits, Grants};
use stepbox::wasm::{self, ComponentLoader, Interrupt, Sandbox, StepIdentity};
use wasmtime::component::Val;

const ATTEMPTS: usize = 2000;

/// One measured case: a component, an exported interface function and its arguments.
struct Case {
    label: &'static str,
    component: PathBuf,
    interface: &'static str,
    function: &'static str,
    params: Vec<Val>,
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn measure(case: &Case, epoch_interruption: bool) -> anyhow::Result<(Duration, Duration)> {
    let engine = wasm::new_engine_with(epoch_interruption).map_err(|e| anyhow!("{e:#}"))?;
    let component = ComponentLoader::new(&engine, None).load(&case.component)?.component;
    let linker = wasm::step_linker(&engine).map_err(|e| anyhow!("{e:#}"))?;
    let pre = linker.instantiate_pre(&component).map_err(|e| anyhow!("{e:#}"))?;
    let interface = component.get_export_index(None, case.interface).context("interface not exported")?;
    let export = component.get_export_index(Some(&interface), case.function).context("function not exported")?;
    let sandbox = Sandbox::new(&engine);
    let grants = Grants::default();
    let interrupt = Interrupt::default();
    let mut samples = Vec::with_capacity(ATTEMPTS);
    for attempt in 0..ATTEMPTS + ATTEMPTS / 10 {
        let identity = StepIdentity {
            workflow_id: "bench".into(),
            step: case.function.into(),
            attempt: 1,
            policy: RetryPolicy::default(),
            limits: AttemptLimits::default(),
        };
        let started = Instant::now();
        let report = sandbox.call_step(&pre, &export, identity, &grants, &case.params, &interrupt).await;
        let elapsed = started.elapsed();
        report.result.map_err(|failure| anyhow!("{}: {}", case.label, failure.message))?;
        if attempt >= ATTEMPTS / 10 {
            samples.push(elapsed);
        }
    }
    samples.sort();
    Ok((percentile(&samples, 0.5), percentile(&samples, 0.99)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut paths = std::env::args().skip(1).map(PathBuf::from);
    let (Some(flaky), Some(hostile)) = (paths.next(), paths.next()) else {
        return Err(anyhow!("usage: epoch_cost FLAKY.wasm HOSTILE.wasm (built for wasm32-wasip2)"));
    };
    let cases = [
        Case {
            label: "no-op step (flaky(0))",
            component: flaky,
            interface: "guests:flaky/steps",
            function: "flaky",
            params: vec![Val::U32(0)],
        },
        Case {
            label: "100 nested calls (recurse(100))",
            component: hostile.clone(),
            interface: "guests:hostile/steps",
            function: "recurse",
            params: vec![Val::U64(100)],
        },
        Case {
            label: "64 KiB string (huge-result)",
            component: hostile,
            interface: "guests:hostile/steps",
            function: "huge-result",
            params: vec![Val::U64(64 << 10)],
        },
    ];
    println!(
        "per attempt (new store + instantiate + call + drop), {ATTEMPTS} attempts after {} warm-up:",
        ATTEMPTS / 10
    );
    println!(
        "{:<32} {:>14} {:>14} {:>14} {:>14} {:>8}",
        "step", "on median", "off median", "on p99", "off p99", "on/off"
    );
    for case in &cases {
        // Interleave on/off runs so machine noise hits both alike; keep the better of two.
        let (on_first, on_p99) = measure(case, true).await?;
        let (off_first, off_p99) = measure(case, false).await?;
        let (on_second, _) = measure(case, true).await?;
        let (off_second, _) = measure(case, false).await?;
        let (on_median, off_median) = (on_first.min(on_second), off_first.min(off_second));
        let ratio = on_median.as_secs_f64() / off_median.as_secs_f64();
        println!(
            "{:<32} {:>14?} {:>14?} {:>14?} {:>14?} {:>8.3}",
            case.label, on_median, off_median, on_p99, off_p99, ratio
        );
    }
    Ok(())
}
