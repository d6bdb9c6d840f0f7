//! Durability: SIGKILL at random points and resume, durable backoff and
//! attempt numbering, idempotent ids, non-determinism, and the journal CLI.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};

use crate::support::{Child, PostgresDb, Scratch, artifacts, eventually, host_command, rows, until_lease_lapsed};

const LEASE: &str = "1s";
const ITEMS: u32 = 8;

/// `process item I attempt A started` lines: the executions a run made.
fn executions(stderr: &str) -> Vec<(i64, i64)> {
    stderr
        .lines()
        .filter_map(|line| line.split("process item ").nth(1))
        .filter_map(|rest| {
            let words: Vec<&str> = rest.split_whitespace().collect();
            match words.as_slice() {
                [item, "attempt", attempt, "started"] => Some((item.parse().ok()?, attempt.parse().ok()?)),
                _ => None,
            }
        })
        .collect()
}

/// Runs pipeline workflows, SIGKILLing each run at a seeded random moment and
/// resuming, until `kills` kill points are covered; checks every invariant.
async fn crash_and_resume(journal: &str, kills: usize) {
    let seed: u64 = std::env::var("STEPBOX_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261128);
    println!("crash test seed {seed} (set STEPBOX_CRASH_SEED to replay)");
    let mut rng = StdRng::seed_from_u64(seed);
    let scratch = Scratch::new();
    let items = ITEMS.to_string();
    let mut killed = 0;
    let mut workflow = 0;
    while killed < kills {
        workflow += 1;
        let id = format!("crash-{seed}-{workflow}");
        let args = [
            "run",
            artifacts::PIPELINE,
            &items,
            "15",
            "--id",
            &id,
            "--journal",
            journal,
            "--interval",
            "30ms",
            "--lease",
            LEASE,
        ];
        let mut runs = 0;
        loop {
            runs += 1;
            assert!(runs < 60, "workflow {id} never finished");
            let completed: BTreeSet<i64> = rows(journal, &id)
                .await
                .calls
                .iter()
                .filter(|call| call.status == "succeeded")
                .map(|call| call.seq)
                .collect();
            let mut child = Child::spawn(scratch.path(), &args);
            let kill_at = Duration::from_millis(rng.random_range(30..700));
            tokio::time::sleep(kill_at).await;
            let finished = child.process.try_wait().expect("child status").is_some();
            if !finished {
                child.kill();
                killed += 1;
            }
            let stderr = child.stderr();
            for (item, attempt) in executions(&stderr) {
                assert!(
                    !completed.contains(&item),
                    "seed {seed}: item {item} ran again (attempt {attempt}) after its completion was journaled\n{stderr}"
                );
            }
            if finished {
                let status = child.process.wait().expect("child status");
                assert!(status.success(), "seed {seed}: the final run of {id} failed:\n{stderr}");
                break;
            }
            until_lease_lapsed(journal, &id).await;
        }
        let journal_rows = rows(journal, &id).await;
        let shown = host_command(scratch.path(), &["show", &id, "--journal", journal]).stdout;
        assert_eq!(journal_rows.calls.len(), ITEMS as usize, "seed {seed}, {id}:\n{shown}");
        let mut by_call: BTreeMap<i64, Vec<_>> = BTreeMap::new();
        for attempt in &journal_rows.attempts {
            by_call.entry(attempt.seq).or_default().push(attempt);
        }
        let mut expected = 0;
        for call in &journal_rows.calls {
            let attempts = &by_call[&call.seq];
            let numbers: Vec<i64> = attempts.iter().map(|a| a.attempt).collect();
            assert_eq!(
                numbers,
                (1..=attempts.len() as i64).collect::<Vec<_>>(),
                "seed {seed}: numbering of call {}",
                call.seq
            );
            assert_eq!(call.attempts, attempts.len() as i64);
            for attempt in attempts {
                assert!(attempt.outcome.is_some(), "seed {seed}: no attempt left without an outcome: {attempt:?}");
                if attempt.outcome.as_deref() == Some("failed") {
                    assert!(matches!(attempt.kind.as_deref(), Some("returned-error" | "interrupted")), "{attempt:?}");
                }
                // An attempt the host died in has no known end; every other attempt has one.
                let died_in = attempt.kind.as_deref() == Some("interrupted");
                assert_eq!(attempt.finished_at.is_none(), died_in, "seed {seed}: {attempt:?}");
                if died_in && attempt.attempt < call.attempts {
                    let next = attempts.iter().find(|next| next.attempt == attempt.attempt + 1).expect("next attempt");
                    let due = attempt.retry_at.expect("the next attempt's due time is journaled");
                    assert!(next.started_at >= due - 2, "seed {seed}: attempt {} ran before it was due", next.attempt);
                }
            }
            let oks = attempts.iter().filter(|a| a.outcome.as_deref() == Some("ok")).count();
            match call.status.as_str() {
                "succeeded" => {
                    assert_eq!(oks, 1, "seed {seed}: call {} has exactly one successful attempt\n{shown}", call.seq);
                    assert_eq!(attempts.last().and_then(|a| a.outcome.as_deref()), Some("ok"));
                    expected += 2 * call.seq;
                    if call.seq % 3 == 0 {
                        assert!(attempts.len() >= 2, "seed {seed}: flaky item {} failed its first attempt", call.seq);
                    }
                }
                // Interrupted attempts count: kills during every allowed attempt exhaust the call.
                "exhausted" => {
                    assert_eq!((oks, attempts.len()), (0, 3), "seed {seed}: {call:?}\n{shown}");
                    assert!(attempts.iter().any(|a| a.kind.as_deref() == Some("interrupted")), "{shown}");
                }
                other => panic!("seed {seed}: call {} ended {other}\n{shown}", call.seq),
            }
        }
        assert_eq!(
            journal_rows.workflow,
            Some(("succeeded".into(), Some(expected.to_string()))),
            "seed {seed}, {id}: the output sums the calls that succeeded\n{shown}"
        );
    }
    println!("crash test: {killed} kill points over {workflow} workflows");
}

#[tokio::test]
async fn sigkill_at_random_points_then_resume_on_sqlite() {
    let scratch = Scratch::new();
    crash_and_resume(&scratch.journal(), 24).await;
}

#[tokio::test]
async fn sigkill_at_random_points_then_resume_on_postgres() {
    let db = PostgresDb::create().await;
    crash_and_resume(&db.url, 10).await;
}

/// Kill during a 2 s backoff: the resumed run waits only what remains.
#[tokio::test]
async fn a_backoff_wait_survives_a_restart() {
    let scratch = Scratch::new();
    let journal = scratch.journal();
    let args = [
        "run",
        artifacts::RETRY_DEMO,
        "--step",
        artifacts::FLAKY,
        "--invoke",
        "retry-then-succeed",
        "1",
        "--id",
        "backoff",
        "--journal",
        &journal,
        "--interval",
        "6s",
        "--lease",
        LEASE,
    ];
    let mut child = Child::spawn(scratch.path(), &args);
    let failed_once = eventually(Duration::from_secs(10), || async {
        rows(&journal, "backoff").await.attempts.first().is_some_and(|a| a.finished_at.is_some())
    })
    .await;
    assert!(failed_once, "attempt 1 never finished:\n{}", child.stderr());
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.kill();
    until_lease_lapsed(&journal, "backoff").await;

    let resumed = host_command(scratch.path(), &["resume", "backoff", "--journal", &journal]);
    assert_eq!(resumed.success(), "ok(2)");
    assert_eq!(resumed.count("waits the remaining"), 1, "{}", resumed.stderr);
    let journal_rows = rows(&journal, "backoff").await;
    // The resumed host waited what remained of the 6 s (process start-ups and the lease's lapse included).
    crate::support::assert_gaps(&journal_rows.attempts, &[6000], 1500);
}

/// An attempt cut short by a crash is journaled as `interrupted`, counts, and
/// the next attempt has the next number; a live owner's workflow cannot be taken.
#[tokio::test]
async fn an_interrupted_attempt_counts_and_a_live_lease_is_respected() {
    let scratch = Scratch::new();
    let journal = scratch.journal();
    let args = [
        "run",
        artifacts::PIPELINE,
        "1",
        "5000",
        "--id",
        "cut",
        "--journal",
        &journal,
        "--interval",
        "10ms",
        "--lease",
        "1s",
    ];
    let mut child = Child::spawn(scratch.path(), &args);
    let running =
        eventually(Duration::from_secs(10), || async { !rows(&journal, "cut").await.attempts.is_empty() }).await;
    assert!(running, "attempt 1 never started:\n{}", child.stderr());

    let refused = host_command(scratch.path(), &["resume", "cut", "--journal", &journal]);
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(refused.stderr.contains("is being run by") && refused.stderr.contains("lease"), "{}", refused.stderr);

    child.kill();
    until_lease_lapsed(&journal, "cut").await;
    let recovered = host_command(scratch.path(), &["recover", "--journal", &journal]);
    assert_eq!(recovered.code, Some(0), "{}", recovered.stderr);
    assert_eq!(recovered.stdout.trim(), "cut: Workflow output: 2");

    let journal_rows = rows(&journal, "cut").await;
    let outcomes: Vec<_> = journal_rows
        .attempts
        .iter()
        .map(|a| (a.attempt, a.outcome.clone().unwrap_or_default(), a.kind.clone().unwrap_or_default()))
        .collect();
    assert_eq!(outcomes, [(1, "failed".into(), "interrupted".into()), (2, "ok".into(), String::new())]);
    assert_eq!(journal_rows.calls[0].attempts, 2);
}

/// A different component for the same id is refused before anything runs; an
/// edited journal that no longer matches the replay is a non-determinism error.
#[tokio::test]
async fn changed_components_and_diverging_replays_are_refused_and_leave_the_journal_alone() {
    let scratch = Scratch::new();
    let journal = scratch.journal();
    let args = ["run", artifacts::PIPELINE, "4", "150", "--id", "nd", "--journal", &journal, "--lease", LEASE];
    let mut child = Child::spawn(scratch.path(), &args);
    let one_done = eventually(Duration::from_secs(10), || async {
        rows(&journal, "nd").await.calls.iter().any(|c| c.status == "succeeded")
    })
    .await;
    assert!(one_done, "{}", child.stderr());
    child.kill();
    until_lease_lapsed(&journal, "nd").await;
    let before = rows(&journal, "nd").await;

    // Another component under the same id.
    let other = host_command(
        scratch.path(),
        &[
            "run",
            artifacts::RETRY_DEMO,
            "--step",
            artifacts::FLAKY,
            "--invoke",
            "reject",
            "\"x\"",
            "--id",
            "nd",
            "--journal",
            &journal,
        ],
    );
    let error = other.refused();
    assert!(
        error.contains("workflow nd was started with component digest") && error.contains("pipeline.wasm"),
        "{error}"
    );
    let after = rows(&journal, "nd").await;
    assert_eq!((after.calls, after.attempts), (before.calls.clone(), before.attempts.clone()), "journal untouched");

    // The journal says step call 1 had other arguments than the replay makes.
    crate::support::execute_sql(
        &journal,
        "UPDATE step_calls SET input = '(1, 150, false, 7)' WHERE workflow_id = 'nd' AND seq = 1",
    )
    .await;
    let edited = rows(&journal, "nd").await;
    let resumed = host_command(scratch.path(), &["resume", "nd", "--journal", &journal]);
    // The component or the journal no longer matches: bad input (2), resumable once fixed.
    assert_eq!(
        resumed.code,
        Some(2),
        "refused as bad input, resumable once the journal or the component is fixed: {}",
        resumed.stderr
    );
    assert!(
        resumed
            .stderr
            .contains("non-determinism in workflow nd: step call 1 is `example:pipeline/steps.process(1, 150, false,")
            && resumed.stderr.contains("the journal recorded `example:pipeline/steps.process(1, 150, false, 7)`"),
        "{}",
        resumed.stderr
    );
    let after = rows(&journal, "nd").await;
    assert_eq!((after.calls, after.attempts), (edited.calls, edited.attempts), "nothing written on divergence");
    assert_eq!(after.workflow.map(|w| w.0), Some("running".into()), "the workflow stays resumable");
}

async fn journal_cli(journal: &str) {
    let scratch = Scratch::new();
    let ok = host_command(
        scratch.path(),
        &[
            "run",
            artifacts::RETRY_DEMO,
            "--step",
            artifacts::FLAKY,
            "--invoke",
            "retry-then-succeed",
            "1",
            "--id",
            "cli-ok",
            "--journal",
            journal,
            "--interval",
            "5ms",
        ],
    );
    assert_eq!(ok.success(), "ok(2)");
    let mut child = Child::spawn(
        scratch.path(),
        &["run", artifacts::PIPELINE, "1", "3000", "--id", "cli-running", "--journal", journal],
    );
    assert!(
        eventually(Duration::from_secs(10), || async { !rows(journal, "cli-running").await.attempts.is_empty() }).await
    );
    child.kill();

    let list = host_command(scratch.path(), &["list", "--journal", journal]);
    assert_eq!(list.code, Some(0), "{}", list.stderr);
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATUS") && lines[0].contains("DURATION"),
        "{}",
        list.stdout
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("cli-ok ") && l.contains("succeeded") && l.contains("retry-then-succeed(1)"))
    );
    assert!(lines.iter().any(|l| l.starts_with("cli-running ") && l.contains("running")));
    let running = host_command(scratch.path(), &["list", "--status", "running", "--journal", journal]);
    assert_eq!(running.stdout.lines().count(), 2, "header + one running workflow:\n{}", running.stdout);

    let show = host_command(scratch.path(), &["show", "cli-ok", "--journal", journal]);
    assert_eq!(show.code, Some(0), "{}", show.stderr);
    for needle in [
        "workflow  cli-ok",
        "status    succeeded",
        "output    ok(2)",
        "#1 guests:flaky/steps.flaky(1)  succeeded  attempts 2/3",
        "ATTEMPT  STARTED",
        "returned-error  5ms",
        r#"failed("transient failure on attempt 1")"#,
    ] {
        assert!(show.stdout.contains(needle), "`{needle}` missing from:\n{}", show.stdout);
    }
    let json = host_command(scratch.path(), &["show", "cli-ok", "-o", "json", "--journal", journal]);
    let value: serde_json::Value = serde_json::from_str(&json.stdout).expect("show --json prints JSON");
    assert_eq!(value["status"], "succeeded");
    assert_eq!(value["calls"][0]["attempts"][0]["kind"], "returned-error");
    assert_eq!(value["calls"][0]["attempts"][1]["outcome"], "ok");
    assert_eq!(value["calls"][0]["output_json"], serde_json::json!({"ok": 2}));
    assert_eq!(value["input_json"], serde_json::json!([1]));

    let result = host_command(scratch.path(), &["result", "cli-ok", "--journal", journal]);
    assert_eq!((result.code, result.stdout.as_str()), (Some(0), "ok(2)\n"));
    let unfinished = host_command(scratch.path(), &["result", "cli-running", "--journal", journal]);
    assert_eq!(unfinished.code, Some(3));
    assert!(unfinished.stderr.contains("has not finished"), "{}", unfinished.stderr);
    let unknown = host_command(scratch.path(), &["show", "nope", "--journal", journal]);
    assert_eq!(unknown.code, Some(2));
    assert!(unknown.stderr.contains("no workflow nope"), "{}", unknown.stderr);
}

