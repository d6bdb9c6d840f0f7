//! Concurrent step calls (`start-call`, `await-all`, `await-first`) through
//! the real binary on SQLite and PostgreSQL, from Rust and Python workflows:
//! a hundred calls at once, the `max-concurrent-calls` limit read from the
//! journal's timestamps, the first of three replayed after a kill, a fan-out
//! of 200 failing-and-retried calls through five SIGKILLs checked against
//! the step's own execution records, a fan-out cancelled on a worker, and
//! the refusals of bad calls.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use stepbox::config::SettingsLayer;
use stepbox::journal::Journal;
use stepbox::run::RunSpec;
use stepbox::wasm::ComponentLoader;
use stepbox::worker::{Client, SubmitRequest};

use crate::support::{
    AttemptRow, Child, PostgresDb, Run, Scratch, artifacts, eventually, host_command, most_at_once, rows,
};

/// `host ARGS… --journal JOURNAL` in `scratch`.
fn host(scratch: &Scratch, journal: &str, args: &[&str]) -> Run {
    let mut all = args.to_vec();
    all.extend(["--journal", journal]);
    host_command(scratch.path(), &all)
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970");
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// From the first attempt's start to the last one's end, in ms.
fn span(attempts: &[AttemptRow]) -> i64 {
    let first = attempts.iter().map(|attempt| attempt.started_at).min().unwrap_or(0);
    let last = attempts.iter().filter_map(|attempt| attempt.finished_at).max().unwrap_or(0);
    last - first
}

/// `spread(count, 1000)` of `workflow` with `limit` calls at once: its
/// output, how many attempts ran at once at most, and the span of them all.
async fn spread(workflow: &str, journal: &str, count: u32, limit: u32) -> (usize, i64) {
    let scratch = Scratch::new();
    let (count_text, limit_text) = (count.to_string(), limit.to_string());
    let run = host(
        &scratch,
        journal,
        &[
            "run",
            workflow,
            "--step",
            artifacts::HOSTILE,
            "--invoke",
            "spread",
            &count_text,
            "1000",
            "--max-concurrent-calls",
            &limit_text,
            "--id",
            "spread-1",
        ],
    );
    assert_eq!(run.success().trim(), count_text, "every call returned ok");
    let rows = rows(journal, "spread-1").await;
    assert_eq!(rows.calls.len(), count as usize, "one journaled call per start-call");
    assert!(rows.calls.iter().all(|call| call.step == "guests:hostile/steps.nap" && call.status == "succeeded"));
    assert_eq!(rows.attempts.len(), count as usize, "one attempt per call");
    let intervals: Vec<(i64, i64)> = rows
        .attempts
        .iter()
        .map(|attempt| (attempt.started_at, attempt.finished_at.expect("every attempt ended")))
        .collect();
    let (most, span) = (most_at_once(&intervals), span(&rows.attempts));
    eprintln!("{count} calls of 1 s, {limit} at once at most: {most} ran at once, all within {span} ms");
    (most, span)
}

/// A hundred calls of a 1 s step at once end within 3 s.
async fn a_hundred_at_once(workflow: &str, journal: &str) {
    let (most, span) = spread(workflow, journal, 100, 100).await;
    assert!(span < 3000, "100 concurrent calls of 1 s took {span} ms");
    assert!(most > 50, "only {most} of 100 calls ran at once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_calls_run_at_once_from_rust_on_sqlite() {
    let scratch = Scratch::new();
    a_hundred_at_once(artifacts::FAN_OUT, &scratch.journal()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_calls_run_at_once_from_rust_on_postgres() {
    let db = PostgresDb::create().await;
    a_hundred_at_once(artifacts::FAN_OUT, &db.url).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_calls_run_at_once_from_python_on_sqlite() {
    let scratch = Scratch::new();
    a_hundred_at_once(artifacts::FAN_OUT_PY.path(), &scratch.journal()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_calls_run_at_once_from_python_on_postgres() {
    let db = PostgresDb::create().await;
    a_hundred_at_once(artifacts::FAN_OUT_PY.path(), &db.url).await;
}

/// With `--max-concurrent-calls 10`, a hundred 1 s calls take ten rounds:
/// never more than ten at once, about ten seconds in all.
async fn ten_at_a_time(journal: &str) {
    let (most, span) = spread(artifacts::FAN_OUT, journal, 100, 10).await;
    assert_eq!(most, 10, "the limit is 10 calls at once, and 10 ran at once");
    assert!((9_900..16_000).contains(&span), "ten rounds of 1 s took {span} ms");
}

#[tokio::test(flavor = "multi_thread")]
async fn max_concurrent_calls_holds_on_sqlite() {
    let scratch = Scratch::new();
    ten_at_a_time(&scratch.journal()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn max_concurrent_calls_holds_on_postgres() {
    let db = PostgresDb::create().await;
    ten_at_a_time(&db.url).await;
}

/// The first of three naps (200 ms beside 1.5 s and 800 ms) wins; the
/// workflow then sleeps 4 s and is killed while it does. Resumed, every nap
/// is replayed (all three had ended, none runs again) and `await-first`
/// hands over the winner it journaled, not whichever replayed call comes
/// first (the 1.5 s one, first in the list).
async fn first_of_three(workflow: &str, journal: &str) {
    let scratch = Scratch::new();
    let args = ["run", workflow, "--step", artifacts::HOSTILE, "--invoke", "race", "[1500, 200, 800]", "4000"];
    let mut all = args.to_vec();
    all.extend(["--id", "race-1", "--journal", journal, "--lease", "1s"]);
    let mut child = Child::spawn(scratch.path(), &all);
    let settled = eventually(Duration::from_secs(30), || async {
        let rows = rows(journal, "race-1").await;
        rows.calls.iter().filter(|call| call.finished_at.is_some()).count() == 4
    })
    .await;
    assert!(settled, "the three naps and the await-first never ended:\n{}", child.stderr());
    let before = rows(journal, "race-1").await;
    let first = before.calls.iter().find(|call| call.step.ends_with(".await-first")).expect("a journaled await-first");
    assert_eq!(first.output.as_deref(), Some("1"), "the 200 ms nap came first");
    assert!(child.process.try_wait().expect("child status").is_none(), "it ended before the kill");
    child.kill();
    crate::support::until_lease_lapsed(journal, "race-1").await;
    let resumed = host(&scratch, journal, &["resume", "race-1"]);
    assert!(resumed.success().contains(r#"1 {\"ok\":200}"#), "the output names the winner: {}", resumed.stdout);
    let after = rows(journal, "race-1").await;
    let naps: Vec<_> = after.attempts.iter().filter(|attempt| attempt.seq <= 3).collect();
    assert_eq!(naps.len(), 3, "each nap ran once, none again on the resume: {naps:?}");
    let first_after = after.calls.iter().find(|call| call.step.ends_with(".await-first")).expect("await-first");
    assert_eq!(first_after.output, first.output, "the journaled winner stands");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_of_three_is_the_same_after_a_kill_from_rust_on_sqlite() {
    let scratch = Scratch::new();
    first_of_three(artifacts::FAN_OUT, &scratch.journal()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_of_three_is_the_same_after_a_kill_from_python_on_postgres() {
    let db = PostgresDb::create().await;
    first_of_three(artifacts::FAN_OUT_PY.path(), &db.url).await;
}

/// What one execution of `logged-flaky` left in the records folder.
#[derive(Debug)]
struct Execution {
    attempt: u32,
    started: i64,
    /// `ok` or `fail` and when, if it got that far.
    ended: Option<(String, i64)>,
}

/// Every execution of each call (`call-I`), from the step's own records.
fn executions(records: &Path) -> BTreeMap<String, Vec<Execution>> {
    let mut by_tag: BTreeMap<String, Vec<Execution>> = BTreeMap::new();
    for entry in std::fs::read_dir(records).expect("the records folder") {
        let path = entry.expect("a record").path();
        let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default().to_string();
        let Some((tag, _nonce)) = name.split_once('.') else { continue };
        let text = std::fs::read_to_string(&path).expect("a record reads");
        let mut lines = text.lines().map(|line| line.split_whitespace().collect::<Vec<_>>());
        let Some(start) = lines.next() else { continue };
        // A line cut by a kill has no time: the file's own says when it was written.
        let written = || {
            let modified = std::fs::metadata(&path).and_then(|metadata| metadata.modified()).expect("mtime");
            let since = modified.duration_since(std::time::UNIX_EPOCH).expect("after 1970");
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        };
        let (attempt, started) = match start.as_slice() {
            ["start", attempt, at] => (attempt.parse().unwrap_or(0), at.parse().unwrap_or_else(|_| written())),
            ["start", attempt] => (attempt.parse().unwrap_or(0), written()),
            other => panic!("a record starts with `start`: {other:?} ({text:?})"),
        };
        let ended = lines.next().and_then(|line| match line.as_slice() {
            [what, at] => Some(((*what).to_string(), at.parse().unwrap_or(0))),
            _ => None,
        });
        by_tag.entry(tag.to_string()).or_default().push(Execution { attempt, started, ended });
    }
    by_tag
}

/// A fan-out of 200 calls that fail 0, 1 or 2 times each, SIGKILLed five
/// times at random moments and resumed each time: the output is right, each
/// call has exactly one `ok` attempt in the journal, and by the step's own
/// records no call ran again once its end was journaled (a call whose
/// success a kill cut off before the journal had it runs again: at least
/// once, as in every durable-execution engine; the test checks that only a
/// kill right after such a success explains a second one).
async fn fan_out_through_kills(journal: &str) {
    let scratch = Scratch::new();
    let records = scratch.path().join("records");
    std::fs::create_dir(&records).expect("records folder");
    let manifest = scratch.path().join("fan.toml");
    std::fs::write(
        &manifest,
        format!(
            "max-concurrent-calls = 8\n[retry]\ninterval = \"20ms\"\nmax-attempts = 10\n\n\
             [steps.logged-flaky.grants]\ndirs = [{{ host = {:?}, guest = \"/records\", write = true }}]\n",
            records.display().to_string()
        ),
    )
    .expect("manifest");
    let manifest = manifest.display().to_string();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |at| at.as_nanos());
    eprintln!("seed {seed}");
    let run_args = [
        "run",
        artifacts::FAN_OUT,
        "--step",
        artifacts::HOSTILE,
        "--config",
        &manifest,
        "--invoke",
        "fan",
        "\"/records\"",
        "200",
        "12345",
        "250",
        "--id",
        "fan-1",
        "--journal",
        journal,
        "--lease",
        "1s",
    ];
    let resume_args = ["resume", "fan-1", "--journal", journal, "--lease", "1s"];
    let mut kills = Vec::new();
    for kill in 0..5u128 {
        let args: &[&str] = if kill == 0 { &run_args } else { &resume_args };
        let mut child = Child::spawn(scratch.path(), args);
        // A moment between 0.4 s and 1.4 s into this run, drawn from the seed.
        let pause = 400 + u64::try_from((seed >> (kill * 7)) % 1000).unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let ended = child.process.try_wait().expect("child status").is_some();
        child.kill();
        kills.push(now_ms());
        assert!(!ended, "the fan-out ended before kill {} ({pause} ms in):\n{}", kill + 1, child.stderr());
        crate::support::until_lease_lapsed(journal, "fan-1").await;
    }
    let last = host(&scratch, journal, &["resume", "fan-1"]);
    assert_eq!(last.success().trim(), "200", "every call ended ok");
    let rows = rows(journal, "fan-1").await;
    assert_eq!(rows.calls.len(), 200);
    for call in &rows.calls {
        let oks = rows.attempts.iter().filter(|a| a.seq == call.seq && a.outcome.as_deref() == Some("ok")).count();
        assert_eq!(oks, 1, "call {} has {oks} ok attempts", call.seq);
    }
    let executions = executions(&records);
    assert_eq!(executions.len(), 200, "every call ran");
    let (mut interrupted, mut unjournaled) = (0, 0);
    for (tag, runs) in &executions {
        let call = rows.calls.iter().find(|call| call.input.contains(&format!("\"{tag}\""))).expect("its call");
        let journaled_end = call.finished_at.expect("the call ended");
        // Once its end was journaled, the call never ran again.
        let again: Vec<&Execution> = runs.iter().filter(|run| run.started > journaled_end).collect();
        assert!(again.is_empty(), "{tag} ran again after its end was journaled at {journaled_end}: {again:?}");
        // The journal's ok attempt is one the step saw succeed.
        let ok_attempt = rows
            .attempts
            .iter()
            .find(|attempt| attempt.seq == call.seq && attempt.outcome.as_deref() == Some("ok"))
            .map_or(0, |attempt| attempt.attempt);
        let seen = runs.iter().any(|run| {
            i64::from(run.attempt) == ok_attempt && run.ended.as_ref().is_some_and(|(what, _)| what == "ok")
        });
        assert!(seen, "{tag}: the journal's ok attempt {ok_attempt} is not among its executions: {runs:?}");
        // More than one success only when a kill came between a success and its journal write.
        let mut succeeded: Vec<i64> = runs
            .iter()
            .filter_map(|run| run.ended.as_ref().filter(|(what, _)| what == "ok").map(|(_, at)| *at))
            .collect();
        assert!(!succeeded.is_empty(), "{tag} never succeeded: {runs:?}");
        succeeded.sort_unstable();
        for &ok_at in &succeeded[..succeeded.len() - 1] {
            let cut = kills.iter().any(|&kill| (ok_at..ok_at + 2000).contains(&kill));
            assert!(cut, "{tag} succeeded at {ok_at}, unjournaled, though no kill came soon after: {runs:?}");
            unjournaled += 1;
        }
        interrupted += runs.iter().filter(|run| run.ended.is_none()).count();
    }
    eprintln!(
        "{} executions, {interrupted} cut by a kill, {unjournaled} succeeded just before a kill and ran again",
        executions.values().map(Vec::len).sum::<usize>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fan_out_survives_five_kills_on_sqlite() {
    let scratch = Scratch::new();
    fan_out_through_kills(&scratch.journal()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fan_out_survives_five_kills_on_postgres() {
    let db = PostgresDb::create().await;
    fan_out_through_kills(&db.url).await;
}

/// A step the workflow does not import, arguments that are not a JSON array
/// or do not fit, and a limit out of range: each refused, saying why.
#[tokio::test(flavor = "multi_thread")]
async fn bad_calls_and_limits_are_refused_with_the_reason() {
    let scratch = Scratch::new();
    let journal = scratch.journal();
    let try_start = |step: &str, arguments: &str| {
        let run = host(
            &scratch,
            &journal,
            &["run", artifacts::FAN_OUT, "--step", artifacts::HOSTILE, "--invoke", "try-start", step, arguments],
        );
        run.success().to_string()
    };
    let unknown = try_start("\"launch\"", "\"[]\"");
    assert!(unknown.contains("`launch` is not a step this workflow imports; it imports: "), "{unknown}");
    assert!(unknown.contains("guests:hostile/steps.nap"), "{unknown}");
    let not_json = try_start("\"nap\"", "\"[1000\"");
    assert!(not_json.contains("must be a JSON array of its parameters"), "{not_json}");
    let count = try_start("\"nap\"", "\"[1, 2]\"");
    assert!(count.contains("takes 1 argument(s) (ms: u64), but 2 were given"), "{count}");
    let typed = try_start("\"nap\"", "\"[\\\"soon\\\"]\"");
    assert!(typed.contains("argument 1 of `guests:hostile/steps.nap` (ms): expected u64"), "{typed}");
    let qualified = try_start("\"guests:hostile/steps.nap\"", "\"[5]\"");
    assert!(qualified.contains(r#"{\"ok\":5}"#), "{qualified}");
    let zero = host(
        &scratch,
        &journal,
        &[
            "run",
            artifacts::FAN_OUT,
            "--step",
            artifacts::HOSTILE,
            "--invoke",
            "spread",
            "1",
            "1",
            "--max-concurrent-calls",
            "0",
        ],
    );
    assert!(zero.refused().contains("--max-concurrent-calls"), "{}", zero.stderr);
    let manifest = scratch.path().join("fan.toml");
    std::fs::write(&manifest, "max-concurrent-calls = 5000\n").expect("manifest");
    let manifest = manifest.display().to_string();
    let too_many = host(
        &scratch,
        &journal,
        &[
            "run",
            artifacts::FAN_OUT,
            "--step",
            artifacts::HOSTILE,
            "--config",
            &manifest,
            "--invoke",
            "spread",
            "1",
            "1",
        ],
    );
    assert!(
        too_many.refused().contains("sets max-concurrent-calls to 5000; it must be from 1 to 1000"),
        "{}",
        too_many.stderr
    );
}

/// A fan-out of 40 calls of 30 s on a worker, cancelled while every call
/// runs: each call's attempt stops within a second and a half (NOTIFY on
/// PostgreSQL; on SQLite at the next lease renewal, a third of 3 s), every
/// call ends `cancelled`, the workflow `cancelled`.
async fn cancel_a_fan_out(journal: &str, postgres: bool) {
    let scratch = Scratch::new();
    let engine = stepbox::wasm::new_engine().expect("the engine starts");
    let client = Client::new(
        Journal::open(journal).await.expect("the journal opens"),
        ComponentLoader::new(&engine, Some(crate::support::shared_cache())),
    );
    let spec = RunSpec {
        workflow: artifacts::FAN_OUT.into(),
        steps: vec![artifacts::HOSTILE.into()],
        invoke: Some("spread".into()),
        cli_settings: SettingsLayer { max_concurrent_calls: Some(40), ..SettingsLayer::default() },
        ..RunSpec::default()
    };
    let submittable = client.prepare(&spec).await.expect("the fan-out is submittable");
    let request = SubmitRequest { arguments: vec!["40".into(), "30000".into()], ..SubmitRequest::default() };
    let id = client.submit(&submittable, &request).await.expect("submitted").id;
    let lease = if postgres { "30s" } else { "3s" };
    let mut args = vec!["worker", "--journal", journal, "--lease", lease];
    if !postgres {
        args.extend(["--poll-interval", "100ms"]);
    }
    let mut worker = Child::spawn(scratch.path(), &args);
    let all_running =
        eventually(Duration::from_secs(60), || async { rows(journal, &id).await.attempts.len() == 40 }).await;
    assert!(all_running, "the 40 calls never all started:\n{}", worker.stderr());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancel = host(&scratch, journal, &["cancel", &id, "--wait", "10s"]);
    assert_eq!(cancel.code, Some(0), "{}", cancel.stderr);
    let mut direct = crate::support::rows::Rows::open(journal).await;
    let (status, requested): (String, i64) =
        direct.one("SELECT status, MS(cancel_requested_at) FROM workflows WHERE id = $1", &[&id]).await;
    assert_eq!(status, "cancelled");
    let rows = rows(journal, &id).await;
    assert_eq!(rows.calls.len(), 40);
    assert!(rows.calls.iter().all(|call| call.status == "cancelled"), "{:?}", rows.calls);
    let limit = if postgres { 1500 } else { 2000 };
    for attempt in &rows.attempts {
        assert_eq!(attempt.kind.as_deref(), Some("cancelled"), "{attempt:?}");
        let took = attempt.finished_at.expect("it ended") - requested;
        assert!((0..=limit).contains(&took), "call {} stopped {took} ms after the cancel", attempt.seq);
    }
    worker.signal("TERM");
    assert_eq!(worker.wait_for_exit(Duration::from_secs(60)), Some(0), "{}", worker.stderr());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fan_out_is_cancelled_as_one_on_postgres() {
    let db = PostgresDb::create().await;
    Journal::open(&db.url).await.expect("the journal is created");
    cancel_a_fan_out(&db.url, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fan_out_is_cancelled_as_one_on_sqlite() {
    let scratch = Scratch::new();
    let journal = scratch.journal();
    Journal::open(&journal).await.expect("the journal is created");
    cancel_a_fan_out(&journal, false).await;
}
