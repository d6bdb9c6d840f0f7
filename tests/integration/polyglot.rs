//! Steps written in other languages get the same retries, step-context,
//! logging and exhaustion as Rust ones: the Rust `retry-demo` workflow calls
//! the Python, JavaScript and C implementations of `guests:flaky/steps`.

use crate::support::{Run, Scratch, artifacts, rows};

fn demo(scratch: &Scratch, step: &str, id: &str, entry: &str, extra: &[&str]) -> Run {
    let mut args = vec![artifacts::RETRY_DEMO, "--step", step, "--id", id, "--invoke", entry, "--interval", "5ms"];
    args.extend(extra);
    scratch.run(&args)
}

/// The same checks for any language's `guests:flaky` component; `language` is what its log lines say.
async fn retries_report_and_exhaust_like_rust(step: &str, language: &str, trap_text: &str) {
    let scratch = Scratch::new();

    let twice = demo(&scratch, step, "py-twice", "retry-then-succeed", &["1"]);
    assert_eq!(twice.success(), "ok(2)", "the step read its attempt number from step-context");
    assert_eq!(twice.count(&format!("(flaky) flaky ({language}): attempt 1")), 1);
    assert_eq!(twice.count(&format!("(flaky) flaky ({language}): attempt 2")), 1);
    let journal = rows(&scratch.journal(), "py-twice").await;
    let outcomes: Vec<_> = journal.attempts.iter().map(|a| a.outcome.clone().unwrap_or_default()).collect();
    assert_eq!(outcomes, ["failed", "ok"]);
    assert_eq!(journal.attempts[0].message.as_deref(), Some(r#"failed("transient failure on attempt 1")"#));

    let exhausted = demo(&scratch, step, "py-out", "retry-then-succeed", &["5"]);
    let output = exhausted.success();
    assert!(output.starts_with(r#"err(retries-exhausted({step: "guests:flaky/steps.flaky", attempts: 3,"#), "{output}");
    assert!(output.contains(r#"message: "failed(\"transient failure on attempt 3\")""#), "{output}");

    let rejected = demo(&scratch, step, "py-perm", "reject", &["\"card declined\""]);
    assert_eq!(rejected.success(), r#"err(permanent("card declined"))"#);
    assert_eq!(rows(&scratch.journal(), "py-perm").await.attempts.len(), 1);

    let crashed = demo(&scratch, step, "py-crash", "crash", &["\"disk on fire\"", "--max-attempts", "2"]);
    assert!(crashed.success().starts_with(r#"err(retries-exhausted({step: "guests:flaky/steps.crash", attempts: 2"#));
    let journal = rows(&scratch.journal(), "py-crash").await;
    for attempt in &journal.attempts {
        assert_eq!(attempt.kind.as_deref(), Some("trapped"));
        let message = attempt.message.as_deref().unwrap_or_default();
        assert!(message.contains(trap_text), "the {language} error is kept: {message}");
    }
}

#[tokio::test]
async fn python_steps_behave_like_rust_ones() {
    retries_report_and_exhaust_like_rust(artifacts::FLAKY_PY, "python", "RuntimeError: disk on fire").await;
}

#[tokio::test]
async fn javascript_steps_behave_like_rust_ones() {
    retries_report_and_exhaust_like_rust(artifacts::FLAKY_JS, "javascript", "Error: disk on fire").await;
}

#[tokio::test]
async fn c_steps_behave_like_rust_ones() {
    retries_report_and_exhaust_like_rust(artifacts::FLAKY_C, "c", "crash: disk on fire").await;
}
