//! Bad input: one clear `error:` paragraph, exit code 2, never a panic, and
//! nothing written to the journal.

use std::fs;
use std::path::Path;

use crate::support::{Scratch, artifacts, host_in};

/// Runs with a SQLite journal in the scratch dir and checks that the refusal
/// left no journal behind; returns the error line.
fn refused(scratch: &Scratch, args: &[&str]) -> String {
    let run = scratch.run(args);
    let error = run.refused().to_string();
    assert!(!Path::new(&scratch.journal()).exists(), "bad input must not create a journal");
    error
}

fn assert_mentions(error: &str, needles: &[&str]) {
    for needle in needles {
        assert!(error.contains(needle), "`{needle}` missing from: {error}");
    }
}

#[test]
fn a_missing_file_is_named() {
    let scratch = Scratch::new();
    let error = refused(&scratch, &["nope.wasm"]);
    assert_mentions(&error, &["cannot read nope.wasm", "No such file"]);
}

#[test]
fn garbage_is_not_a_webassembly_file() {
    let scratch = Scratch::new();
    let path = scratch.path().join("garbage.wasm");
    fs::write(&path, b"#!/bin/sh\necho not wasm\n").unwrap();
    let error = refused(&scratch, &[path.to_str().unwrap()]);
    assert_mentions(&error, &["is not a WebAssembly file"]);
}

#[test]
fn a_core_module_is_told_to_become_a_component() {
    let scratch = Scratch::new();
    let path = scratch.path().join("core.wasm");
    fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
    let error = refused(&scratch, &[path.to_str().unwrap()]);
    assert_mentions(&error, &["is a core WebAssembly module, not a component", "wasm32-wasip2"]);
}

#[test]
fn a_truncated_component_is_invalid() {
    let scratch = Scratch::new();
    let bytes = fs::read(artifacts::FLAKY).unwrap();
    let path = scratch.path().join("truncated.wasm");
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let error = refused(&scratch, &[path.to_str().unwrap()]);
    assert_mentions(&error, &["is not a valid component"]);
}

#[test]
fn an_import_nothing_exports_suggests_step() {
    let scratch = Scratch::new();
    let error = refused(&scratch, &[artifacts::RETRY_DEMO]);
    assert_mentions(&error, &["imports `guests:flaky/steps`", "--step FILE"]);
    let error = refused(&scratch, &[artifacts::RETRY_DEMO, "--step", artifacts::PROVISION]);
    assert_mentions(&error, &["imports `guests:flaky/steps`", "the --step components given were:", "provision.wasm"]);
}

#[test]
fn a_convention_violation_names_the_function_and_the_missing_case() {
    let scratch = Scratch::new();
    let error = refused(&scratch, &[artifacts::BROKEN_CONVENTION]);
    assert_mentions(
        &error,
        &[
            "step function `guests:broken-convention/steps.greet`",
            "its error type is `string`, not a variant",
            "retries-exhausted(exhausted)",
        ],
    );
}

#[test]
fn entry_functions_must_be_unambiguous_and_known() {
    let scratch = Scratch::new();
    let error = refused(&scratch, &[artifacts::RETRY_DEMO, "--step", artifacts::FLAKY]);
    assert_mentions(
        &error,
        &["exports several functions", "`retry-then-succeed`", "`reject`", "`crash`", "--invoke NAME"],
    );
    let error = refused(&scratch, &[artifacts::RETRY_DEMO, "--step", artifacts::FLAKY, "--invoke", "nope"]);
    assert_mentions(&error, &["exports no function named `nope`", "`retry-then-succeed`"]);
}

#[test]
fn malformed_wave_arguments_name_the_parameter() {
    let scratch = Scratch::new();
    let base = [artifacts::RETRY_DEMO, "--step", artifacts::FLAKY, "--invoke", "retry-then-succeed"];
    let error = refused(&scratch, &[&base[..], &["abc"]].concat());
    assert_mentions(
        &error,
        &["argument 1 of `retry-then-succeed` (fail-times: u32) is not a valid WAVE value", "\"abc\""],
    );
    let error = refused(&scratch, &[&base[..], &["-1"]].concat());
    assert_mentions(&error, &["fail-times: u32", "\"-1\""]);
    let error = refused(&scratch, &base);
    assert_mentions(&error, &["takes 1 argument(s) (fail-times: u32), but 0 were given"]);
}

