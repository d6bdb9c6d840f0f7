//! The operator's commands on SQLite and PostgreSQL, through the real binary:
//! cancel across processes, fork, delete, prune, result --wait, show
//! --follow, resume with policy overrides, JSON output, completions, cache.

use std::time::{Duration, Instant};

use crate::support::{Child, PostgresDb, Scratch, artifacts, eventually, host_command, rows};

/// `host … --journal JOURNAL` in `scratch`.
fn host(scratch: &Scratch, journal: &str, args: &[&str]) -> crate::support::Run {
    let mut all = args.to_vec();
    all.extend(["--journal", journal]);
    host_command(scratch.path(), &all)
}

/// Starts a workflow whose step runs `entry` (`nap MS` or `spin`) in another process.
async fn running(scratch: &Scratch, journal: &str, id: &str, entry: &[&str], lease: &str) -> Child {
    let mut args = vec!["run", artifacts::HOSTILE_CALLER, "--step", artifacts::HOSTILE, "--invoke"];
    args.extend(entry);
    args.extend(["--id", id, "--journal", journal, "--lease", lease, "--timeout", "60s"]);
    let child = Child::spawn(scratch.path(), &args);
    let started = eventually(Duration::from_secs(20), || async { !rows(journal, id).await.attempts.is_empty() }).await;
    assert!(started, "the attempt never started:\n{}", child.stderr());
    child
}

async fn cancel_across_processes(journal: &str) {
    let scratch = Scratch::new();
    for (id, entry) in [("napping", &["nap", "30000"][..]), ("spinning", &["spin"][..])] {
        let mut owner = running(&scratch, journal, id, entry, "1s").await;
        let asked = Instant::now();
        let cancel = host(&scratch, journal, &["cancel", id, "--wait", "10s"]);
        assert_eq!(cancel.code, Some(0), "{}", cancel.stderr);
        assert!(
            cancel.stdout.contains("cancel requested") && cancel.stdout.contains("ended: cancelled"),
            "{}",
            cancel.stdout
        );
        let code = owner.wait_for_exit(Duration::from_secs(10));
        let stopped = asked.elapsed();
        let stderr = owner.stderr();
        assert_eq!(code, Some(1), "a cancelled workflow ended badly: {stderr}");
        assert!(stderr.contains(&format!("workflow {id} cancelled")), "{stderr}");
        // The owner looks every third of its 1 s lease (a process start and a loaded host aside): the 30 s nap
        // (or the endless spin) was cut short.
        assert!(stopped < Duration::from_secs(8), "{id}: stopped {stopped:?} after the request");
        let journal_rows = rows(journal, id).await;
        assert_eq!(journal_rows.workflow.as_ref().map(|w| w.0.as_str()), Some("cancelled"));
        assert_eq!(journal_rows.calls[0].status, "cancelled");
        let attempts: Vec<_> = journal_rows.attempts.iter().map(|a| (a.outcome.clone(), a.kind.clone())).collect();
        assert_eq!(attempts, [(Some("failed".into()), Some("cancelled".into()))], "{id}: no further attempt");
    }
    // An owner that died: the workflow is cancelled at once, its unfinished attempt closed.
    let mut owner = running(&scratch, journal, "orphan", &["nap", "30000"], "1s").await;
    owner.kill();
    crate::support::until_lease_lapsed(journal, "orphan").await;
    let cancel = host(&scratch, journal, &["cancel", "orphan"]);
    assert_eq!((cancel.code, cancel.stdout.trim()), (Some(0), "workflow orphan cancelled"), "{}", cancel.stderr);
    let orphan = rows(journal, "orphan").await;
    assert_eq!(orphan.workflow.map(|w| w.0), Some("cancelled".into()));
    assert_eq!(orphan.attempts[0].kind.as_deref(), Some("interrupted"));
    // Cancelled workflows are never resumed by recover; a second cancel says it ended.
    let recovered = host(&scratch, journal, &["recover"]);
    assert!(recovered.stderr.contains("No interrupted workflow"), "{}", recovered.stderr);
    let again = host(&scratch, journal, &["cancel", "orphan"]);
    assert_eq!(again.code, Some(1));
    assert!(again.stderr.contains("already ended: cancelled"), "{}", again.stderr);
}

#[tokio::test]
async fn cancel_stops_a_workflow_running_in_another_process_on_sqlite() {
    let scratch = Scratch::new();
    cancel_across_processes(&scratch.journal()).await;
}

#[tokio::test]
async fn cancel_stops_a_workflow_running_in_another_process_on_postgres() {
    let db = PostgresDb::create().await;
    cancel_across_processes(&db.url).await;
}

