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
    // Each attempt's trap is shown once: in the retry warning, then in the exhaustion error.
    assert_eq!(crashed.count("wasm backtrace"), 2, "{}", crashed.stderr);
    if language == "javascript" {
        assert_eq!(
            crashed.count("the JavaScript step threw `Error: disk on fire`, which is not a case of `StepError`"),
            2
        );
    }
    let journal = rows(&scratch.journal(), "py-crash").await;
    for attempt in &journal.attempts {
        assert_eq!(attempt.kind.as_deref(), Some("trapped"));
        let message = attempt.message.as_deref().unwrap_or_default();
        assert!(message.contains(trap_text), "the {language} error is kept: {message}");
    }
}

#[tokio::test]
async fn python_steps_behave_like_rust_ones() {
    retries_report_and_exhaust_like_rust(artifacts::FLAKY_PY.path(), "python", "RuntimeError: disk on fire").await;
}

#[tokio::test]
async fn javascript_steps_behave_like_rust_ones() {
    retries_report_and_exhaust_like_rust(artifacts::FLAKY_JS.path(), "javascript", "Error: disk on fire").await;
}

#[tokio::test]
async fn c_steps_behave_like_rust_ones() {
    retries_report_and_exhaust_like_rust(artifacts::FLAKY_C.path(), "c", "crash: disk on fire").await;
}

/// 64-bit FNV-1a, what the C step computes.
fn fnv1a(data: &str) -> u64 {
    data.bytes()
        .fold(14_695_981_039_346_656_037, |digest, byte| (digest ^ u64::from(byte)).wrapping_mul(1_099_511_628_211))
}

/// The polyglot example: a Rust workflow, a Python check, a JavaScript API
/// client that exhausts its retries (the workflow falls back) and a C digest.
async fn polyglot_example(journal: &str) {
    let scratch = Scratch::new();
    let args = [
        artifacts::POLYGLOT,
        "\"order-42\"",
        "--step",
        artifacts::CHECK_PY.path(),
        "--step",
        artifacts::API_JS.path(),
        "--step",
        artifacts::HASH_C.path(),
        "--id",
        "polyglot",
        "--interval",
        "5ms",
        "--journal",
        journal,
    ];
    let run = crate::support::host_in(scratch.path(), &args);
    let expected = format!("\"order-42: valid, 999 cents (list price), digest {:016x}\"", fnv1a("order-42"));
    assert_eq!(run.success(), expected);
    assert_eq!(run.count("(check) check (python): order-42 is valid"), 1);
    assert_eq!(run.count("(quote) quote (javascript): asking the pricing service"), 3);
    assert_eq!(run.count("(workflow) pricing gave up after 3 attempts; using the list price"), 1);

    let journal_rows = rows(journal, "polyglot").await;
    let calls: Vec<_> = journal_rows.calls.iter().map(|c| (c.step.as_str(), c.status.as_str(), c.attempts)).collect();
    assert_eq!(
        calls,
        [
            ("guests:polyglot/check.check", "succeeded", 1),
            ("guests:polyglot/api.quote", "exhausted", 3),
            ("guests:polyglot/hash.digest", "succeeded", 1),
        ]
    );
    let quote = journal_rows.calls[1].output.as_deref().unwrap_or_default();
    assert!(quote.contains(r#"message: "failed(\"pricing service unavailable (attempt 3)\")""#), "{quote}");
}

#[tokio::test]
async fn the_polyglot_example_falls_back_on_sqlite() {
    let scratch = Scratch::new();
    polyglot_example(&scratch.journal()).await;
}

#[tokio::test]
async fn the_polyglot_example_falls_back_on_postgres() {
    let db = crate::support::PostgresDb::create().await;
    polyglot_example(&db.url).await;
}
