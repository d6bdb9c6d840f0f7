//! The same scenarios on a real PostgreSQL server, each test in its own database.

use crate::support::{PostgresDb, Scratch, artifacts, assert_gaps, host_in, rows};

#[tokio::test]
async fn seed_scenario_on_postgres_leaves_three_attempt_rows() {
    let db = PostgresDb::create().await;
    let scratch = Scratch::new();
    let run = host_in(
        scratch.path(),
        &[artifacts::PROVISION, "--journal", &db.url, "--id", "pg-seed", "--interval", "100ms"],
    );
    assert_eq!(run.success(), "true");
    assert_eq!(run.count("being automatically retried"), 2);
    assert_eq!(run.count("Workflow: Caught max retries exceeded exception (3 attempts"), 1);

    let rows = rows(&db.url, "pg-seed").await;
    assert_eq!(rows.workflow, Some(("succeeded".into(), Some("true".into()))));
    assert_eq!(rows.calls.len(), 1);
    assert_eq!((rows.calls[0].status.as_str(), rows.calls[0].attempts), ("exhausted", 3));
    assert!(rows.calls[0].output.as_deref().unwrap_or_default().contains("attempts: 3, failures: [{attempt: 1"));
    assert_eq!(rows.attempts.len(), 3);
    assert!(rows.attempts.iter().all(|a| a.kind.as_deref() == Some("returned-error")));
    assert_gaps(&rows.attempts, &[100, 200], 500);
    assert!(!scratch.path().join("stepbox.db").exists(), "no SQLite journal when --journal is postgres");
}

#[tokio::test]
async fn retry_then_success_and_permanent_on_postgres() {
    let db = PostgresDb::create().await;
    let scratch = Scratch::new();
    let demo = |id: &str, entry: &str, arg: &str| {
        host_in(
            scratch.path(),
            &[
                artifacts::RETRY_DEMO,
                "--step",
                artifacts::FLAKY,
                "--journal",
                &db.url,
                "--id",
                id,
                "--invoke",
                entry,
                arg,
                "--interval",
                "10ms",
            ],
        )
    };
    assert_eq!(demo("pg-twice", "retry-then-succeed", "1").success(), "ok(2)");
    assert_eq!(demo("pg-perm", "reject", r#""nope""#).success(), r#"err(permanent("nope"))"#);

    let twice = rows(&db.url, "pg-twice").await;
    let outcomes: Vec<_> = twice.attempts.iter().map(|a| a.outcome.clone().unwrap_or_default()).collect();
    assert_eq!(outcomes, ["failed", "ok"]);
    assert_eq!(twice.calls[0].output.as_deref(), Some("ok(2)"));
    let perm = rows(&db.url, "pg-perm").await;
    assert_eq!(perm.attempts.len(), 1);
    assert_eq!(perm.calls[0].status, "rejected");
}

#[tokio::test]
async fn the_journal_url_can_come_from_the_environment_and_migrations_rerun_cleanly() {
    let db = PostgresDb::create().await;
    let scratch = Scratch::new();
    for id in ["env-1", "env-2"] {
        let run = crate::support::host_with_env(
            scratch.path(),
            &[artifacts::RETRY_DEMO, "--step", artifacts::FLAKY, "--id", id, "--invoke", "reject", r#""x""#],
            &[("STEPBOX_JOURNAL", &db.url)],
        );
        run.success();
        assert!(!run.stderr.contains("already exists"), "no migration notice reaches the user:\n{}", run.stderr);
    }
    assert_eq!(rows(&db.url, "env-2").await.attempts.len(), 1);
}
