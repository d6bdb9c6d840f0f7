//! The seed scenario (DBOS exp14) end to end on the embedded SQLite journal.

use crate::support::{Scratch, artifacts, assert_gaps, rows};

/// The real DBOS schedule: three attempts, 1 s then 2 s apart, exhaustion
/// caught by the workflow, output `true`, every attempt in the journal.
#[tokio::test]
async fn seed_scenario_with_the_real_schedule() {
    let scratch = Scratch::new();
    let run = scratch.run(&[artifacts::PROVISION, "--id", "seed-1"]);
    assert_eq!(run.success(), "true");

    // The seed's sequence, in order.
    let expected = [
        "(workflow) Workflow: Starting",
        "(provision) Step: Starting provision_step 1 of 3",
        "Step provision being automatically retried (attempt 1 of 3) in 1s",
        "(provision) Step: Starting provision_step 2 of 3",
        "Step provision being automatically retried (attempt 2 of 3) in 2s",
        "(provision) Step: Starting provision_step 3 of 3",
        "[   ERROR] (host) Step provision failed all 3 attempts",
        "[   ERROR] (workflow) Workflow: Caught max retries exceeded exception (3 attempts",
        "(workflow) Workflow: Finishing",
    ];
    let mut position = 0;
    for needle in expected {
        let found = run.stderr[position..].find(needle).unwrap_or_else(|| {
            panic!("`{needle}` missing or out of order in:\n{}", run.stderr);
        });
        position += found + needle.len();
    }
    assert_eq!(run.count("being automatically retried"), 2, "no retry warning after the last attempt");
    assert_eq!(
        run.count("Simulated failure in provision_step"),
        2 + 1 + 3,
        "each error shown: 2 warnings, 1 error, 3 in the workflow's summary"
    );

    let rows = rows(&scratch.journal(), "seed-1").await;
    assert_eq!(rows.workflow, Some(("succeeded".into(), Some("true".into()))));
    assert_eq!(rows.calls.len(), 1);
    let call = &rows.calls[0];
    assert_eq!(
        (call.step.as_str(), call.status.as_str(), call.attempts),
        ("example:provision/steps.provision", "exhausted", 3)
    );
    assert_eq!(call.input, r#"("us-east-1")"#);
    let output = call.output.as_deref().expect("the exhaustion is journaled");
    assert!(
        output.starts_with(r#"err(retries-exhausted({step: "example:provision/steps.provision", attempts: 3, failures: [{attempt: 1, kind: returned-error, message: "failed(\"Simulated failure"#),
        "{output}"
    );
    assert_eq!(rows.attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(), [1, 2, 3]);
    for attempt in &rows.attempts {
        assert_eq!(attempt.outcome.as_deref(), Some("failed"));
        assert_eq!(attempt.kind.as_deref(), Some("returned-error"));
        let elapsed = attempt.finished_at.expect("finished") - attempt.started_at;
        assert!((1000..3000).contains(&elapsed), "each attempt sleeps 1 s in the guest, took {elapsed} ms");
    }
    assert_eq!(rows.attempts[2].next_delay_ms, None, "no wait after the last attempt");
    assert_gaps(&rows.attempts, &[1000, 2000], 500);
}

/// `--quiet` prints the output and nothing else.
#[tokio::test]
async fn quiet_prints_only_the_output() {
    let scratch = Scratch::new();
    let run = scratch.run(&[
        artifacts::RETRY_DEMO,
        "--step",
        artifacts::FLAKY,
        "--invoke",
        "retry-then-succeed",
        "1",
        "--interval",
        "1ms",
        "--quiet",
    ]);
    assert_eq!(run.code, Some(0));
    assert_eq!(run.stderr, "");
    assert_eq!(run.stdout, "ok(2)\n");
}
