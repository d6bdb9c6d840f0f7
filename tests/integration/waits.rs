//! Workflows that wait, through the real binary on SQLite and PostgreSQL:
//! durable sleeps across a SIGKILL, messages received exactly once and in
//! order through kills, `recv` timeouts, events read while a workflow runs
//! and after it ends, sends between workflows, and bad sends.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stepbox::journal::Journal;

use crate::support::{Child, PostgresDb, Run, Scratch, artifacts, eventually, host_command, rows};

/// `host … --journal JOURNAL` in `scratch`.
fn host(scratch: &Scratch, journal: &str, args: &[&str]) -> Run {
    let mut all = args.to_vec();
    all.extend(["--journal", journal]);
    host_command(scratch.path(), &all)
}

/// `host run waiter.wasm --invoke ENTRY ARGS… --id ID` in the background.
fn start(scratch: &Scratch, journal: &str, id: &str, entry: &[&str]) -> Child {
    let mut args = vec!["run", artifacts::WAITER, "--step", artifacts::FLAKY, "--interval", "10ms", "--invoke"];
    args.extend(entry);
    args.extend(["--id", id, "--journal", journal, "--lease", "1s"]);
    Child::spawn(scratch.path(), &args)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(0))
}

/// Waits until workflow `id` has `calls` calls ended in the journal.
async fn until_calls_ended(journal: &str, id: &str, calls: usize, child: &Child) {
    let done = eventually(Duration::from_secs(30), || async {
        rows(journal, id).await.calls.iter().filter(|call| call.finished_at.is_some()).count() >= calls
    })
    .await;
    assert!(done, "workflow {id} never ended {calls} call(s):\n{}", child.stderr());
}

