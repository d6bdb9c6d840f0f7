//! The README's shell blocks: each one is run by CI (the seed and the test
//! command, which `.ci/run` takes from their markers), run here verbatim, or
//! marked as an illustration — so none can silently break.

use std::process::Command;

use crate::support::{Scratch, artifacts, host_in};

const README: &str = include_str!("../../README.md");

/// Blocks `.ci/run` runs, blocks this file runs, and blocks only shown.
const CI_RUN: [&str; 2] = ["seed", "tests"];
const RUN_HERE: [&str; 2] = ["journal-psql", "journal-sqlite"];
const ILLUSTRATION: &str = "illustration";

/// Every ```sh block of the README with the `<!-- readme:NAME -->` marker on
/// the line before it (`None` when there is none).
fn shell_blocks() -> Vec<(Option<String>, String)> {
    let lines: Vec<&str> = README.lines().collect();
    let mut blocks = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        if line.trim() != "```sh" {
            continue;
        }
        let marker = index
            .checked_sub(1)
            .and_then(|before| lines[before].trim().strip_prefix("<!-- readme:"))
            .and_then(|rest| rest.strip_suffix(" -->"))
            .map(str::to_string);
        let body: Vec<&str> = lines[index + 1..].iter().take_while(|line| line.trim() != "```").copied().collect();
        blocks.push((marker, body.join("\n")));
    }
    blocks
}

/// The block marked `name`, verbatim.
fn block(name: &str) -> String {
    let found: Vec<String> = shell_blocks()
        .into_iter()
        .filter(|(marker, _)| marker.as_deref() == Some(name))
        .map(|(_, body)| body)
        .collect();
    assert_eq!(found.len(), 1, "one README block marked readme:{name}");
    found[0].clone()
}

/// Runs a README block with bash in `dir`, `host` on the PATH.
fn run_block(dir: &std::path::Path, name: &str) -> String {
    let host_dir = std::path::Path::new(env!("CARGO_BIN_EXE_host")).parent().expect("host has a folder");
    let path = format!("{}:{}", host_dir.display(), std::env::var("PATH").unwrap_or_default());
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &block(name)])
        .current_dir(dir)
        .env("PATH", path)
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "README block readme:{name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn every_shell_block_is_run_or_marked_as_an_illustration() {
    let blocks = shell_blocks();
    assert!(blocks.len() >= 5, "the README's shell blocks were found: {blocks:?}");
    for (marker, body) in blocks {
        let known = marker
            .as_deref()
            .is_some_and(|name| CI_RUN.contains(&name) || RUN_HERE.contains(&name) || name == ILLUSTRATION);
        assert!(
            known,
            "this README block is neither run (readme:seed, readme:tests, {RUN_HERE:?}) nor marked \
             <!-- readme:illustration -->:\n{body}"
        );
    }
    for name in CI_RUN.iter().chain(&RUN_HERE) {
        assert!(!block(name).trim().is_empty(), "readme:{name} is empty");
    }
}

#[test]
fn the_sqlite_journal_query_runs_as_shown() {
    let scratch = Scratch::new();
    // The README's query reads `stepbox.db` in the current folder: the default journal.
    let run = host_in(scratch.path(), &[artifacts::PIPELINE, "3", "10", "--id", "readme-sqlite", "--interval", "10ms"]);
    run.success();
    let table = run_block(scratch.path(), "journal-sqlite");
    assert!(table.lines().next().is_some_and(|header| header.contains("backoff_ms")), "{table}");
    assert_eq!(table.matches("readme-sqlite").count(), 4, "3 calls, one retried:\n{table}");
    assert!(table.contains("returned-error") && table.contains("item 3 is flaky"), "{table}");
}

#[test]
fn the_postgres_journal_query_runs_as_shown() {
    let scratch = Scratch::new();
    // The README's query reads the default schema of the server the README names.
    let id = format!("readme-{}", std::process::id());
    let journal = "postgres://postgres@127.0.0.1:5432/postgres";
    let run = host_in(
        scratch.path(),
        &[artifacts::PIPELINE, "3", "10", "--id", &id, "--interval", "10ms", "--journal", journal],
    );
    run.success();
    let table = run_block(scratch.path(), "journal-psql");
    assert!(table.contains("backoff") && table.contains("executor"), "{table}");
    assert!(table.contains(&id), "the newest attempts include this run's:\n{table}");
    let _ = Command::new(env!("CARGO_BIN_EXE_host")).args(["delete", &id, "--journal", journal]).output();
}

/// The README's Rust block is the `Stepbox` doc example, which `cargo test`
/// compiles: the embedding shown is one that builds.
#[test]
fn the_rust_embedding_shown_is_the_compiled_doc_example() {
    let shown: Vec<&str> = README
        .split("## Embed in Rust")
        .nth(1)
        .and_then(|section| section.split("```rust\n").nth(1))
        .and_then(|rest| rest.split("\n```").next())
        .expect("the README has a ```rust block")
        .lines()
        .collect();
    let source = include_str!("../../host/src/embed.rs");
    let example: Vec<&str> = source
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("///"))
        .map(|line| line.strip_prefix(' ').unwrap_or(line))
        .skip_while(|line| !line.starts_with("```no_run"))
        .skip(1)
        .take_while(|line| !line.starts_with("```"))
        .filter(|line| !line.starts_with('#'))
        .collect();
    assert!(example.len() > 3, "the Stepbox doc example was found: {example:?}");
    assert_eq!(shown, example, "README's ```rust block and Stepbox's doc example differ");
}