#[tokio::test]
async fn list_show_and_result_on_sqlite() {
    let scratch = Scratch::new();
    journal_cli(&scratch.journal()).await;
}

#[tokio::test]
async fn list_show_and_result_on_postgres() {
    let db = PostgresDb::create().await;
    journal_cli(&db.url).await;
}

/// Several processes opening one fresh SQLite journal at once all get its schema.
#[tokio::test]
async fn concurrent_first_runs_share_a_fresh_sqlite_journal() {
    let scratch = Scratch::new();
    let journal = scratch.journal();
    let mut children: Vec<Child> = (0..6)
        .map(|n| {
            let id = format!("fresh-{n}");
            let args = [
                "run",
                artifacts::RETRY_DEMO,
                "--step",
                artifacts::FLAKY,
                "--invoke",
                "reject",
                "\"x\"",
                "--id",
                &id,
                "--journal",
                &journal,
            ];
            Child::spawn(scratch.path(), &args)
        })
        .collect();
    for child in &mut children {
        let status = child.process.wait().expect("child status");
        assert!(status.success(), "{}", child.stderr());
    }
    for n in 0..6 {
        assert_eq!(rows(&journal, &format!("fresh-{n}")).await.attempts.len(), 1);
    }
}

/// Starts `retry-then-succeed(fail_times)` in `scratch` with `steps` as the step
/// component, and kills it during the backoff after its first attempt.
async fn killed_in_backoff(scratch: &Scratch, workflow: &str, steps: &str, id: &str, fail_times: &str, extra: &[&str]) {
    let journal = scratch.journal();
    let mut args = vec![
        "run",
        workflow,
        "--step",
        steps,
        "--invoke",
        "retry-then-succeed",
        fail_times,
        "--id",
        id,
        "--journal",
        &journal,
    ];
    args.extend(["--lease", LEASE]);
    args.extend(extra);
    let mut child = Child::spawn(scratch.path(), &args);
    let failed_once = eventually(Duration::from_secs(20), || async {
        rows(&journal, id).await.attempts.first().is_some_and(|a| a.outcome.is_some())
    })
    .await;
    assert!(failed_once, "attempt 1 never finished:\n{}", child.stderr());
    child.kill();
    until_lease_lapsed(&journal, id).await;
}