/// A sleep of 3 s, SIGKILLed after 1 s and resumed: it wakes 3 s after it
/// first slept, not 3 s after the resume; the workflow's clock says 3 s.
async fn sleep_through_a_kill(journal: &str) {
    let scratch = Scratch::new();
    let mut child = start(&scratch, journal, "nap-1", &["nap", "3000"]);
    let started =
        eventually(Duration::from_secs(20), || async { !rows(journal, "nap-1").await.calls.is_empty() }).await;
    assert!(started, "the sleep never started:\n{}", child.stderr());
    tokio::time::sleep(Duration::from_secs(1)).await;
    child.kill();
    crate::support::until_lease_lapsed(journal, "nap-1").await;
    let resumed_at = now_ms();
    let resume = host(&scratch, journal, &["resume", "nap-1"]);
    let output: i64 = resume.success().trim().parse().expect("nap returns a number");
    let rows = rows(journal, "nap-1").await;
    let sleep = &rows.calls[0];
    assert_eq!((sleep.step.as_str(), sleep.input.as_str()), ("stepbox:runtime/workflow-context.sleep", "(3000)"));
    let woke = sleep.finished_at.expect("the sleep ended") - sleep.started_at;
    eprintln!("slept {woke} ms of 3000 (resumed {} ms after it first slept)", resumed_at - sleep.started_at);
    // Never early; late only by a loaded host's noise, and not by the time the process was down.
    assert!((3000..4000).contains(&woke), "woke {woke} ms after it first slept");
    assert!(
        sleep.finished_at.unwrap_or_default() < resumed_at + 2500,
        "it slept 3 s from the resume, not from the start"
    );
    // The workflow's clock moved from its start to the due time: the same on every replay.
    let journal_handle = Journal::open_existing(journal).await.expect("journal");
    let created = journal_handle.workflow("nap-1").await.expect("row").expect("exists").created_at.millis();
    assert_eq!(output, sleep.started_at + 3000 - created, "the workflow's wall clock reads its due time");
    let replayed = host(&scratch, journal, &["resume", "nap-1"]);
    assert_eq!(replayed.success().trim(), output.to_string(), "a finished workflow returns its recorded output");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sleep_survives_a_kill_and_wakes_when_first_due_on_sqlite() {
    let scratch = Scratch::new();
    sleep_through_a_kill(&scratch.journal()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sleep_survives_a_kill_and_wakes_when_first_due_on_postgres() {
    let db = PostgresDb::create().await;
    sleep_through_a_kill(&db.url).await;
}

/// Five messages sent before, during and after the waits, the workflow
/// SIGKILLed twice in between: each received once, in the order sent.
async fn messages_through_kills(journal: &str) {
    let scratch = Scratch::new();
    let send = |value: &str| {
        let sent = host(&scratch, journal, &["send", "inbox", "orders", value]);
        assert_eq!(sent.code, Some(0), "send {value}: {}", sent.stderr);
    };
    let mut child = start(&scratch, journal, "inbox", &["collect", "\"orders\"", "5", "60000"]);
    let exists =
        eventually(Duration::from_secs(20), || async { rows(journal, "inbox").await.workflow.is_some() }).await;
    assert!(exists, "the workflow never started:\n{}", child.stderr());
    // Before its first recv (or as it starts waiting), and one on another topic it never takes.
    send("\"m1\"");
    send("{\"n\": 2}");
    let other = host(&scratch, journal, &["send", "inbox", "refunds", "\"not mine\""]);
    assert_eq!(other.code, Some(0), "{}", other.stderr);
    until_calls_ended(journal, "inbox", 2, &child).await;
    child.kill();
    crate::support::until_lease_lapsed(journal, "inbox").await;
    // While nobody runs it.
    send("\"m3\"");
    let mut resumed = Child::spawn(scratch.path(), &["resume", "inbox", "--journal", journal, "--lease", "1s"]);
    until_calls_ended(journal, "inbox", 3, &resumed).await;
    // During its wait.
    send("\"m4\"");
    until_calls_ended(journal, "inbox", 4, &resumed).await;
    resumed.kill();
    crate::support::until_lease_lapsed(journal, "inbox").await;
    send("\"m5\"");
    let last = host(&scratch, journal, &["resume", "inbox"]);
    assert_eq!(last.success(), r#"["\"m1\"", "{\"n\": 2}", "\"m3\"", "\"m4\"", "\"m5\""]"#);
    let journal_handle = Journal::open_existing(journal).await.expect("journal");
    let messages = journal_handle.messages("inbox").await.expect("messages");
    let received: Vec<(String, Option<i64>)> =
        messages.iter().map(|message| (message.topic.clone(), message.received_seq)).collect();
    assert_eq!(
        received,
        [
            ("orders".to_string(), Some(1)),
            ("orders".to_string(), Some(2)),
            ("refunds".to_string(), None),
            ("orders".to_string(), Some(3)),
            ("orders".to_string(), Some(4)),
            ("orders".to_string(), Some(5)),
        ],
        "each message received once, by the recv calls in order; the other topic's never"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_are_received_once_and_in_order_through_kills_on_sqlite() {
    let scratch = Scratch::new();
    messages_through_kills(&scratch.journal()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_are_received_once_and_in_order_through_kills_on_postgres() {
    let db = PostgresDb::create().await;
    messages_through_kills(&db.url).await;
}

/// A `recv` nobody sends to returns none at its timeout, journaled.
async fn recv_times_out(journal: &str) {
    let scratch = Scratch::new();
    let run = host(
        &scratch,
        journal,
        &["run", artifacts::WAITER, "--step", artifacts::FLAKY, "--invoke", "approval", "\"approve\"", "1500"],
    );
    assert_eq!(run.success(), "\"timeout\"");
    let id = run.stderr.split("Workflow ").nth(1).and_then(|rest| rest.split(' ').next()).expect("the id is logged");
    let call = &rows(journal, id).await.calls[0];
    let waited = call.finished_at.expect("ended") - call.started_at;
    assert!((1500..2500).contains(&waited), "the recv waited {waited} ms of its 1500 ms timeout");
    assert_eq!(call.output.as_deref(), Some("none"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recv_returns_none_at_its_timeout_on_sqlite() {
    let scratch = Scratch::new();
    recv_times_out(&scratch.journal()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recv_returns_none_at_its_timeout_on_postgres() {
    let db = PostgresDb::create().await;
    recv_times_out(&db.url).await;
}

/// `host event` reads a published value while the workflow runs (waiting
/// for it) and after it ends; what is not published says so.
async fn events_while_running_and_after(journal: &str) {
    let scratch = Scratch::new();
    let mut child = start(&scratch, journal, "prog", &["progress", "3", "700"]);
    let exists = eventually(Duration::from_secs(20), || async { rows(journal, "prog").await.workflow.is_some() }).await;
    assert!(exists, "the workflow never started:\n{}", child.stderr());
    let early = host(&scratch, journal, &["event", "prog", "progress"]);
    assert_eq!(early.code, Some(3), "not published yet: {}", early.stderr);
    assert!(early.stderr.contains("has not published \"progress\" yet"), "{}", early.stderr);
    let first = host(&scratch, journal, &["event", "prog", "progress", "--wait", "20s", "-o", "json"]);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let value: serde_json::Value = serde_json::from_str(&first.stdout).expect("JSON");
    assert_eq!(value["status"], "running", "read while it runs: {value}");
    assert!((1..=3).contains(&value["value"]["done"].as_i64().unwrap_or(0)), "{value}");
    assert_eq!(child.wait_for_exit(Duration::from_secs(30)), Some(0), "{}", child.stderr());
    let last = host(&scratch, journal, &["event", "prog", "progress"]);
    assert_eq!((last.code, last.stdout.trim()), (Some(0), r#"{"done": 3, "of": 3}"#), "{}", last.stderr);
    let result = host(&scratch, journal, &["event", "prog", "result", "--wait", "1s"]);
    assert_eq!(result.stdout.trim(), "\"done\"");
    let never = host(&scratch, journal, &["event", "prog", "nothing", "--wait", "5s"]);
    assert!(never.refused().contains("published no event \"nothing\" and has ended (succeeded)"), "{}", never.stderr);
    let unknown = host(&scratch, journal, &["event", "nobody", "progress"]);
    assert!(unknown.refused().contains("no workflow nobody"), "{}", unknown.stderr);
    // set-event refuses what is not JSON, as a value the workflow handles.
    let bad = host(
        &scratch,
        journal,
        &["run", artifacts::WAITER, "--step", artifacts::FLAKY, "--invoke", "publish", "\"k\"", "\"{not json\""],
    );
    assert!(bad.success().starts_with("err(\"the value is not JSON text"), "{}", bad.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn events_are_read_while_a_workflow_runs_and_after_it_ends_on_sqlite() {
    let scratch = Scratch::new();
    events_while_running_and_after(&scratch.journal()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_are_read_while_a_workflow_runs_and_after_it_ends_on_postgres() {
    let db = PostgresDb::create().await;
    events_while_running_and_after(&db.url).await;
}

/// A workflow sends to another; sends to nobody, to an ended workflow and of
/// what is not JSON are refused clearly, from a workflow and from outside; a
/// repeated idempotency key is accepted once.
#[tokio::test(flavor = "multi_thread")]
async fn workflows_send_to_each_other_and_bad_sends_are_clear() {
    let scratch = Scratch::new();
    let journal = scratch.journal();
    let journal = journal.as_str();
    let mut waiting = start(&scratch, journal, "b", &["approval", "\"go\"", "60000"]);
    let exists = eventually(Duration::from_secs(20), || async { !rows(journal, "b").await.calls.is_empty() }).await;
    assert!(exists, "b never waited:\n{}", waiting.stderr());
    let relay = |id: &str, to: &str, value: &str| {
        let to = format!("{to:?}");
        let value = format!("{value:?}");
        host(
            &scratch,
            journal,
            &[
                "run",
                artifacts::WAITER,
                "--step",
                artifacts::FLAKY,
                "--invoke",
                "relay",
                &to,
                "\"go\"",
                &value,
                "--id",
                id,
            ],
        )
    };
    assert_eq!(relay("a1", "b", "{\"approved\": true}").success(), "ok");
    assert_eq!(waiting.wait_for_exit(Duration::from_secs(20)), Some(0), "{}", waiting.stderr());
    let result = host(&scratch, journal, &["result", "b"]);
    assert_eq!(result.stdout.trim(), r#""{\"approved\": true}""#);
    let journal_handle = Journal::open_existing(journal).await.expect("journal");
    let messages = journal_handle.messages("b").await.expect("messages");
    assert_eq!((messages.len(), messages[0].sender.as_str()), (1, "a1"), "the sender is the sending workflow");
    assert_eq!(relay("a2", "nobody", "1").success(), r#"err("no workflow nobody to send to")"#);
    assert!(relay("a3", "b", "1").success().starts_with(r#"err("workflow b has ended (succeeded)"#));
    assert!(relay("a4", "a1", "{oops").success().starts_with(r#"err("the value is not JSON text"#));
    // A finished sender replays its send from the journal: nothing is sent again.
    assert_eq!(relay("a1", "b", "{\"approved\": true}").success(), "ok");
    assert_eq!(journal_handle.messages("b").await.expect("messages").len(), 1);

    // From outside.
    let mut open = start(&scratch, journal, "c", &["approval", "\"go\"", "60000"]);
    let exists = eventually(Duration::from_secs(20), || async { !rows(journal, "c").await.calls.is_empty() }).await;
    assert!(exists, "c never waited:\n{}", open.stderr());
    assert!(host(&scratch, journal, &["send", "nobody", "go", "1"]).refused().contains("no workflow nobody"));
    assert!(host(&scratch, journal, &["send", "b", "go", "1"]).refused().contains("already ended: succeeded"));
    assert!(host(&scratch, journal, &["send", "c", "go", "{oops"]).refused().contains("not JSON text"));
    let keyed = ["send", "c", "later", "7", "--idempotency-key", "k1", "-o", "json"];
    let first: serde_json::Value = serde_json::from_str(&host(&scratch, journal, &keyed).stdout).expect("JSON");
    let second: serde_json::Value = serde_json::from_str(&host(&scratch, journal, &keyed).stdout).expect("JSON");
    assert_eq!((first["duplicate"].as_bool(), second["duplicate"].as_bool()), (Some(false), Some(true)));
    assert_eq!(first["message"], second["message"], "the repeat names the first message");
    let go = host(&scratch, journal, &["send", "c", "go", "\"now\""]);
    assert_eq!(go.code, Some(0), "{}", go.stderr);
    assert_eq!(open.wait_for_exit(Duration::from_secs(20)), Some(0), "{}", open.stderr());
    let sent: Vec<String> =
        journal_handle.messages("c").await.expect("messages").into_iter().map(|message| message.sender).collect();
    assert_eq!(sent, ["host", "host"], "one keyed message and the one received");
}

/// Workflows submitted to a queue: `count` of `nap(ms)`, through a client in this process.
async fn submit_naps(url: &str, count: usize, ms: &str) -> Vec<String> {
    use stepbox::config::SettingsLayer;
    use stepbox::run::RunSpec;
    use stepbox::worker::{Client, SubmitRequest};
    let journal = Journal::open(url).await.expect("the journal opens");
    let engine = stepbox::wasm::new_engine().expect("the engine starts");
    let loader = stepbox::wasm::ComponentLoader::new(&engine, Some(crate::support::shared_cache()));
    let client = Client::new(journal, loader);
    let spec = RunSpec {
        workflow: artifacts::WAITER.into(),
        steps: vec![artifacts::FLAKY.into()],
        invoke: Some("nap".into()),
        cli_settings: SettingsLayer::default(),
        ..RunSpec::default()
    };
    let submittable = client.prepare(&spec).await.expect("submittable");
    let mut ids = Vec::new();
    for _ in 0..count {
        let request = SubmitRequest { arguments: vec![ms.to_string()], ..SubmitRequest::default() };
        ids.push(client.submit(&submittable, &request).await.expect("submitted").id);
    }
    ids
}

/// Sleeping workflows on workers give their slots back (`waiting`, no
/// worker running them) and wake within a second of their due time.
async fn sleepers_free_their_slots(url: &str, count: usize, workers: usize) {
    let scratch = Scratch::new();
    let ids = submit_naps(url, count, "5000").await;
    let args = ["worker", "--journal", url, "--park-after", "1s", "--concurrency", "50", "--poll-interval", "200ms"];
    let mut running: Vec<Child> = (0..workers).map(|_| Child::spawn(scratch.path(), &args)).collect();
    let mut table = crate::support::rows::Rows::open(url).await;
    // All asleep: waiting, none enqueued or running.
    let asleep = eventually(Duration::from_secs(60), || async {
        let (waiting, other): (i64, i64) = crate::support::rows::Rows::open(url)
            .await
            .one(
                "SELECT count(*) FILTER (WHERE status = 'waiting'), \
                 count(*) FILTER (WHERE status <> 'waiting') FROM workflows",
                &[],
            )
            .await;
        waiting == count as i64 && other == 0
    })
    .await;
    assert!(asleep, "the workflows never all slept:\n{}", running[0].stderr());
    let listed = host_command(scratch.path(), &["workers", "-o", "json", "--journal", url]);
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout).expect("workers JSON");
    let held: i64 = listed["workers"].as_array().expect("workers").iter().filter_map(|w| w["running"].as_i64()).sum();
    assert_eq!(held, 0, "no worker holds a sleeping workflow: {listed}");
    let waiting =
        host_command(scratch.path(), &["list", "--status", "waiting", "--limit", "1", "-o", "json", "--journal", url]);
    let waiting: serde_json::Value = serde_json::from_str(&waiting.stdout).expect("list JSON");
    assert_eq!(waiting["workflows"][0]["waiting_for"], "sleep", "{waiting}");
    let all_done = eventually(Duration::from_secs(120), || async {
        let done: i64 = crate::support::rows::Rows::open(url)
            .await
            .value("SELECT count(*) FROM workflows WHERE status = 'succeeded'", &[])
            .await;
        done == count as i64
    })
    .await;
    assert!(all_done, "not all woke and finished:\n{}", running[0].stderr());
    let lateness: Vec<(String, i64)> = table
        .all("SELECT workflow_id, MS(finished_at) - MS(started_at) - 5000 FROM step_calls ORDER BY 2 DESC", &[])
        .await;
    assert_eq!(lateness.len(), ids.len());
    let (median, worst) = (lateness[lateness.len() / 2].1, lateness[0].1);
    eprintln!("{count} sleepers woke {median} ms late (median), {worst} ms at worst");
    assert!(lateness.iter().all(|(_, late)| *late >= 0), "none woke early: {lateness:?}");
    assert!(worst < 1000, "each woke within a second of its due time; the latest {worst} ms late");
    for worker in &mut running {
        worker.signal("TERM");
        assert_eq!(worker.wait_for_exit(Duration::from_secs(30)), Some(0), "{}", worker.stderr());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn five_hundred_sleepers_on_two_workers_hold_no_slot_and_wake_on_time() {
    let db = PostgresDb::create().await;
    sleepers_free_their_slots(&db.url, 500, 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sleepers_on_a_sqlite_worker_hold_no_slot_and_wake_on_time() {
    let scratch = Scratch::new();
    sleepers_free_their_slots(&scratch.journal(), 50, 1).await;
}
