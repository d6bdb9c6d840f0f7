//! Workers and queues with real processes: `host worker` processes share
//! queues, one is SIGKILLed and one SIGSTOPped past its lease; limits,
//! priorities, dedup, delayed starts, durable timers, cancel and graceful
//! shutdown, each checked from the journal's rows and timestamps. Each
//! scenario runs on PostgreSQL with LISTEN/NOTIFY on a direct connection,
//! with `--poll-only` through a real pgbouncer in transaction mode, and on a
//! SQLite journal file shared by the worker processes (polling).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use sqlx::Connection as _;

use stepbox::config::{Setting, SettingsLayer};
use stepbox::journal::{Journal, QueueLimits};
use stepbox::run::RunSpec;
use stepbox::wasm::ComponentLoader;
use stepbox::worker::{Client, SubmitRequest, Submittable};

use crate::support::pgbouncer::Pgbouncer;
use crate::support::rows::Rows;
use crate::support::{Child, PostgresDb, Scratch, artifacts, host_command, most_at_once, shared_cache};

/// Where the workers of a test reach the journal.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Wakeups {
    /// A direct connection: LISTEN/NOTIFY.
    Notify,
    /// Through pgbouncer in transaction mode, `--poll-only`.
    PollThroughPgbouncer,
    /// A SQLite journal file the worker processes share; they poll.
    Sqlite,
}

/// One test's service: its database, the URL workers and clients use, scratch space.
struct Service {
    /// The PostgreSQL database (none on SQLite), dropped with the test.
    _db: Option<PostgresDb>,
    /// The journal itself, for direct reads (the database, never the pooler).
    direct: String,
    /// Where workers and clients reach the journal.
    url: String,
    mode: Wakeups,
    scratch: Scratch,
    _bouncer: Option<Pgbouncer>,
}

impl Service {
    async fn new(mode: Wakeups) -> Self {
        let scratch = Scratch::new();
        if mode == Wakeups::Sqlite {
            let path = scratch.journal();
            Journal::open(&path).await.expect("the journal is created");
            return Self { _db: None, direct: path.clone(), url: path, mode, scratch, _bouncer: None };
        }
        let db = PostgresDb::create().await;
        // The schema is made on a direct connection (never through a transaction pooler).
        Journal::open(&db.url).await.expect("the journal is created");
        let (url, bouncer) = match mode {
            Wakeups::PollThroughPgbouncer => {
                let bouncer = Pgbouncer::start();
                let database = db.url.rsplit('/').next().expect("a database name").to_string();
                (bouncer.url(&database), Some(bouncer))
            }
            _ => (db.url.clone(), None),
        };
        Self { direct: db.url.clone(), _db: Some(db), url, mode, scratch, _bouncer: bouncer }
    }

    /// Starts `host worker` with `args` (and `--poll-only` through the pooler).
    fn worker(&self, args: &[&str]) -> Child {
        let mut all = vec!["worker", "--journal", &self.url];
        match self.mode {
            Wakeups::PollThroughPgbouncer => all.extend(["--poll-only", "--poll-interval", "200ms"]),
            Wakeups::Sqlite => all.extend(["--poll-interval", "100ms"]),
            Wakeups::Notify => {}
        }
        all.extend(args);
        Child::spawn(self.scratch.path(), &all)
    }

    /// A client of this service for `queue-chain.wasm` with the flaky and hostile steps, retries `interval` apart.
    async fn chain(&self, interval: &str) -> (Client, Submittable) {
        let journal = Journal::open(&self.url).await.expect("the journal opens");
        let engine = stepbox::wasm::new_engine().expect("the engine starts");
        let client = Client::new(journal, ComponentLoader::new(&engine, Some(shared_cache())));
        let cli_settings =
            SettingsLayer::from_flags([(Setting::Interval, interval), (Setting::MaxAttempts, "5")]).expect("flags");
        let spec = RunSpec {
            workflow: artifacts::QUEUE_CHAIN.into(),
            steps: vec![artifacts::FLAKY.into(), artifacts::HOSTILE.into()],
            invoke: Some("chain".into()),
            cli_settings,
            ..RunSpec::default()
        };
        let submittable = client.prepare(&spec).await.expect("the chain workflow is submittable");
        (client, submittable)
    }

    /// A direct connection for reading the journal's rows.
    async fn rows(&self) -> Rows {
        Rows::open(&self.direct).await
    }