/// `process item I attempt A started` lines of a pipeline run.
fn items_run(stderr: &str) -> Vec<String> {
    stderr.lines().filter_map(|line| line.split("process item ").nth(1)).map(|rest| rest.to_string()).collect()
}

async fn fork_delete_prune(journal: &str) {
    let scratch = Scratch::new();
    let first =
        host(&scratch, journal, &["run", artifacts::PIPELINE, "4", "5", "--id", "original", "--interval", "10ms"]);
    assert_eq!(first.success(), "20");

    let forked = host(&scratch, journal, &["fork", "original", "--from-step", "3", "--id", "forked"]);
    assert_eq!(forked.success(), "20", "the same inputs give the same output");
    let ran = items_run(&forked.stderr);
    assert!(
        ran.iter().all(|line| line.starts_with('3') || line.starts_with('4')),
        "items 1 and 2 are copied, not run: {ran:?}"
    );
    assert!(ran.iter().any(|line| line.starts_with("3 attempt 1")), "{ran:?}");
    let original_rows = rows(journal, "original").await;
    let forked_rows = rows(journal, "forked").await;
    assert_eq!(forked_rows.calls.len(), 4);
    assert_eq!(forked_rows.calls[..2], original_rows.calls[..2], "calls 1 and 2 are copies");
    let shown = host(&scratch, journal, &["show", "forked", "-o", "json"]);
    let value: serde_json::Value = serde_json::from_str(&shown.stdout).expect("JSON");
    assert_eq!(value["events"][0]["kind"], "forked-from");
    assert_eq!(value["events"][0]["detail"]["workflow"], "original");
    let refused = host(&scratch, journal, &["fork", "original", "--from-step", "1", "--id", "forked"]);
    assert!(refused.refused().contains("exists already"));
    let refused = host(&scratch, journal, &["fork", "nobody", "--from-step", "1"]);
    assert!(refused.refused().contains("no workflow nobody"));

    let mut owner = running(&scratch, journal, "busy", &["nap", "30000"], "10s").await;
    let refused = host(&scratch, journal, &["delete", "busy"]);
    assert!(refused.refused().contains("is running, not finished"));
    let deleted = host(&scratch, journal, &["delete", "forked"]);
    assert_eq!((deleted.code, deleted.stdout.trim()), (Some(0), "deleted forked"));
    let gone = rows(journal, "forked").await;
    assert!(gone.workflow.is_none() && gone.calls.is_empty() && gone.attempts.is_empty(), "every row of it goes");
    owner.kill();
    let pruned = host(&scratch, journal, &["prune", "--finished-before", "0s", "-o", "json"]);
    let value: serde_json::Value = serde_json::from_str(&pruned.stdout).expect("JSON");
    assert_eq!(value["deleted"], 1, "the original, the only finished one left");
    let gone = rows(journal, "original").await;
    assert!(gone.workflow.is_none() && gone.calls.is_empty() && gone.attempts.is_empty(), "every row of it goes");
    assert!(rows(journal, "busy").await.workflow.is_some(), "a running workflow is never pruned");
}

#[tokio::test]
async fn fork_delete_and_prune_on_sqlite() {
    let scratch = Scratch::new();
    fork_delete_prune(&scratch.journal()).await;
}

#[tokio::test]
async fn fork_delete_and_prune_on_postgres() {
    let db = PostgresDb::create().await;
    fork_delete_prune(&db.url).await;
}

