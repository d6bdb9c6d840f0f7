//! The host as a Unix process: SIGINT and SIGTERM stop a workflow cleanly
//! (its attempt journaled, its lease released, a resume command printed, an
//! immediate resume working), a closed stdout or stderr never kills a run,
//! and a run's reported duration leaves out compiling.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Child, Scratch, artifacts, eventually, host_command, rows, shared_cache};

/// Starts a workflow whose step naps `ms`, waits until its first attempt runs, signals it, and checks how it stopped.
async fn stopped_by(signal: &str, expected_code: i32) {
    let scratch = Scratch::new();
    let journal = scratch.journal();
    let id = format!("sig-{signal}");
    let args = [
        "run",
        artifacts::HOSTILE_CALLER,
        "--step",
        artifacts::HOSTILE,
        "--invoke",
        "nap",
        "8000",
        "--id",
        &id,
        "--journal",
        &journal,
        "--interval",
        "100ms",
    ];
    let mut child = Child::spawn(scratch.path(), &args);
    let running =
        eventually(Duration::from_secs(20), || async { !rows(&journal, &id).await.attempts.is_empty() }).await;
    assert!(running, "the attempt never started:\n{}", child.stderr());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signalled = Instant::now();
    child.signal(signal);
    let code = child.wait_for_exit(Duration::from_secs(10));
    let stopped_in = signalled.elapsed();
    let stderr = child.stderr();
    assert_eq!(code, Some(expected_code), "{stderr}");
    assert!(stopped_in < Duration::from_secs(4), "stopped in {stopped_in:?}, not after the 8 s nap");
    assert!(stderr.contains(&format!("host resume {id}")), "the resume command is printed:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let stopped = rows(&journal, &id).await;
    assert_eq!(stopped.workflow.as_ref().map(|w| w.0.as_str()), Some("running"), "it stays resumable");
    let attempt = &stopped.attempts[0];
    assert_eq!((attempt.outcome.as_deref(), attempt.kind.as_deref()), (Some("failed"), Some("interrupted")));
    assert!(attempt.finished_at.is_some(), "a stop by signal knows when the attempt ended: {attempt:?}");
    assert!(attempt.message.as_deref().unwrap_or_default().contains("asked to stop"), "{attempt:?}");

    // The lease was released: an immediate resume runs attempt 2 (no lease wait).
    let resumed = host_command(scratch.path(), &["resume", &id, "--journal", &journal]);
    assert_eq!(resumed.success(), "ok(8000)");
    let finished = rows(&journal, &id).await;
    let numbers: Vec<_> = finished.attempts.iter().map(|a| (a.attempt, a.outcome.clone())).collect();
    assert_eq!(numbers, [(1, Some("failed".into())), (2, Some("ok".into()))]);
}

#[tokio::test]
async fn sigint_interrupts_the_attempt_releases_the_lease_and_exits_130() {
    stopped_by("INT", 130).await;
}

#[tokio::test]
async fn sigterm_interrupts_the_attempt_releases_the_lease_and_exits_143() {
    stopped_by("TERM", 143).await;
}

/// `host run … | head -1`, with the reader gone before the output is printed.
#[tokio::test]
async fn a_closed_stdout_or_stderr_never_kills_the_run() {
    let scratch = Scratch::new();
    let journal = scratch.journal();
    for (id, closed) in [("closed-stdout", "stdout"), ("closed-stderr", "stderr")] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_host"));
        command
            .current_dir(scratch.path())
            .env("STEPBOX_CACHE_DIR", shared_cache())
            .args(["run", artifacts::RETRY_DEMO, "--step", artifacts::FLAKY, "--invoke", "retry-then-succeed", "1"])
            .args(["--interval", "10ms", "--id", id, "--journal", &journal])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("host starts");
        // Close the read end at once: every write to it fails with EPIPE.
        match closed {
            "stdout" => drop(child.stdout.take()),
            _ => drop(child.stderr.take()),
        }
        let status = child.wait().expect("host exits");
        assert_eq!(status.code(), Some(0), "{closed} closed: the run still succeeds");
        let journal_rows = rows(&journal, id).await;
        assert_eq!(journal_rows.workflow, Some(("succeeded".into(), Some("ok(2)".into()))), "{closed}");
    }
}

/// Compiling a Python step takes seconds; the workflow's duration is its run alone.
#[tokio::test]
async fn the_reported_duration_leaves_out_compiling() {
    let scratch = Scratch::new();
    let started = Instant::now();
    let run = host_command(
        scratch.path(),
        &[
            "run",
            artifacts::RETRY_DEMO,
            "--step",
            artifacts::FLAKY_PY.path(),
            "--invoke",
            "reject",
            "\"x\"",
            "--no-cache",
            "--journal",
            &scratch.journal(),
        ],
    );
    let whole = started.elapsed();
    assert_eq!(run.success(), r#"err(permanent("x"))"#);
    let line = run.stderr.lines().find(|line| line.contains(" finished in ")).expect("a finished line");
    let reported = debug_duration(line.rsplit(" finished in ").next().unwrap_or_default().trim());
    assert!(whole > Duration::from_secs(2), "compiling a Python component takes seconds ({whole:?})");
    assert!(reported < whole / 2, "reported {reported:?} of a {whole:?} process: compiling is not counted ({line})");
}

/// Reads a duration as `{:?}` prints it: `6.0s`, `12.3ms`, `45µs`.
fn debug_duration(text: &str) -> Duration {
    for (suffix, scale) in [("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9), ("s", 1.0)] {
        if let Some(number) = text.strip_suffix(suffix) {
            return Duration::from_secs_f64(number.parse::<f64>().expect("a number") * scale);
        }
    }
    panic!("not a duration: {text}")
}
