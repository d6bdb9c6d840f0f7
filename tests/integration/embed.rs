//! The embedding example (`host/examples/embed.rs`), built by `cargo test`
//! with the other examples, run here: stepbox inside a Rust program, two
//! workflows with misbehaving steps beside a normal one in one process.

use std::path::PathBuf;
use std::process::Command;

use crate::support::{Scratch, artifacts};

/// The example binary `cargo test` built next to this test binary.
fn example(name: &str) -> PathBuf {
    let test_binary = std::env::current_exe().expect("the test binary's path");
    let profile = test_binary.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    profile.join("examples").join(name)
}

#[test]
fn the_embedding_example_runs_hostile_steps_beside_a_normal_one() {
    let scratch = Scratch::new();
    let output = Command::new(example("embed"))
        .args([artifacts::HOSTILE_CALLER, artifacts::HOSTILE, artifacts::RETRY_DEMO, artifacts::FLAKY])
        .current_dir(scratch.path())
        .env("XDG_CACHE_HOME", crate::support::shared_cache())
        .output()
        .expect("the example runs (cargo test builds it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the example failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("normal: ok(2)"), "{stdout}");
    assert!(stdout.lines().any(|line| line.starts_with("spin: ") && line.contains("timed-out")), "{stdout}");
    assert!(stdout.lines().any(|line| line.starts_with("hog-memory: ") && line.contains("out-of-memory")), "{stdout}");
    assert!(stdout.contains("normal: 2 attempts journaled"), "{stdout}");
}
