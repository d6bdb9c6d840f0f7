//! Retry behaviour through the host: success after a failure, permanent
//! errors, traps, exhaustion, step-context, and policy precedence.

use std::fs;

use crate::support::{Run, Scratch, artifacts, assert_gaps, rows};

/// `host run retry-demo.wasm --step flaky.wasm --invoke ENTRY --id ID ARGS...`
fn demo(scratch: &Scratch, id: &str, entry: &str, extra: &[&str]) -> Run {
    let mut args = vec![artifacts::RETRY_DEMO, "--step", artifacts::FLAKY, "--id", id, "--invoke", entry];
    args.extend(extra);
    scratch.run(&args)
}

#[tokio::test]
async fn a_step_that_fails_once_succeeds_on_attempt_two() {
    let scratch = Scratch::new();
    let run = demo(&scratch, "twice", "retry-then-succeed", &["1", "--interval", "50ms"]);
    assert_eq!(run.success(), "ok(2)", "the step reports the attempt it succeeded on, from step-context");
    assert_eq!(run.count("Step flaky being automatically retried (attempt 1 of 3) in 50ms"), 1);
    assert_eq!(run.count("(flaky) flaky: attempt"), 2);

    let rows = rows(&scratch.journal(), "twice").await;
    assert_eq!(rows.workflow, Some(("succeeded".into(), Some("ok(2)".into()))));
    let call = &rows.calls[0];
    assert_eq!((call.status.as_str(), call.attempts, call.output.as_deref()), ("succeeded", 2, Some("ok(2)")));
    assert_eq!(call.input, "(1)");
    let outcomes: Vec<_> = rows.attempts.iter().map(|a| (a.attempt, a.outcome.as_deref(), a.kind.as_deref())).collect();
    assert_eq!(outcomes, [(1, Some("failed"), Some("returned-error")), (2, Some("ok"), None)]);
    assert_eq!(rows.attempts[0].message.as_deref(), Some(r#"failed("transient failure on attempt 1")"#));
    assert_gaps(&rows.attempts, &[50], 400);
}

#[tokio::test]
async fn a_permanent_error_is_returned_after_one_attempt() {
    let scratch = Scratch::new();
    let run = demo(&scratch, "perm", "reject", &[r#""card declined""#, "--interval", "1ms"]);
    assert_eq!(run.success(), r#"err(permanent("card declined"))"#);
    assert_eq!(run.count("being automatically retried"), 0);

    let rows = rows(&scratch.journal(), "perm").await;
    assert_eq!(rows.attempts.len(), 1);
    assert_eq!(rows.attempts[0].outcome.as_deref(), Some("rejected"));
    assert_eq!(rows.calls[0].status, "rejected");
    assert_eq!(rows.calls[0].output.as_deref(), Some(r#"err(permanent("card declined"))"#));
}

#[tokio::test]
async fn a_trap_is_retried_and_reported_with_the_panic_and_backtrace() {
    let scratch = Scratch::new();
    let run = demo(&scratch, "trap", "crash", &[r#""disk on fire""#, "--interval", "5ms", "--max-attempts", "2"]);
    let output = run.success();
    assert!(output.starts_with(r#"err(retries-exhausted({step: "guests:flaky/steps.crash", attempts: 2, failures: [{attempt: 1, kind: trapped"#), "{output}");
    assert_eq!(run.count("Step crash being automatically retried (attempt 1 of 2)"), 1);

    let rows = rows(&scratch.journal(), "trap").await;
    assert_eq!(rows.attempts.len(), 2);
    for attempt in &rows.attempts {
        assert_eq!(attempt.kind.as_deref(), Some("trapped"));
        let message = attempt.message.as_deref().unwrap_or_default();
        assert!(message.contains("wasm `unreachable` instruction executed"), "{message}");
        assert!(message.contains("panicked at") && message.contains("disk on fire"), "guest stderr kept: {message}");
        assert!(
            message.contains("wasm backtrace") && message.contains("flaky.wasm!"),
            "guest backtrace kept: {message}"
        );
    }
    assert_eq!(rows.calls[0].status, "exhausted");
}

#[tokio::test]
async fn exhaustion_hands_every_failure_to_the_workflow_on_the_backoff_schedule() {
    let scratch = Scratch::new();
    let run = demo(&scratch, "exhaust", "retry-then-succeed", &["9", "--interval", "40ms", "--backoff-rate", "3"]);
    assert_eq!(
        run.success().replace(|c: char| c.is_ascii_digit(), "#"),
        r#"err(retries-exhausted({step: "guests:flaky/steps.flaky", attempts: #, failures: [{attempt: #, kind: returned-error, message: "failed(\"transient failure on attempt #\")", elapsed-ms: #}, {attempt: #, kind: returned-error, message: "failed(\"transient failure on attempt #\")", elapsed-ms: #}, {attempt: #, kind: returned-error, message: "failed(\"transient failure on attempt #\")", elapsed-ms: #}]}))"#
    );
    assert!(run.output().contains("attempts: 3,"));
    assert_eq!(run.count("[   ERROR] (host) Step flaky failed all 3 attempts"), 1);
    assert_eq!(run.count("(workflow) flaky exhausted 3 attempts; falling back"), 1);

    let rows = rows(&scratch.journal(), "exhaust").await;
    let messages: Vec<_> = rows.attempts.iter().map(|a| a.message.clone().unwrap_or_default()).collect();
    assert_eq!(messages, (1..=3).map(|n| format!(r#"failed("transient failure on attempt {n}")"#)).collect::<Vec<_>>());
    assert_gaps(&rows.attempts, &[40, 120], 400);
}

#[tokio::test]
async fn policy_precedence_is_cli_then_manifest_then_defaults() {
    let scratch = Scratch::new();
    // A copy of the workflow with a manifest beside it.
    let workflow = scratch.path().join("demo.wasm");
    fs::copy(artifacts::RETRY_DEMO, &workflow).unwrap();
    fs::write(
        scratch.path().join("demo.toml"),
        "[retry]\nmax-attempts = 5\ninterval = \"1ms\"\n\n[steps.flaky.retry]\nbackoff-rate = 1.0\n",
    )
    .unwrap();
    let workflow = workflow.to_str().unwrap();
    let run = |id: &str, extra: &[&str]| {
        let mut args = vec![workflow, "--step", artifacts::FLAKY, "--invoke", "retry-then-succeed", "99", "--id", id];
        args.extend(extra);
        scratch.run(&args)
    };
    let attempts_of = |run: &Run| -> usize { run.count("(flaky) flaky: attempt") };

    // Manifest over defaults: 5 attempts, 1 ms apart (rate 1.0 for this step).
    let manifest = run("m", &[]);
    assert!(manifest.success().contains("attempts: 5,"));
    assert_eq!(attempts_of(&manifest), 5);
    let journal = rows(&scratch.journal(), "m").await;
    let delays: Vec<_> = journal.attempts.iter().map(|a| a.next_delay_ms).collect();
    assert_eq!(delays, [Some(1), Some(1), Some(1), Some(1), None]);

    // The command line over the manifest, for all steps and then for one step.
    assert_eq!(attempts_of(&run("cli-all", &["--max-attempts", "2"])), 2);
    assert_eq!(attempts_of(&run("cli-step", &["--max-attempts", "2", "--max-attempts", "flaky=4"])), 4);

    // --config replaces the manifest beside the component.
    let other = scratch.path().join("other.toml");
    fs::write(&other, "[steps.\"guests:flaky/steps.flaky\".retry]\nmax-attempts = 1\n").unwrap();
    let config = run("config", &["--config", other.to_str().unwrap(), "--interval", "1ms"]);
    assert_eq!(attempts_of(&config), 1);
    assert!(config.success().contains("attempts: 1,"));
}

#[tokio::test]
async fn a_finished_workflow_id_returns_its_recorded_output_without_running() {
    let scratch = Scratch::new();
    let first = demo(&scratch, "once", "retry-then-succeed", &["1", "--interval", "1ms"]);
    assert_eq!(first.success(), "ok(2)");
    let second = demo(&scratch, "once", "retry-then-succeed", &["1", "--interval", "1ms"]);
    assert_eq!(second.success(), "ok(2)");
    assert_eq!(second.count("flaky: attempt"), 0, "nothing ran the second time:\n{}", second.stderr);
    assert_eq!(second.count("had already finished"), 1);
    assert_eq!(rows(&scratch.journal(), "once").await.attempts.len(), 2);
}

#[tokio::test]
async fn a_finished_id_is_not_reused_for_another_workflow() {
    let scratch = Scratch::new();
    assert_eq!(demo(&scratch, "taken", "reject", &["\"x\""]).success(), r#"err(permanent("x"))"#);
    let other = scratch.run(&[artifacts::PROVISION, "--id", "taken"]);
    let error = other.refused();
    assert!(error.contains("workflow taken was started with component digest"), "{error}");
}