    /// SIGSTOPs `worker` for at least four of its 1 s leases and until another worker has taken
    /// over one of its workflows (an executor other than `pattern` on a workflow it ran attempts of).
    /// On SQLite a process stopped inside a write transaction keeps the file's write lock, so no
    /// one can take anything over until it is continued: the stop is then undone and tried again.
    async fn stall_until_taken_over(&self, worker: &Child, pattern: &str) {
        for _ in 0..50 {
            worker.signal("STOP");
            if self.mode != Wakeups::Sqlite || sqlite_writable(&self.direct).await {
                break;
            }
            worker.signal("CONT");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let stopped = Instant::now();
        let mut rows = self.rows().await;
        loop {
            if taken_over(&mut rows, pattern).await > 0 && stopped.elapsed() >= Duration::from_secs(4) {
                break;
            }
            assert!(stopped.elapsed() < Duration::from_secs(90), "no worker took over the stalled worker's workflows");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        worker.signal("CONT");
    }

    /// Waits until no workflow of the journal is enqueued, delayed or running.
    async fn all_finished(&self, timeout: Duration, workers: &[&Child]) {
        let deadline = Instant::now() + timeout;
        let mut rows = self.rows().await;
        loop {
            let live: i64 = rows
                .value("SELECT count(*) FROM workflows WHERE status IN ('enqueued', 'delayed', 'running')", &[])
                .await;
            if live == 0 {
                return;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = workers.iter().map(|worker| worker.stderr()).collect();
                panic!("{live} workflow(s) still live after {timeout:?}; worker logs:\n{}", logs.join("\n----\n"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn submit_args(arguments: &[String]) -> SubmitRequest {
    SubmitRequest { arguments: arguments.to_vec(), ..SubmitRequest::default() }
}

/// The `chain` entry's arguments.
fn chain(tag: u32, calls: u32, fail_times: u32, nap_ms: u64) -> Vec<String> {
    vec![tag.to_string(), calls.to_string(), fail_times.to_string(), nap_ms.to_string()]
}

/// Submits one workflow; its id.
async fn submit(client: &Client, what: &Submittable, request: SubmitRequest) -> String {
    client.submit(what, &request).await.expect("submitted").id
}

/// The executor id a worker process writes (`host:PID:nonce`) contains `:PID:`.
fn by(worker: &Child) -> String {
    format!(":{}:", worker.process.id())
}

/// How many workflows the worker whose executor id matches `pattern` ran
/// attempts of are now another's.
async fn taken_over(rows: &mut Rows, pattern: &str) -> i64 {
    rows.value(
        "SELECT count(DISTINCT w.id) FROM workflows w WHERE w.executor NOT LIKE $1 AND EXISTS \
         (SELECT 1 FROM step_attempts s WHERE s.workflow_id = w.id AND s.executor LIKE $1)",
        &[pattern],
    )
    .await
}

/// Whether a write transaction on the SQLite journal at `path` can begin within 300 ms.
async fn sqlite_writable(path: &str) -> bool {
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path).busy_timeout(Duration::from_millis(300));
    let mut connection = sqlx::SqliteConnection::connect_with(&options).await.expect("the journal file opens");
    let writable = sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut connection).await.is_ok();
    if writable {
        sqlx::raw_sql("ROLLBACK").execute(&mut connection).await.expect("the probe's transaction ends");
    }
    writable
}

/// Stops a worker with SIGTERM and expects a clean exit.
fn stop(worker: &mut Child) {
    worker.signal("TERM");
    let code = worker.wait_for_exit(Duration::from_secs(60));
    let log = worker.stderr();
    assert_eq!(code, Some(0), "the worker stops cleanly:\n{log}");
    assert!(!log.contains("panicked"), "the worker panicked:\n{log}");
}

/// One attempt as the fencing checks read it (times in milliseconds).
#[derive(Debug, sqlx::FromRow)]
struct AttemptRow {
    workflow_id: String,
    seq: i64,
    attempt: i32,
    executor: String,
    started: i64,
    finished: Option<i64>,
    outcome: Option<String>,
}

/// Checks the journal's attempts: exactly one ok attempt per call, attempts
/// numbered 1.., and no attempt of a call starting before the previous one
/// ended. Returns the calls whose attempts were written by more than one executor.
async fn exact_attempts(service: &Service) -> usize {
    let rows: Vec<AttemptRow> = service
        .rows()
        .await
        .all(
            "SELECT workflow_id, seq, attempt, executor, MS(started_at) AS started, MS(finished_at) AS finished, \
             outcome FROM step_attempts ORDER BY workflow_id, seq, attempt",
            &[],
        )
        .await;
    let mut calls: BTreeMap<(String, i64), Vec<_>> = BTreeMap::new();
    for row in rows {
        calls.entry((row.workflow_id.clone(), row.seq)).or_default().push(row);
    }
    let mut handed_over = 0;
    for ((workflow, seq), attempts) in &calls {
        let oks = attempts.iter().filter(|row| row.outcome.as_deref() == Some("ok")).count();
        assert_eq!(oks, 1, "workflow {workflow} call {seq}: one ok attempt, got {attempts:#?}");
        let numbers: Vec<i32> = attempts.iter().map(|row| row.attempt).collect();
        assert_eq!(numbers, (1..=attempts.len() as i32).collect::<Vec<_>>(), "{workflow} call {seq}");
        for pair in attempts.windows(2) {
            if let Some(finished) = pair[0].finished {
                assert!(
                    finished <= pair[1].started,
                    "workflow {workflow} call {seq}: attempt {} started before attempt {} ended: {pair:#?}",
                    pair[1].attempt,
                    pair[0].attempt
                );
            }
        }
        if attempts.iter().map(|row| &row.executor).collect::<HashSet<_>>().len() > 1 {
            handed_over += 1;
        }
    }
    handed_over
}

/// 3 workers, `count` workflows of 3 flaky calls and 3 naps each; worker A
/// is SIGKILLed mid-run, worker B SIGSTOPped well past its lease and continued.
async fn kill_and_stall(mode: Wakeups, count: u32) {
    let service = Service::new(mode).await;
    // Retries wait 200 ms, so a call between its failed attempt and its retry is easy to catch.
    let (client, chain_workflow) = service.chain("200ms").await;
    let mut ids = BTreeMap::new();
    for tag in 0..count {
        let id = submit(&client, &chain_workflow, submit_args(&chain(tag, 3, 1, 150))).await;
        ids.insert(id, tag);
    }
    let lease = ["--lease", "1s", "--concurrency", "10"];
    let mut a = service.worker(&lease);
    let mut b = service.worker(&lease);
    let mut c = service.worker(&lease);
    let mut rows = service.rows().await;
    // Once A and B are busy, each with a call waiting to retry: kill A, stall B for four leases.
    let (a_pattern, b_pattern) = (format!("%{}%", by(&a)), format!("%{}%", by(&b)));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (a_started, b_started, a_retrying, b_retrying): (i64, i64, i64, i64) = rows.one(
            "SELECT count(*) FILTER (WHERE executor LIKE $1), count(*) FILTER (WHERE executor LIKE $2), \
             count(*) FILTER (WHERE executor LIKE $1 AND retrying), count(*) FILTER (WHERE executor LIKE $2 AND retrying) \
             FROM (SELECT executor, outcome = 'failed' AND NOT EXISTS (SELECT 1 FROM step_attempts o \
             WHERE o.workflow_id = s.workflow_id AND o.seq = s.seq AND o.attempt > s.attempt) AS retrying \
             FROM step_attempts s) AS attempts",
            &[&a_pattern, &b_pattern],
        )
        .await;
        if a_started >= 20 && b_started >= 20 && a_retrying > 0 && b_retrying > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "workers A and B never got busy:\n{}\n{}", a.stderr(), b.stderr());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill();
    service.stall_until_taken_over(&b, &b_pattern).await;
    service.all_finished(Duration::from_secs(180), &[&b, &c]).await;

    // Every workflow finished with the output its arguments call for.
    let finished: Vec<(String, String, Option<String>, Option<String>)> =
        rows.all("SELECT id, status, output, error FROM workflows", &[]).await;
    assert_eq!(finished.len(), count as usize);
    for (id, status, output, error) in &finished {
        let tag = ids[id];
        let expected = format!("ok({})", tag * 1000 + 6);
        assert_eq!(
            (status.as_str(), output.as_deref()),
            ("succeeded", Some(expected.as_str())),
            "workflow {id}: {error:?}"
        );
    }
    let calls: i64 = rows.value("SELECT count(*) FROM step_calls", &[]).await;
    assert_eq!(calls, i64::from(count) * 6, "3 flaky calls and 3 naps per workflow");
    let handed_over = exact_attempts(&service).await;
    assert!(handed_over > 0, "some calls were continued by another worker after the kill or the stall");
    // The killed worker's and the stalled worker's workflows went to others.
    for (worker, name) in [(&a_pattern, "killed"), (&b_pattern, "stalled")] {
        assert!(
            taken_over(&mut rows, worker).await > 0,
            "no workflow of the {name} worker was finished by another one; C's log:\n{}",
            c.stderr().lines().filter(|line| line.contains("(host)")).collect::<Vec<_>>().join("\n")
        );
    }
    // The stalled worker woke up past its leases' deadlines: it stopped them, said so, and then said
    // where each stands now, never that one can be resumed or is dead.
    let b_log = b.stderr();
    // Woken, it either finds its leases past their local deadline first or hears at its next renewal
    // that they were taken over: which comes first is up to the scheduler.
    assert!(
        b_log.contains("its lease could not be renewed within")
            || b_log.contains("another executor took over its lease"),
        "the stalled worker noticed:\n{b_log}"
    );
    assert!(
        b_log.contains("It was taken over by") || b_log.contains("It was handed back to its queue"),
        "the stalled worker said who has its workflows now:\n{b_log}"
    );
    assert!(!b_log.contains("marked dead") && !b_log.contains("can be resumed"), "{b_log}");
    stop(&mut b);
    stop(&mut c);
    let (workers, stopped): (i64, i64) = rows.one("SELECT count(*), count(stopped_at) FROM workers", &[]).await;
    assert_eq!((workers, stopped), (3, 2), "one row per worker process; B and C stopped cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn three_workers_finish_300_flaky_workflows_through_a_kill_and_a_stall() {
    kill_and_stall(Wakeups::Notify, 300).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn poll_only_through_pgbouncer_three_workers_finish_through_a_kill_and_a_stall() {
    kill_and_stall(Wakeups::PollThroughPgbouncer, 120).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_three_workers_finish_through_a_kill_and_a_stall() {
    kill_and_stall(Wakeups::Sqlite, 60).await;
}

/// Global and per-partition concurrency across two workers, from the naps' journal times.
async fn limits_hold(mode: Wakeups) {
    let service = Service::new(mode).await;
    let journal = Journal::open(&service.url).await.expect("journal");
    journal
        .set_queue(&QueueLimits {
            name: "limited".into(),
            concurrency: Some(3),
            partition_concurrency: Some(1),
            ..QueueLimits::default()
        })
        .await
        .expect("queue set");
    let (client, chain_workflow) = service.chain("10ms").await;
    for tag in 0..16u32 {
        let request = SubmitRequest {
            queue: Some("limited".into()),
            partition_key: Some(format!("tenant-{}", tag % 4)),
            ..submit_args(&chain(tag, 1, 0, 250))
        };
        submit(&client, &chain_workflow, request).await;
    }
    // A runs one at a time, so B must take part (A alone would need 4 s); B alone could run 10 at once,
    // so only the queue's count across workers keeps the two at 3.
    let a_args = ["--queue", "limited", "--concurrency", "1"];
    let b_args = ["--queue", "limited", "--concurrency", "10"];
    let (mut a, mut b) = (service.worker(&a_args), service.worker(&b_args));
    service.all_finished(Duration::from_secs(60), &[&a, &b]).await;
    // Each workflow's running time: its claim to its end, from the journal.
    let rows: Vec<(String, i64, i64, String)> = service
        .rows()
        .await
        .all("SELECT partition_key, MS(started_at), MS(finished_at), executor FROM workflows", &[])
        .await;
    let all: Vec<(i64, i64)> = rows.iter().map(|row| (row.1, row.2)).collect();
    assert_eq!(most_at_once(&all), 3, "the queue ran 3 at once, never more: {rows:#?}");
    for tenant in 0..4 {
        let key = format!("tenant-{tenant}");
        let mine: Vec<(i64, i64)> = rows.iter().filter(|row| row.0 == key).map(|row| (row.1, row.2)).collect();
        assert_eq!(most_at_once(&mine), 1, "partition {key} ran one at a time");
    }
    let executors: HashSet<&str> = rows.iter().map(|row| row.3.as_str()).collect();
    assert_eq!(executors.len(), 2, "both workers took part");
    stop(&mut a);
    stop(&mut b);
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_limits_hold_across_workers() {
    limits_hold(Wakeups::Notify).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn poll_only_through_pgbouncer_queue_limits_hold_across_workers() {
    limits_hold(Wakeups::PollThroughPgbouncer).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_queue_limits_hold_across_workers() {
    limits_hold(Wakeups::Sqlite).await;
}

/// Priorities, a start-rate limit, dedup keys and delayed starts, through the CLI.
async fn order_rate_dedup_delay(mode: Wakeups) {
    let service = Service::new(mode).await;
    let dir = service.scratch.path();
    let url = service.url.as_str();
    let submit_cli = |extra: &[&str]| {
        let mut args = vec![
            "submit",
            artifacts::QUEUE_CHAIN,
            "--step",
            artifacts::FLAKY,
            "--step",
            artifacts::HOSTILE,
            "--invoke",
            "chain",
            "--journal",
            url,
        ];
        args.extend(extra);
        let run = host_command(dir, &args);
        assert_eq!(run.code, Some(0), "submit: {}", run.stderr);
        run.stdout.trim().to_string()
    };
    // Priorities: submitted out of order, one at a time on a queue of concurrency 1.
    let queue = host_command(dir, &["queue", "set", "serial", "--concurrency", "1", "--journal", url]);
    assert_eq!(queue.code, Some(0), "{}", queue.stderr);
    let mut by_priority = BTreeMap::new();
    for priority in [5, 1, 4, 2, 3] {
        let tag = priority.to_string();
        let id = submit_cli(&["--queue", "serial", "--priority", &tag, &tag, "1", "0", "0"]);
        by_priority.insert(priority, id);
    }
    // Rate: 2 first starts per second.
    let rated = host_command(dir, &["queue", "set", "rated", "--rate", "2/1s", "--journal", url]);
    assert_eq!(rated.code, Some(0), "{}", rated.stderr);
    for tag in 0..6 {
        submit_cli(&["--queue", "rated", &tag.to_string(), "1", "0", "0"]);
    }
    // Dedup: one live workflow per key.
    let first = submit_cli(&["--dedup", "invoice-7", "70", "1", "0", "300"]);
    let second = submit_cli(&["--dedup", "invoice-7", "71", "1", "0", "0"]);
    assert_eq!(first, second, "a second submit with a live key returns the first id");
    // A delayed start.
    let submitted = Instant::now();
    let delayed = submit_cli(&["--delay", "2s", "80", "1", "0", "0"]);
    let listed = host_command(dir, &["queue", "list", "-o", "json", "--journal", url]);
    let queues: serde_json::Value = serde_json::from_str(&listed.stdout).expect("queue list JSON");
    let default =
        queues["queues"].as_array().unwrap().iter().find(|queue| queue["name"] == "default").expect("default queue");
    assert_eq!((default["ready"].as_i64(), default["delayed"].as_i64()), (Some(1), Some(1)), "{queues}");

    let mut worker = service.worker(&["--queue", "serial", "--queue", "rated", "--queue", "default"]);
    service.all_finished(Duration::from_secs(60), &[&worker]).await;
    let mut rows = service.rows().await;
    let order: Vec<String> = rows
        .all::<(String,)>("SELECT id FROM workflows WHERE queue = 'serial' ORDER BY started_at", &[])
        .await
        .into_iter()
        .map(|(id,)| id)
        .collect();
    assert_eq!(order, by_priority.values().cloned().collect::<Vec<_>>(), "lower priority values ran first");
    let starts: Vec<i64> = rows
        .all::<(i64,)>("SELECT MS(started_at) FROM workflows WHERE queue = 'rated' ORDER BY 1", &[])
        .await
        .into_iter()
        .map(|(start,)| start)
        .collect();
    for window in starts.windows(3) {
        assert!(window[2] - window[0] >= 1000, "at most 2 starts in any second: {starts:?}");
    }
    let (created, started): (i64, i64) =
        rows.one("SELECT MS(created_at), MS(started_at) FROM workflows WHERE id = $1", &[&delayed]).await;
    let waited = started - created;
    // Never before its delay (counted from the instant recorded as its creation); on time within a loaded host's noise.
    let slack = if mode == Wakeups::Notify { 1000 } else { 1500 };
    assert!((2000..2000 + slack).contains(&waited), "the delayed workflow started {waited} ms after its submit");
    assert!(submitted.elapsed() >= Duration::from_secs(2));
    // The key is free once its workflow finished.
    let third = submit_cli(&["--dedup", "invoice-7", "72", "1", "0", "0"]);
    assert_ne!(third, first, "a finished workflow's key can be used again");
    service.all_finished(Duration::from_secs(30), &[&worker]).await;
    stop(&mut worker);
}

#[tokio::test(flavor = "multi_thread")]
async fn priorities_rate_limits_dedup_and_delayed_starts() {
    order_rate_dedup_delay(Wakeups::Notify).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn poll_only_through_pgbouncer_priorities_rate_limits_dedup_and_delayed_starts() {
    order_rate_dedup_delay(Wakeups::PollThroughPgbouncer).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_priorities_rate_limits_dedup_and_delayed_starts() {
    order_rate_dedup_delay(Wakeups::Sqlite).await;
}

/// A retry 3 s away parks the workflow; worker A stops; worker B runs the
/// retry when it is due, attempt numbers intact.
async fn durable_timer(mode: Wakeups) {
    let service = Service::new(mode).await;
    let (client, chain_workflow) = service.chain("3s").await;
    let id = submit(&client, &chain_workflow, submit_args(&chain(9, 1, 1, 0))).await;
    let mut a = service.worker(&["--park-after", "1s"]);
    let mut rows = service.rows().await;
    let parked = async {
        loop {
            let status: String = rows.value("SELECT status FROM workflows WHERE id = $1", &[&id]).await;
            if status == "delayed" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), parked)
        .await
        .unwrap_or_else(|_| panic!("never parked:\n{}", a.stderr()));
    stop(&mut a);
    assert!(a.stderr().contains("0 handed back"), "nothing was running when A stopped:\n{}", a.stderr());
    let mut b = service.worker(&[]);
    service.all_finished(Duration::from_secs(30), &[&b]).await;
    type Timed = (i32, String, i64, Option<i64>, Option<i64>);
    let attempts: Vec<Timed> = rows
        .all(
            "SELECT attempt, executor, MS(started_at), MS(finished_at), MS(retry_at) FROM step_attempts \
             WHERE workflow_id = $1 ORDER BY attempt",
            &[&id],
        )
        .await;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert!(attempts[0].1.contains(&by(&a)) && attempts[1].1.contains(&by(&b)), "A ran attempt 1, B attempt 2");
    let gap = attempts[1].2 - attempts[0].3.expect("attempt 1 finished");
    // Worker B loads the deployment and replays before attempt 2; it is never early.
    let slack = if mode == Wakeups::Notify { 1500 } else { 2000 };
    assert!((3000..3000 + slack).contains(&gap), "attempt 2 ran {gap} ms after attempt 1 (planned 3000)");
    assert_eq!(attempts[0].4, Some(attempts[0].3.unwrap() + 3000), "the retry time was journaled");
    let output: Option<String> = rows.value("SELECT output FROM workflows WHERE id = $1", &[&id]).await;
    assert_eq!(output.as_deref(), Some("ok(9002)"));
    stop(&mut b);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_far_retry_frees_the_slot_and_another_worker_runs_it_when_due() {
    durable_timer(Wakeups::Notify).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn poll_only_through_pgbouncer_a_far_retry_frees_the_slot_and_another_worker_runs_it_when_due() {
    durable_timer(Wakeups::PollThroughPgbouncer).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_a_far_retry_frees_the_slot_and_another_worker_runs_it_when_due() {
    durable_timer(Wakeups::Sqlite).await;
}

/// A cancel stops a running step at once (NOTIFY) or at the next lease renewal (poll-only).
async fn cancel_running(mode: Wakeups) {
    let service = Service::new(mode).await;
    let (client, chain_workflow) = service.chain("10ms").await;
    let id = submit(&client, &chain_workflow, submit_args(&chain(1, 1, 0, 30_000))).await;
    // With NOTIFY, a long lease: a renewal (every third of it) is not what notices the cancel. Polling
    // (through the pooler, or on SQLite) notices at the next renewal.
    let lease = if mode == Wakeups::Notify { "30s" } else { "3s" };
    let mut worker = service.worker(&["--lease", lease]);
    let mut rows = service.rows().await;
    let started = async {
        loop {
            let naps: i64 =
                rows.value("SELECT count(*) FROM step_attempts WHERE workflow_id = $1 AND seq = 2", &[&id]).await;
            if naps == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), started).await.expect("the nap started");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancel = host_command(service.scratch.path(), &["cancel", &id, "--wait", "10s", "--journal", &service.url]);
    assert_eq!(cancel.code, Some(0), "{}", cancel.stderr);
    let (status, requested, ended): (String, i64, i64) = rows
        .one(
            "SELECT w.status, MS(w.cancel_requested_at), MS(a.finished_at) FROM workflows w JOIN step_attempts a \
             ON a.workflow_id = w.id AND a.seq = 2 WHERE w.id = $1",
            &[&id],
        )
        .await;
    assert_eq!(status, "cancelled");
    let took = ended - requested;
    // NOTIFY: at once (a 30 s lease's renewals are 10 s apart). Poll-only: at the next renewal, every
    // third of the 3 s lease. Both with room for a loaded host.
    let limit = if mode == Wakeups::Notify { 1500 } else { 1000 + 1000 };
    assert!((0..=limit).contains(&took), "the step stopped {took} ms after the cancel (limit {limit} ms)");
    let kind: Option<String> =
        rows.value("SELECT kind FROM step_attempts WHERE workflow_id = $1 AND seq = 2", &[&id]).await;
    assert_eq!(kind.as_deref(), Some("cancelled"));
    stop(&mut worker);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_a_running_step_within_100_ms() {
    cancel_running(Wakeups::Notify).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn poll_only_through_pgbouncer_cancel_stops_a_running_step_at_the_next_renewal() {
    cancel_running(Wakeups::PollThroughPgbouncer).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_cancel_stops_a_running_step_at_the_next_renewal() {
    cancel_running(Wakeups::Sqlite).await;
}

/// SIGTERM: A stops claiming, its running attempts finish, its workflows go
/// back to the queue at once and B continues them long before A's lease would lapse.
async fn graceful_handover(mode: Wakeups) {
    let service = Service::new(mode).await;
    let (client, chain_workflow) = service.chain("10ms").await;
    for tag in 0..6 {
        submit(&client, &chain_workflow, submit_args(&chain(tag, 4, 0, 400))).await;
    }
    let mut a = service.worker(&["--lease", "30s", "--grace", "10s"]);
    let mut rows = service.rows().await;
    let running = async {
        loop {
            let running: i64 = rows.value("SELECT count(*) FROM workflows WHERE status = 'running'", &[]).await;
            if running == 6 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), running).await.expect("A runs all six");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut b = service.worker(&["--lease", "30s"]);
    let stopping = Instant::now();
    stop(&mut a);
    assert!(stopping.elapsed() < Duration::from_secs(5), "A stopped once its attempts finished, not at the grace");
    assert!(a.stderr().contains("6 handed back"), "{}", a.stderr());
    service.all_finished(Duration::from_secs(30), &[&b]).await;
    assert!(stopping.elapsed() < Duration::from_secs(20), "B continued without waiting for A's 30 s lease");
    let mut rows = service.rows().await;
    let interrupted: i64 =
        rows.value("SELECT count(*) FROM step_attempts WHERE kind = 'interrupted' OR outcome IS NULL", &[]).await;
    assert_eq!(interrupted, 0, "A let its running attempts finish");
    let outputs: std::collections::BTreeSet<String> =
        rows.all::<(String,)>("SELECT output FROM workflows", &[]).await.into_iter().map(|(output,)| output).collect();
    assert_eq!(outputs, (0..6).map(|tag| format!("ok({})", tag * 1000 + 4)).collect());
    let handed_over = exact_attempts(&service).await;
    assert_eq!(handed_over, 0, "each call ran on one worker: A finished its attempts, B ran the next calls");
    let continued: i64 =
        rows.value("SELECT count(*) FROM workflows WHERE executor LIKE $1", &[&format!("%{}%", by(&b))]).await;
    assert_eq!(continued, 6, "B finished all six");
    stop(&mut b);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_attempts_finish_and_hands_workflows_over_at_once() {
    graceful_handover(Wakeups::Notify).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn poll_only_through_pgbouncer_sigterm_hands_workflows_over_at_once() {
    graceful_handover(Wakeups::PollThroughPgbouncer).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_sigterm_hands_workflows_over_at_once() {
    graceful_handover(Wakeups::Sqlite).await;
}

/// A workflow's status and its lapsed claims in a row.
async fn status(rows: &mut Rows, id: &str) -> (String, i32) {
    rows.one("SELECT status, claims FROM workflows WHERE id = $1", &[id]).await
}

/// A workflow whose worker dies again and again without progress ends `dead`; `host recover` reaps.
async fn crash_loop(mode: Wakeups) {
    let service = Service::new(mode).await;
    let (client, chain_workflow) = service.chain("10ms").await;
    let id = submit(&client, &chain_workflow, submit_args(&chain(1, 1, 0, 60_000))).await;
    let mut rows = service.rows().await;
    for round in 1..=2 {
        let mut worker = service.worker(&["--lease", "1s", "--crash-loop-cap", "2"]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while status(&mut rows, &id).await.0 != "running" {
            assert!(Instant::now() < deadline, "round {round}: never claimed:\n{}", worker.stderr());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Let it reach the nap (call 2, attempt `round`), then die without finishing it.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let naps: i64 = rows
                .value(
                    "SELECT count(*) FROM step_attempts WHERE workflow_id = $1 AND seq = 2 AND executor LIKE $2",
                    &[&id, &format!("%{}%", by(&worker))],
                )
                .await;
            if naps == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: the nap never started:\n{}", worker.stderr());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        worker.kill();
        crate::support::until_lease_lapsed(&service.direct, &id).await;
        // `host recover` is the reaper, once (and continues one-shot workflows: there are none).
        let recover =
            host_command(service.scratch.path(), &["recover", "--crash-loop-cap", "2", "--journal", &service.url]);
        assert_eq!(recover.code, Some(0), "{}", recover.stderr);
        let (now, claims) = status(&mut rows, &id).await;
        if round == 1 {
            assert_eq!((now.as_str(), claims), ("enqueued", 1), "{}", recover.stderr);
        } else {
            assert_eq!(now, "dead", "{}", recover.stderr);
        }
    }
    let error: Option<String> = rows.value("SELECT error FROM workflows WHERE id = $1", &[&id]).await;
    assert!(error.unwrap_or_default().contains("crash-loop cap"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_loop_ends_dead_and_recover_reaps_lapsed_leases() {
    crash_loop(Wakeups::Notify).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_a_crash_loop_ends_dead_and_recover_reaps_lapsed_leases() {
    crash_loop(Wakeups::Sqlite).await;
}

/// On SQLite, worker processes on one machine share the journal file (polling).
#[tokio::test(flavor = "multi_thread")]
async fn sqlite_workers_share_one_journal_file() {
    let scratch = Scratch::new();
    let journal_path = scratch.journal();
    let journal = Journal::open(&journal_path).await.expect("journal");
    let engine = stepbox::wasm::new_engine().expect("engine");
    let client = Client::new(journal, ComponentLoader::new(&engine, Some(shared_cache())));
    let spec = RunSpec {
        workflow: artifacts::QUEUE_CHAIN.into(),
        steps: vec![artifacts::FLAKY.into(), artifacts::HOSTILE.into()],
        invoke: Some("chain".into()),
        cli_settings: SettingsLayer::from_flags([(Setting::Interval, "10ms")]).expect("flags"),
        ..RunSpec::default()
    };
    let chain_workflow = client.prepare(&spec).await.expect("submittable");
    for tag in 0..30 {
        submit(&client, &chain_workflow, submit_args(&chain(tag, 2, 1, 50))).await;
    }
    let args = ["worker", "--journal", &journal_path, "--poll-interval", "100ms", "--concurrency", "8"];
    let mut a = Child::spawn(scratch.path(), &args);
    let mut b = Child::spawn(scratch.path(), &args);
    let deadline = Instant::now() + Duration::from_secs(60);
    let reader = Journal::open_existing(&journal_path).await.expect("journal");
    loop {
        let filter = stepbox::journal::WorkflowFilter {
            status: Some(stepbox::journal::WorkflowStatus::Succeeded),
            limit: 100,
            ..Default::default()
        };
        if reader.list_workflows(&filter).await.expect("list").len() == 30 {
            break;
        }
        assert!(Instant::now() < deadline, "not all finished:\n{}\n{}", a.stderr(), b.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let workflows =
        reader.list_workflows(&stepbox::journal::WorkflowFilter { limit: 100, ..Default::default() }).await.unwrap();
    let executors: HashSet<String> = workflows.iter().filter_map(|workflow| workflow.executor.clone()).collect();
    assert_eq!(executors.len(), 2, "both processes ran workflows");
    for workflow in &workflows {
        let attempts = reader.attempts(&workflow.id).await.unwrap();
        // Two flaky calls of 2 attempts, two naps of 1.
        assert_eq!(attempts.len(), 6, "attempts of {}", workflow.id);
        assert_eq!(attempts.iter().filter(|a| a.outcome == Some(stepbox::journal::AttemptOutcome::Ok)).count(), 4);
    }
    stop(&mut a);
    stop(&mut b);
}

/// A worker loading one deployment (a Python step compiles for seconds with
/// no cache) runs the workflows of others meanwhile: no lock is held while a
/// deployment compiles. The compile outlasts the 2 s lease, which is renewed
/// meanwhile: nothing lapses, each workflow runs under its first lease.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_compile_holds_up_no_other_deployment() {
    let service = Service::new(Wakeups::Notify).await;
    let journal = Journal::open(&service.url).await.expect("the journal opens");
    let engine = stepbox::wasm::new_engine().expect("the engine starts");
    let client = Client::new(journal, ComponentLoader::new(&engine, Some(shared_cache())));
    let with_step = |step: &str| RunSpec {
        workflow: artifacts::RETRY_DEMO.into(),
        steps: vec![step.into()],
        invoke: Some("retry-then-succeed".into()),
        cli_settings: SettingsLayer::from_flags([(Setting::Interval, "10ms")]).expect("flags"),
        ..RunSpec::default()
    };
    let python = client.prepare(&with_step(artifacts::FLAKY_PY.path())).await.expect("submittable");
    let rust = client.prepare(&with_step(artifacts::FLAKY)).await.expect("submittable");
    let slow = submit(&client, &python, submit_args(&["1".into()])).await;
    let fast = submit(&client, &rust, submit_args(&["1".into()])).await;
    // No compile cache: the worker compiles each deployment it meets.
    let mut worker = service.worker(&["--no-cache", "--lease", "2s"]);
    service.all_finished(Duration::from_secs(120), &[&worker]).await;
    let epochs: Vec<(i64,)> = service.rows().await.all("SELECT lease_epoch FROM workflows", &[]).await;
    assert_eq!(epochs, [(1,), (1,)], "no lease lapsed while a deployment loaded:\n{}", worker.stderr());
    let (fast_finished, slow_first_attempt): (i64, i64) = service
        .rows()
        .await
        .one(
            "SELECT (SELECT MS(finished_at) FROM workflows WHERE id = $1), \
             (SELECT min(MS(started_at)) FROM step_attempts WHERE workflow_id = $2)",
            &[&fast, &slow],
        )
        .await;
    assert!(
        fast_finished < slow_first_attempt,
        "the Rust workflow finished {} ms after the Python one could start:\n{}",
        fast_finished - slow_first_attempt,
        worker.stderr()
    );
    stop(&mut worker);
}