/// Editing the manifest after a crash does not change the policy of the workflow that started under it.
#[tokio::test]
async fn a_resume_keeps_the_settings_the_workflow_started_with() {
    let scratch = Scratch::new();
    let workflow = scratch.path().join("demo.wasm");
    std::fs::copy(artifacts::RETRY_DEMO, &workflow).unwrap();
    let manifest = scratch.path().join("demo.toml");
    std::fs::write(&manifest, "[retry]\nmax-attempts = 3\ninterval = \"1500ms\"\nbackoff-rate = 1.0\n").unwrap();
    let workflow = workflow.to_str().unwrap();
    killed_in_backoff(&scratch, workflow, artifacts::FLAKY, "pinned", "2", &[]).await;
    std::fs::write(&manifest, "[retry]\nmax-attempts = 1\ninterval = \"10ms\"\n").unwrap();
    let journal = scratch.journal();

    let rerun = host_command(
        scratch.path(),
        &[
            "run",
            workflow,
            "--step",
            artifacts::FLAKY,
            "--invoke",
            "retry-then-succeed",
            "2",
            "--id",
            "pinned",
            "--journal",
            &journal,
        ],
    );
    let error = rerun.refused();
    assert!(error.contains("was started with step settings") && error.contains("host resume pinned"), "{error}");

    let resumed = host_command(scratch.path(), &["resume", "pinned", "--journal", &journal]);
    assert_eq!(resumed.success(), "ok(3)", "three attempts, as when it started:\n{}", resumed.stderr);
    let pinned = rows(&journal, "pinned").await;
    assert_eq!(pinned.calls[0].max_attempts, 3);
    // The first wait spans a kill and a restart: it is at least the planned 1.5 s; the second is in one process.
    assert_eq!(pinned.attempts.len(), 3, "{:#?}", pinned.attempts);
    assert_eq!(pinned.attempts[0].next_delay_ms, Some(1500));
    assert!(pinned.attempts[1].started_at >= pinned.attempts[0].retry_at.expect("a retry time") - 2);
    crate::support::assert_gaps(&pinned.attempts[1..], &[1500], 1000);
}