async fn wait_follow_and_override(journal: &str) {
    let scratch = Scratch::new();
    let args = [
        "run",
        artifacts::RETRY_DEMO,
        "--step",
        artifacts::FLAKY,
        "--invoke",
        "retry-then-succeed",
        "1",
        "--id",
        "waited",
        "--interval",
        "5s",
        "--journal",
        journal,
    ];
    let mut child = Child::spawn(scratch.path(), &args);
    assert!(eventually(Duration::from_secs(20), || async { rows(journal, "waited").await.workflow.is_some() }).await);
    let unfinished = host(&scratch, journal, &["result", "waited"]);
    assert_eq!(unfinished.code, Some(3), "{}", unfinished.stderr);
    let followed = host(&scratch, journal, &["show", "waited", "--follow"]);
    assert_eq!(followed.code, Some(0), "{}", followed.stderr);
    // Attempt 1 may have failed before `show` started (then it is in the table) or after (then it is a line).
    let failed_line = "#1 guests:flaky/steps.flaky attempt 1 failed (returned-error)";
    let in_table = followed.stdout.contains("returned-error  5s");
    assert!(in_table || followed.stdout.contains(failed_line), "{}", followed.stdout);
    assert!(followed.stdout.contains("#1 guests:flaky/steps.flaky attempt 2 ok after"), "{}", followed.stdout);
    assert!(followed.stdout.trim_end().ends_with("workflow waited succeeded: ok(2)"), "{}", followed.stdout);
    let result = host(&scratch, journal, &["result", "waited", "--wait", "10s"]);
    assert_eq!((result.code, result.stdout.as_str()), (Some(0), "ok(2)\n"));
    let json = host(&scratch, journal, &["result", "waited", "-o", "json"]);
    let value: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!((value["status"].as_str(), &value["output"]), (Some("succeeded"), &serde_json::json!({"ok": 2})));
    child.wait_for_exit(Duration::from_secs(10));

    // Overrides on resume: a call that would exhaust its 2 attempts gets 5, journaled.
    let args = [
        "run",
        artifacts::RETRY_DEMO,
        "--step",
        artifacts::FLAKY,
        "--invoke",
        "retry-then-succeed",
        "3",
        "--id",
        "overridden",
        "--interval",
        "2s",
        "--max-attempts",
        "2",
        "--lease",
        "1s",
        "--journal",
        journal,
    ];
    let mut child = Child::spawn(scratch.path(), &args);
    let failed_once = eventually(Duration::from_secs(20), || async {
        rows(journal, "overridden").await.attempts.first().is_some_and(|a| a.outcome.is_some())
    })
    .await;
    assert!(failed_once, "{}", child.stderr());
    child.kill();
    crate::support::until_lease_lapsed(journal, "overridden").await;
    let resumed = host(&scratch, journal, &["resume", "overridden", "--max-attempts", "5", "--interval", "10ms"]);
    assert_eq!(resumed.success(), "ok(4)", "attempt 4 of the new 5 succeeds");
    let overridden = rows(journal, "overridden").await;
    assert_eq!((overridden.calls[0].max_attempts, overridden.attempts.len()), (5, 4));
    let shown = host(&scratch, journal, &["show", "overridden", "-o", "json"]);
    let value: serde_json::Value = serde_json::from_str(&shown.stdout).expect("JSON");
    // The resume took over the killed run's lapsed lease, then recorded the new policy.
    let kinds: Vec<&str> =
        value["events"].as_array().expect("events").iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds, ["taken-over", "policy-overridden"], "{value:#}");
    assert_eq!(value["options"]["settings"]["guests:flaky/steps.flaky"]["policy"]["max-attempts"], 5);

    let listed = host(&scratch, journal, &["list", "-o", "json"]);
    let value: serde_json::Value = serde_json::from_str(&listed.stdout).expect("JSON");
    let ids: Vec<&str> =
        value["workflows"].as_array().expect("an array").iter().filter_map(|w| w["id"].as_str()).collect();
    assert_eq!(ids, ["overridden", "waited"], "newest first");
}

#[tokio::test]
async fn result_wait_show_follow_and_resume_overrides_on_sqlite() {
    let scratch = Scratch::new();
    wait_follow_and_override(&scratch.journal()).await;
}

#[tokio::test]
async fn result_wait_show_follow_and_resume_overrides_on_postgres() {
    let db = PostgresDb::create().await;
    wait_follow_and_override(&db.url).await;
}

#[test]
fn completions_and_the_compile_cache() {
    let scratch = Scratch::new();
    for (shell, needle) in [("bash", "_host()"), ("zsh", "#compdef host"), ("fish", "complete -c host")] {
        let script = host_command(scratch.path(), &["completion", shell]);
        assert_eq!(script.code, Some(0));
        assert!(script.stdout.contains(needle), "{shell}: {}", &script.stdout[..200.min(script.stdout.len())]);
    }
    let cache = scratch.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    for (n, size) in [(1, 3000), (2, 2000), (3, 1000)] {
        std::fs::write(cache.join(format!("c{n}.cwasm")), vec![0u8; size]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let cache_dir = cache.to_str().unwrap();
    let pruned = host_command(scratch.path(), &["cache", "prune", "--max-size", "3500B", "--cache-dir", cache_dir]);
    assert_eq!(pruned.code, Some(0), "{}", pruned.stderr);
    assert!(pruned.stdout.starts_with("removed 1 compiled component(s)"), "{}", pruned.stdout);
    assert!(!cache.join("c1.cwasm").exists() && cache.join("c3.cwasm").exists(), "the least recently used goes first");
    let emptied = host_command(scratch.path(), &["cache", "prune", "--max-size", "0", "--cache-dir", cache_dir]);
    assert!(emptied.stdout.starts_with("removed 2"), "{}", emptied.stdout);
}