#[test]
fn bad_policy_values_and_unknown_steps_are_refused() {
    let scratch = Scratch::new();
    let base = [artifacts::RETRY_DEMO, "--step", artifacts::FLAKY, "--invoke", "reject", r#""x""#];
    let error = refused(&scratch, &[&base[..], &["--max-attempts", "0"]].concat());
    assert_mentions(&error, &["invalid retry policy", "max-attempts must be at least 1"]);
    let error = refused(&scratch, &[&base[..], &["--interval", "soon"]].concat());
    assert_mentions(&error, &["--interval", "invalid duration \"soon\""]);
    let error = refused(&scratch, &[&base[..], &["--max-attempts", "flakey=2"]].concat());
    assert_mentions(&error, &["step `flakey`", "guests:flaky/steps.flaky"]);
}

#[test]
fn a_broken_manifest_is_named_with_its_line() {
    let scratch = Scratch::new();
    let manifest = scratch.path().join("bad.toml");
    fs::write(&manifest, "[retry]\nmax-atempts = 3\n").unwrap();
    let run = scratch.run(&[artifacts::PROVISION, "--config", manifest.to_str().unwrap()]);
    run.refused();
    assert!(run.stderr.contains("bad.toml is not valid") && run.stderr.contains("max-atempts"), "{}", run.stderr);
}

#[test]
fn an_unwritable_sqlite_path_says_what_to_do() {
    let scratch = Scratch::new();
    let run = host_in(scratch.path(), &[artifacts::PROVISION, "--journal", "/dev/null/journal.db"]);
    let error = run.refused();
    assert_mentions(error, &["cannot open the journal /dev/null/journal.db", "writable", "--journal"]);
}

#[test]
fn an_unreachable_postgres_says_how_to_start_one() {
    let scratch = Scratch::new();
    let run = host_in(
        scratch.path(),
        &[artifacts::PROVISION, "--journal", "postgres://postgres:secret@127.0.0.1:1/postgres"],
    );
    let error = run.refused();
    assert_mentions(
        error,
        &[
            "cannot open the journal postgres://postgres:***@127.0.0.1:1/postgres",
            "connection refused",
            "Start PostgreSQL",
        ],
    );
    assert!(!error.contains("secret"), "the password is never printed: {error}");
}

#[test]
fn a_misconfigured_postgres_database_is_reported() {
    let scratch = Scratch::new();
    let url = crate::support::postgres_admin_url();
    let (base, _) = url.rsplit_once('/').unwrap();
    let run =
        host_in(scratch.path(), &[artifacts::PROVISION, "--journal", &format!("{base}/stepbox_no_such_database")]);
    let error = run.refused();
    assert_mentions(error, &["cannot open the journal", "stepbox_no_such_database", "does not exist", "createdb"]);
}

#[test]
fn an_unknown_journal_scheme_is_named() {
    let scratch = Scratch::new();
    let run = host_in(scratch.path(), &[artifacts::PROVISION, "--journal", "mysql://user:pw@127.0.0.1/db"]);
    let error = run.refused();
    assert_mentions(error, &["`mysql://` is not supported", "postgres://", "user:***@"]);
}

#[test]
fn a_workflow_that_cannot_link_leaves_no_journal_row() {
    let scratch = Scratch::new();
    // The hostile component imports wasi:http, which workflows never get.
    let run = scratch.run(&[artifacts::HOSTILE, "--invoke", "spin", "--id", "nolink"]);
    let error = run.refused().to_string();
    assert_mentions(&error, &["imports `wasi:http/", "a workflow gets no grants", "--step"]);
    let list = crate::support::host_command(scratch.path(), &["list", "--journal", &scratch.journal()]);
    assert!(!list.stdout.contains("nolink"), "no workflow row was written:\n{}", list.stdout);
}

#[test]
fn leases_and_limits_must_be_workable() {
    let scratch = Scratch::new();
    let run = scratch.run(&[artifacts::PROVISION, "--lease", "1ms"]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("the lease must be between 1s and 24h"), "{}", run.stderr);
    let error = refused(&scratch, &[artifacts::PROVISION, "--timeout", "0s"]);
    assert_mentions(&error, &["limits no attempt can run under", "below 10ms"]);
}

/// A journal that cannot be used is reported at once with its real cause.
fn refused_quickly(scratch: &Scratch, args: &[&str]) -> String {
    let started = std::time::Instant::now();
    let run = crate::support::host_command(scratch.path(), args);
    let elapsed = started.elapsed();
    let error = run.refused().to_string();
    // Well under the 5 s connect and busy timeouts and the 60 s outage budget, with room for a loaded host.
    assert!(elapsed < std::time::Duration::from_secs(4), "refused after {elapsed:?}: {error}");
    error
}

#[test]
fn read_only_commands_never_create_a_journal() {
    let scratch = Scratch::new();
    let missing = scratch.path().join("missing.db");
    let missing = missing.to_str().unwrap();
    for command in [&["list"][..], &["show", "x"], &["result", "x"], &["cancel", "x"]] {
        let args = [command, &["--journal", missing]].concat();
        let error = refused_quickly(&scratch, &args);
        assert_mentions(&error, &["there is no journal file at", "missing.db", "--journal"]);
        assert!(!Path::new(missing).exists(), "{command:?} created the journal");
    }
}

#[test]
fn a_file_that_is_not_a_database_is_named() {
    let scratch = Scratch::new();
    let garbage = scratch.path().join("garbage.db");
    fs::write(&garbage, "this is a text file, not SQLite, and it is long enough to have a header........").unwrap();
    let garbage = garbage.to_str().unwrap();
    let error = refused_quickly(&scratch, &["list", "--journal", garbage]);
    assert_mentions(&error, &["garbage.db is not a SQLite database"]);
    let error = refused_quickly(&scratch, &["run", artifacts::PROVISION, "--journal", garbage]);
    assert_mentions(&error, &["garbage.db is not a SQLite database"]);
}

#[test]
fn postgres_refusals_say_what_is_wrong_at_once() {
    let scratch = Scratch::new();
    let url = crate::support::postgres_admin_url();
    let (base, _) = url.rsplit_once('/').unwrap();
    let error = refused_quickly(&scratch, &["list", "--journal", &format!("{base}/stepbox_no_such_database")]);
    assert_mentions(&error, &["database \"stepbox_no_such_database\" does not exist", "createdb"]);
    let error = refused_quickly(&scratch, &["list", "--journal", "postgres://nosuchrole@127.0.0.1:5432/postgres"]);
    assert_mentions(&error, &["refused user \"nosuchrole\"", "user name and password"]);
    let error = refused_quickly(
        &scratch,
        &["list", "--journal", "postgres://127.0.0.1:1/db?user=u&password=hunter2&sslmode=disable"],
    );
    assert_mentions(&error, &["connection refused", "password=***"]);
    assert!(!error.contains("hunter2"), "the password is never printed: {error}");
    // A database that exists but holds no journal yet.
    let error = refused_quickly(&scratch, &["list", "--journal", &format!("{url}?schema=stepbox_never_used")]);
    assert_mentions(&error, &["holds no stepbox journal"]);
}