/// A step component's file changed after a crash: refused, unless asked, and then journaled.
#[tokio::test]
async fn a_changed_step_component_is_refused_unless_allowed_and_then_recorded() {
    let scratch = Scratch::new();
    let steps = scratch.path().join("steps.wasm");
    std::fs::copy(artifacts::FLAKY, &steps).unwrap();
    let steps = steps.to_str().unwrap().to_string();
    killed_in_backoff(&scratch, artifacts::RETRY_DEMO, &steps, "swapped", "1", &["--interval", "1s"]).await;
    // The same code with a custom section appended: another digest.
    let mut bytes = std::fs::read(&steps).unwrap();
    bytes.extend([0, 5, 4, b'n', b'o', b't', b'e']);
    std::fs::write(&steps, bytes).unwrap();
    let journal = scratch.journal();

    let refused = host_command(scratch.path(), &["resume", "swapped", "--journal", &journal]);
    let error = refused.refused();
    assert!(
        error.contains("the step component")
            && error.contains("changed since workflow swapped started")
            && error.contains("--allow-changed-steps"),
        "{error}"
    );
    assert_eq!(rows(&journal, "swapped").await.attempts.len(), 1, "nothing ran");

    let allowed = host_command(scratch.path(), &["resume", "swapped", "--allow-changed-steps", "--journal", &journal]);
    assert_eq!(allowed.success(), "ok(2)");
    assert!(
        allowed.stderr.contains("changed") && allowed.stderr.contains("running the new code"),
        "{}",
        allowed.stderr
    );
    let shown = host_command(scratch.path(), &["show", "swapped", "-o", "json", "--journal", &journal]);
    let value: serde_json::Value = serde_json::from_str(&shown.stdout).expect("JSON");
    // The resume took over a lapsed lease (`taken-over`), then recorded the change.
    let events = value["events"].as_array().expect("events");
    let changed = events.iter().find(|event| event["kind"] == "steps-changed").expect("a steps-changed event");
    assert!(changed["detail"]["changed"][0]["path"].as_str().unwrap_or_default().ends_with("steps.wasm"), "{value:#}");
    let recorded = value["options"]["steps"][0]["digest"].as_str().unwrap_or_default().to_string();
    assert_eq!(recorded, stepbox::journal::digest(&std::fs::read(&steps).unwrap()), "the new digest is pinned now");
}
