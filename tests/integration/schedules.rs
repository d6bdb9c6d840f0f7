//! Schedules through the real binary: a schedule every second fired by
//! three workers, one SIGKILLed, starts exactly one workflow per tick and
//! misses none; bad expressions and zones are refused at `set`; list,
//! pause, resume and delete.

use std::time::Duration;

use crate::support::rows::Rows;
use crate::support::{Child, PostgresDb, Run, Scratch, artifacts, host_command};

fn host(scratch: &Scratch, journal: &str, args: &[&str]) -> Run {
    let mut all = args.to_vec();
    all.extend(["--journal", journal]);
    host_command(scratch.path(), &all)
}

/// `host schedule set NAME` of the waiter's `whoami`, with `extra` flags.
fn set(scratch: &Scratch, journal: &str, name: &str, extra: &[&str]) -> Run {
    let mut args = vec!["schedule", "set", name, artifacts::WAITER, "--step", artifacts::FLAKY, "--invoke", "whoami"];
    args.extend(extra);
    host(scratch, journal, &args)
}

/// The ticks a schedule started workflows for, in ms, in order, with each workflow's output.
async fn ticks(journal: &str, schedule: &str) -> Vec<(i64, String, String, Option<String>)> {
    Rows::open(journal)
        .await
        .all(
            "SELECT MS(scheduled_at), id, status, output FROM workflows WHERE schedule = $1 ORDER BY scheduled_at",
            &[schedule],
        )
        .await
}

/// Every second for `seconds` s, `workers` workers (the first SIGKILLed
/// halfway): one workflow per tick, consecutive ticks, each knowing its tick.
async fn every_second(journal: &str, seconds: u64, workers: usize) {
    let scratch = Scratch::new();
    let set = set(&scratch, journal, "tick", &["--cron", "* * * * * *", "--catch-up", "all"]);
    assert_eq!(set.code, Some(0), "{}", set.stderr);
    assert!(set.stdout.starts_with("schedule tick set: * * * * * * (UTC), next tick "), "{}", set.stdout);
    let args = ["worker", "--journal", journal, "--poll-interval", "200ms", "--lease", "1s"];
    let mut running: Vec<Child> = (0..workers).map(|_| Child::spawn(scratch.path(), &args)).collect();
    tokio::time::sleep(Duration::from_secs(seconds / 2)).await;
    running[0].kill();
    tokio::time::sleep(Duration::from_secs(seconds - seconds / 2)).await;
    let paused = host(&scratch, journal, &["schedule", "pause", "tick"]);
    assert_eq!(paused.code, Some(0), "{}", paused.stderr);
    assert!(paused.stdout.contains("paused"), "{}", paused.stdout);
    // Everything fired runs to its end.
    let mut finished = Vec::new();
    for _ in 0..300 {
        finished = ticks(journal, "tick").await;
        if finished.iter().all(|(_, _, status, _)| status == "succeeded") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let at: Vec<i64> = finished.iter().map(|(tick, ..)| *tick).collect();
    assert!(at.len() as u64 >= seconds - 2, "{} ticks in {seconds} s: {at:?}", at.len());
    for pair in at.windows(2) {
        assert_eq!(pair[1] - pair[0], 1000, "consecutive ticks, none missed or doubled: {at:?}");
    }
    for (tick, id, status, output) in &finished {
        assert_eq!(status, "succeeded", "{id}");
        let who: serde_json::Value =
            serde_json::from_str(&serde_json::from_str::<String>(output.as_deref().unwrap_or("\"\"")).unwrap())
                .expect("whoami JSON");
        assert_eq!(
            (who["scheduled"]["schedule"].as_str(), who["scheduled"]["tick_ms"].as_i64()),
            (Some("tick"), Some(*tick))
        );
        assert_eq!(who["queue"], "default");
    }
    for worker in running.iter_mut().skip(1) {
        worker.signal("TERM");
        assert_eq!(worker.wait_for_exit(Duration::from_secs(30)), Some(0), "{}", worker.stderr());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_every_second_starts_one_workflow_per_tick_through_a_kill_on_postgres() {
    let db = PostgresDb::create().await;
    every_second(&db.url, 20, 3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_every_second_starts_one_workflow_per_tick_through_a_kill_on_sqlite() {
    let scratch = Scratch::new();
    every_second(&scratch.journal(), 8, 2).await;
}

/// What `set` refuses, and the other subcommands.
#[tokio::test(flavor = "multi_thread")]
async fn schedules_are_checked_at_set_and_listed_paused_resumed_and_deleted() {
    let scratch = Scratch::new();
    let journal = scratch.journal();
    let journal = journal.as_str();
    let refused = set(&scratch, journal, "bad", &["--cron", "0 3 * *"]);
    assert!(refused.refused().contains("has 4 field(s)"), "{}", refused.stderr);
    let refused = set(&scratch, journal, "bad", &["--cron", "99 * * * *"]);
    assert!(refused.refused().contains("invalid cron expression \"99 * * * *\""), "{}", refused.stderr);
    let refused = set(&scratch, journal, "bad", &["--cron", "0 3 * * *", "--timezone", "Mars/Olympus"]);
    assert!(refused.refused().contains("unknown time zone \"Mars/Olympus\""), "{}", refused.stderr);
    let refused = set(&scratch, journal, "bad name", &["--cron", "0 3 * * *"]);
    assert!(refused.refused().contains("invalid schedule name"), "{}", refused.stderr);
    let refused = set(&scratch, journal, "bad", &["--cron", "0 3 * * *", "--catch-up", "sometimes"]);
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(refused.stderr.contains("use skip, latest or all"), "{}", refused.stderr);
    let set = set(&scratch, journal, "nightly", &["--cron", "0 3 * * *", "--timezone", "Europe/Paris", "-o", "json"]);
    assert_eq!(set.code, Some(0), "{}", set.stderr);
    let schedule: serde_json::Value = serde_json::from_str(&set.stdout).expect("JSON");
    assert_eq!((schedule["timezone"].as_str(), schedule["catch_up"].as_str()), (Some("Europe/Paris"), Some("latest")));
    let next = schedule["next_tick_at"].as_str().expect("next tick");
    // 03:00 in Paris is 01:00 or 02:00 UTC.
    assert!(next.ends_with("T02:00:00.000Z") || next.ends_with("T01:00:00.000Z"), "{next}");
    let listed = host(&scratch, journal, &["schedule", "list"]);
    assert!(listed.stdout.contains("nightly") && listed.stdout.contains("0 3 * * *"), "{}", listed.stdout);
    assert!(host(&scratch, journal, &["schedule", "pause", "nightly"]).stdout.contains("paused"));
    assert!(host(&scratch, journal, &["schedule", "resume", "nightly"]).stdout.contains("active"));
    assert!(host(&scratch, journal, &["schedule", "pause", "nope"]).refused().contains("no schedule nope"));
    assert_eq!(host(&scratch, journal, &["schedule", "delete", "nightly"]).code, Some(0));
    assert!(host(&scratch, journal, &["schedule", "delete", "nightly"]).refused().contains("no schedule nightly"));
}
