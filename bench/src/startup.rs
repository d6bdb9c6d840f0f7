//! (e) How long `host run` takes as a whole process for one step call, with
//! the compile cache empty (cold: Cranelift compiles every component) and
//! warm (cached: components are loaded from the cache).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};

use crate::stats::{Summary, summarize};
use crate::workloads::micros;

/// One step component and the workflow that calls it once.
pub struct StartCase {
    pub language: &'static str,
    pub workflow: PathBuf,
    pub step: PathBuf,
}

/// Cold and cached start of one case, in µs of wall time per process.
pub struct StartTimes {
    pub cold: Summary,
    pub cached: Summary,
}

/// Runs `host run` `cold_runs` times with a fresh cache each, then
/// `cached_runs` times with a warm one.
pub fn measure(host: &Path, case: &StartCase, cold_runs: usize, cached_runs: usize) -> anyhow::Result<StartTimes> {
    let scratch = tempfile::tempdir()?;
    let run = |cache: &Path, journal: &Path| -> anyhow::Result<f64> {
        let started = Instant::now();
        let output = Command::new(host)
            .arg("run")
            .arg(&case.workflow)
            .arg("0")
            .arg("--step")
            .arg(&case.step)
            .args(["--invoke", "retry-then-succeed", "-q", "--cache-dir"])
            .arg(cache)
            .arg("--journal")
            .arg(journal)
            .output()
            .with_context(|| format!("cannot run {}", host.display()))?;
        let elapsed = micros(started.elapsed());
        if !output.status.success() {
            bail!("host run ({}) failed: {}", case.language, String::from_utf8_lossy(&output.stderr));
        }
        Ok(elapsed)
    };
    let journal = scratch.path().join("start.db");
    let mut cold = Vec::with_capacity(cold_runs);
    for n in 0..cold_runs {
        cold.push(run(&scratch.path().join(format!("cold-{n}")), &journal)?);
    }
    let cache = scratch.path().join("warm");
    run(&cache, &journal)?;
    let mut cached = Vec::with_capacity(cached_runs);
    for _ in 0..cached_runs {
        cached.push(run(&cache, &journal)?);
    }
    Ok(StartTimes { cold: summarize(cold), cached: summarize(cached) })
}
