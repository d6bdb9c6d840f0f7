//! Lease safety with real processes on a real PostgreSQL: a holder cut off by
//! a network partition (a proxy that holds every packet), frozen by SIGSTOP,
//! frozen inside its claim or inside a journal write. What the tests check
//! comes from the side effects — a step that records, in a granted
//! directory, when its guest code ran — not only from the journal: no two
//! executions of one step call ever overlap in time, the holder stops before
//! anyone else may start, and it tells the truth afterwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::Connection as _;
use stepbox::journal::{Journal, QueueLimits};
use stepbox::run::RunSpec;
use stepbox::wasm::ComponentLoader;
use stepbox::worker::{Client, SubmitRequest, Submittable};

use crate::support::partition::Partition;
use crate::support::{Child, PostgresDb, Scratch, artifacts, eventually, host_command, shared_cache};

/// Wall-clock milliseconds now (the guests' records use the same clock).
fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(0))
}

/// One execution of a logged step: when its guest code first and last left a trace.
#[derive(Debug, Clone, Copy)]
struct Execution {
    start: i64,
    last: i64,
    ended: bool,
}

/// The executions recorded in `dir`, by the call's tag (`TAG-N`).
fn executions(dir: &Path) -> BTreeMap<String, Vec<Execution>> {
    let mut by_tag: BTreeMap<String, Vec<Execution>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("the record directory") {
        let path = entry.expect("an entry").path();
        let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default().to_string();
        let Some((tag, _nonce)) = name.rsplit_once('.') else { continue };
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let times: Vec<(&str, i64)> = text
            .lines()
            .filter_map(|line| line.split_once(' '))
            .filter_map(|(what, at)| Some((what, at.trim().parse().ok()?)))
            .collect();
        let (Some(first), Some(last)) = (times.first(), times.last()) else { continue };
        let ended = times.iter().any(|(what, _)| *what == "end");
        by_tag.entry(tag.to_string()).or_default().push(Execution { start: first.1, last: last.1, ended });
    }
    for list in by_tag.values_mut() {
        list.sort_by_key(|execution| execution.start);
    }
    by_tag
}

/// No two executions of one call overlapped: each one's last trace precedes the next one's start.
fn assert_no_overlap(records: &BTreeMap<String, Vec<Execution>>) {
    for (tag, list) in records {
        for pair in list.windows(2) {
            assert!(
                pair[0].last < pair[1].start,
                "{tag}: two executions overlapped by {} ms: {pair:?}",
                pair[0].last - pair[1].start
            );
        }
        // An execution that ended but whose result was never journaled (its holder was cut off) runs again.
        assert!(list.iter().any(|execution| execution.ended), "{tag}: an execution ended: {list:?}");
    }
}

/// A test's service: its database, a scratch directory, the record directory
/// granted to the logged step, and a client to submit with.
struct Setup {
    db: PostgresDb,
    scratch: Scratch,
    records: PathBuf,
    manifest: PathBuf,
    client: Client,
    logged: Submittable,
}

impl Setup {
    async fn new() -> Self {
        let db = PostgresDb::create().await;
        let journal = Journal::open(&db.url).await.expect("the journal is created");
        let scratch = Scratch::new();
        let records = scratch.path().join("records");
        std::fs::create_dir(&records).expect("record directory");
        let manifest = scratch.path().join("logged.toml");
        std::fs::write(
            &manifest,
            format!(
                "[retry]\ninterval = \"100ms\"\nmax-attempts = 5\n\n[steps.logged-nap.grants]\n\
                 dirs = [{{ host = {:?}, guest = \"/records\", write = true }}]\n",
                records.display().to_string()
            ),
        )
        .expect("manifest");
        let engine = stepbox::wasm::new_engine().expect("the engine starts");
        let client = Client::new(journal, ComponentLoader::new(&engine, Some(shared_cache())));
        let spec = RunSpec {
            workflow: artifacts::QUEUE_CHAIN.into(),
            steps: vec![artifacts::FLAKY.into(), artifacts::HOSTILE.into()],
            invoke: Some("logged".into()),
            config: Some(manifest.clone()),
            ..RunSpec::default()
        };
        let logged = client.prepare(&spec).await.expect("the logged workflow is submittable");
        Self { db, scratch, records, manifest, client, logged }
    }

    /// Submits `calls` logged naps of `ms` tagged `tag` to `queue`; their workflow's id is `tag`.
    async fn submit(&self, tag: &str, queue: &str, calls: u32, ms: u64) -> String {
        let request = SubmitRequest {
            arguments: vec![format!("{tag:?}"), "\"/records\"".into(), calls.to_string(), ms.to_string()],
            id: Some(tag.to_string()),
            queue: Some(queue.to_string()),
            ..SubmitRequest::default()
        };
        self.client.submit(&self.logged, &request).await.expect("submitted").id
    }

    fn worker(&self, journal: &str, args: &[&str]) -> Child {
        let mut all = vec!["worker", "--journal", journal];
        all.extend(args);
        Child::spawn(self.scratch.path(), &all)
    }

    async fn sql(&self) -> sqlx::PgConnection {
        let mut connection = sqlx::PgConnection::connect(&self.db.url).await.expect("a direct connection");
        sqlx::raw_sql("SET search_path TO stepbox").execute(&mut connection).await.expect("search_path");
        connection
    }

    fn port(&self) -> u16 {
        port_of(&self.db.url)
    }

    /// Record files written so far.
    fn started(&self) -> usize {
        std::fs::read_dir(&self.records).map_or(0, |entries| entries.count())
    }
}

fn port_of(url: &str) -> u16 {
    url.rsplit_once(':').and_then(|(_, rest)| rest.split('/').next()?.parse().ok()).expect("a port in the URL")
}

/// The executor id of the worker process `child` (`host:PID:nonce`), from its row.
async fn executor_of(sql: &mut sqlx::PgConnection, child: &Child) -> String {
    let pattern = format!("%:{}:%", child.process.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let id: Option<String> = sqlx::query_scalar("SELECT id FROM workers WHERE id LIKE $1")
            .bind(&pattern)
            .fetch_optional(&mut *sql)
            .await
            .expect("workers");
        if let Some(id) = id {
            return id;
        }
        assert!(Instant::now() < deadline, "the worker never registered:\n{}", child.stderr());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every workflow of the journal ended; their statuses.
async fn all_ended(sql: &mut sqlx::PgConnection, timeout: Duration, children: &[&Child]) -> Vec<(String, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT id, status FROM workflows ORDER BY id").fetch_all(&mut *sql).await.expect("rows");
        if !rows.is_empty()
            && rows.iter().all(|(_, status)| !["enqueued", "delayed", "running"].contains(&status.as_str()))
        {
            return rows;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = children.iter().map(|child| child.stderr()).collect();
            panic!("workflows still live after {timeout:?}: {rows:?}\n{}", logs.join("\n----\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// When each workflow was first taken over by a reaper: `reclaimed` events, by workflow.
async fn reclaimed_at(sql: &mut sqlx::PgConnection) -> BTreeMap<String, i64> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT workflow_id, min((extract(epoch FROM at) * 1000)::bigint) FROM workflow_events \
         WHERE kind = 'reclaimed' GROUP BY workflow_id",
    )
    .fetch_all(&mut *sql)
    .await
    .expect("events");
    rows.into_iter().collect()
}

/// A worker cut off from PostgreSQL by a partition stops its guest code
/// within its lease, before another worker may take its workflows over;
/// after the partition heals it says, per workflow, who took it over.
async fn a_partitioned_worker_stops_before_another_takes_over(lease_secs: u64) {
    let setup = Setup::new().await;
    let mut sql = setup.sql().await;
    let partition = Partition::start(setup.port()).await;
    let through_proxy = partition.url(&setup.db.url, setup.port());
    let lease = format!("{lease_secs}s");
    let lease_ms = i64::try_from(lease_secs * 1000).expect("ms");
    let mut a = setup.worker(&through_proxy, &["--lease", &lease]);
    let a_id = executor_of(&mut sql, &a).await;
    // Long enough that A would still be running them when B takes them over.
    let nap = lease_secs * 2500;
    for n in 0..3 {
        setup.submit(&format!("p{n}"), "default", 1, nap).await;
    }
    // Each of the three calls has an execution that wrote its first trace (a file is created a moment
    // before its first line; a call whose first attempt failed has two files, so files are not counted).
    let traced = eventually(Duration::from_secs(60), || async { executions(&setup.records).len() == 3 }).await;
    assert!(traced, "{}", a.stderr());
    let cut_at = now_ms();
    partition.cut();
    let mut b = setup.worker(&setup.db.url, &["--lease", &lease]);
    let b_id = executor_of(&mut sql, &b).await;
    let ended = all_ended(&mut sql, Duration::from_secs(nap / 1000 * 3 + 60), &[&a, &b]).await;
    assert!(ended.iter().all(|(_, status)| status == "succeeded"), "{ended:?}\n{}", b.stderr());
    partition.heal();
    // After the heal, one line per workflow says who took it over.
    let told = eventually(Duration::from_secs(40), || async {
        a.stderr().lines().filter(|line| line.contains("stopped here") && line.contains(&b_id)).count() == 3
    })
    .await;
    let a_log = a.stderr();
    assert!(told, "A told who took each workflow over:\n{a_log}");
    assert!(a_log.contains("its lease could not be renewed within"), "{a_log}");
    assert!(!a_log.contains("can be resumed") && !a_log.contains("marked dead"), "{a_log}");

    let records = executions(&setup.records);
    assert_no_overlap(&records);
    let reclaimed = reclaimed_at(&mut sql).await;
    for n in 0..3 {
        let tag = format!("p{n}-1");
        let list = &records[&tag];
        let a_run = list.first().expect("A's execution");
        assert!(a_run.start < cut_at && !a_run.ended, "{tag}: A's execution was cut short: {list:?}\n{a_log}");
        // Noticed within the lease: A's guest code stopped less than a lease after the cut.
        assert!(a_run.last - cut_at < lease_ms, "{tag}: A ran {} ms past the cut", a_run.last - cut_at);
        // And before anyone took the workflow over.
        let taken = reclaimed[&format!("p{n}")];
        assert!(a_run.last < taken, "{tag}: A's last trace {} ms after B's claim", a_run.last - taken);
        println!(
            "lease {lease}, {tag}: A stopped {} ms after the cut, {} ms before B's claim",
            a_run.last - cut_at,
            taken - a_run.last
        );
    }
    // The journal is exact: one ok attempt per call, and B ran them.
    let oks: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT workflow_id, count(*), max(executor) FROM step_attempts WHERE outcome = 'ok' GROUP BY workflow_id ORDER BY 1",
    )
    .fetch_all(&mut sql)
    .await
    .expect("attempts");
    assert_eq!(oks.len(), 3);
    assert!(oks.iter().all(|(_, count, executor)| *count == 1 && *executor == b_id), "{oks:?}");
    // `host workers` tells the truth: both live once A's heartbeat gets through again, and says so in JSON.
    let states = || {
        let listed = host_command(setup.scratch.path(), &["workers", "-o", "json", "--journal", &setup.db.url]);
        let workers: serde_json::Value = serde_json::from_str(&listed.stdout).expect("workers JSON");
        [&a_id, &b_id].map(|id| {
            let listed = workers["workers"].as_array().and_then(|all| all.iter().find(|worker| worker["id"] == **id));
            listed.map(|worker| worker["state"].as_str().unwrap_or_default().to_string()).unwrap_or_default()
        })
    };
    let both_live = eventually(Duration::from_millis(lease_ms as u64 * 2), || async { states() == ["live", "live"] });
    assert!(both_live.await, "both workers live: {:?}", states());
    a.kill();
    b.kill();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_worker_with_a_2s_lease_stops_before_another_takes_over() {
    a_partitioned_worker_stops_before_another_takes_over(2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_worker_with_a_10s_lease_stops_before_another_takes_over() {
    a_partitioned_worker_stops_before_another_takes_over(10).await;
}

/// A worker frozen (SIGSTOP) past its lease: another takes its workflows
/// over, no execution overlaps, and once continued it writes nothing for
/// them and says who has them now.
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_worker_writes_nothing_after_waking_and_never_overlaps() {
    let setup = Setup::new().await;
    let mut sql = setup.sql().await;
    let mut a = setup.worker(&setup.db.url, &["--lease", "2s"]);
    let a_id = executor_of(&mut sql, &a).await;
    for n in 0..2 {
        setup.submit(&format!("s{n}"), "default", 2, 3000).await;
    }
    assert!(eventually(Duration::from_secs(60), || async { setup.started() == 2 }).await, "{}", a.stderr());
    a.signal("STOP");
    let stopped_at = now_ms();
    let mut b = setup.worker(&setup.db.url, &["--lease", "2s"]);
    let b_id = executor_of(&mut sql, &b).await;
    let ended = all_ended(&mut sql, Duration::from_secs(90), &[&a, &b]).await;
    assert!(ended.iter().all(|(_, status)| status == "succeeded"), "{ended:?}");
    let before = attempts_by(&mut sql, &a_id).await;
    a.signal("CONT");
    let told = eventually(Duration::from_secs(30), || async {
        a.stderr().lines().filter(|line| line.contains("stopped here") && line.contains(&b_id)).count() == 2
    })
    .await;
    let a_log = a.stderr();
    assert!(told, "A told who took each workflow over:\n{a_log}");
    assert!(!a_log.contains("can be resumed") && !a_log.contains("marked dead"), "{a_log}");
    // Give any late write of A every chance to land, then look: nothing did.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(attempts_by(&mut sql, &a_id).await, before, "A wrote nothing after it woke");
    let last_by_a: Option<i64> = sqlx::query_scalar(
        "SELECT max((extract(epoch FROM greatest(started_at, finished_at)) * 1000)::bigint) FROM step_attempts \
         WHERE executor = $1",
    )
    .bind(&a_id)
    .fetch_one(&mut sql)
    .await
    .expect("times");
    assert!(last_by_a.unwrap_or(0) <= stopped_at, "A's rows are all from before its stop");
    let records = executions(&setup.records);
    assert_no_overlap(&records);
    a.kill();
    b.kill();
}

/// The attempt rows `executor` wrote, as they stand.
async fn attempts_by(
    sql: &mut sqlx::PgConnection,
    executor: &str,
) -> Vec<(String, i64, i32, Option<String>, Option<i64>)> {
    sqlx::query_as(
        "SELECT workflow_id, seq, attempt, outcome, (extract(epoch FROM finished_at) * 1000)::bigint \
         FROM step_attempts WHERE executor = $1 ORDER BY 1, 2, 3",
    )
    .bind(executor)
    .fetch_all(&mut *sql)
    .await
    .expect("attempts")
}

/// Polls `waiting_in` every 10 ms for up to 10 s.
async fn until_waiting_in(sql: &mut sqlx::PgConnection, statement: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if waiting_in(sql, statement).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// A one-shot `host run` cut off from the journal stops its attempt within
/// its lease, before `host resume` elsewhere can start it; after the heal it
/// says the workflow was taken over and has ended.
#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_host_run_stops_before_a_resume_elsewhere_can_start() {
    let setup = Setup::new().await;
    let partition = Partition::start(setup.port()).await;
    let through_proxy = partition.url(&setup.db.url, setup.port());
    let manifest = setup.manifest.display().to_string();
    let args = [
        "run",
        artifacts::QUEUE_CHAIN,
        "--step",
        artifacts::FLAKY,
        "--step",
        artifacts::HOSTILE,
        "--config",
        &manifest,
        "--invoke",
        "logged",
        "\"r\"",
        "\"/records\"",
        "1",
        "6000",
        "--id",
        "cut-run",
        "--lease",
        "2s",
        "--journal",
        &through_proxy,
    ];
    let mut run = Child::spawn(setup.scratch.path(), &args);
    assert!(eventually(Duration::from_secs(60), || async { setup.started() == 1 }).await, "{}", run.stderr());
    let cut_at = now_ms();
    partition.cut();
    // `host resume` on a direct connection is refused while the lease is live, then runs it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let resumed = loop {
        let resume = host_command(setup.scratch.path(), &["resume", "cut-run", "--journal", &setup.db.url]);
        if resume.code == Some(0) {
            break resume;
        }
        assert!(resume.stderr.contains("is being run by"), "{}", resume.stderr);
        assert!(Instant::now() < deadline, "the resume never started:\n{}", resume.stderr);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(resumed.stdout.contains("Workflow output: ok(6000)"), "{}", resumed.stdout);
    partition.heal();
    let code = run.wait_for_exit(Duration::from_secs(60));
    let log = run.stderr();
    assert_eq!(code, Some(4), "{log}");
    assert!(log.contains("could not renew its lease") && log.contains("It was taken over by"), "{log}");
    assert!(log.contains("has since ended succeeded"), "{log}");
    let records = executions(&setup.records);
    assert_no_overlap(&records);
    let first = records["r-1"][0];
    assert!(first.last - cut_at < 2000, "the run stopped {} ms after the cut", first.last - cut_at);
}

/// An outage longer than the lease: the run stops its attempt at its lease's
/// local deadline, and when the journal answers again and nobody took the
/// workflow over, takes it back and finishes it — one process, no human.
#[tokio::test(flavor = "multi_thread")]
async fn after_an_outage_longer_than_its_lease_a_run_takes_its_workflow_back() {
    let setup = Setup::new().await;
    let partition = Partition::start(setup.port()).await;
    let through_proxy = partition.url(&setup.db.url, setup.port());
    let manifest = setup.manifest.display().to_string();
    let args = [
        "run",
        artifacts::QUEUE_CHAIN,
        "--step",
        artifacts::FLAKY,
        "--step",
        artifacts::HOSTILE,
        "--config",
        &manifest,
        "--invoke",
        "logged",
        "\"t\"",
        "\"/records\"",
        "3",
        "1500",
        "--id",
        "taken-back",
        "--lease",
        "2s",
        "--journal",
        &through_proxy,
    ];
    let mut run = Child::spawn(setup.scratch.path(), &args);
    assert!(eventually(Duration::from_secs(60), || async { setup.started() == 1 }).await, "{}", run.stderr());
    partition.cut();
    tokio::time::sleep(Duration::from_secs(4)).await;
    partition.heal();
    let code = run.wait_for_exit(Duration::from_secs(60));
    let log = run.stderr();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("nobody took it over; it continues here from its journal"), "{log}");
    let records = executions(&setup.records);
    assert_no_overlap(&records);
    assert_eq!(records.len(), 3, "three calls: {records:?}");
    let mut sql = setup.sql().await;
    let kinds: Vec<(i64, i32, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT seq, attempt, outcome, kind FROM step_attempts WHERE workflow_id = 'taken-back' ORDER BY seq, attempt",
    )
    .fetch_all(&mut sql)
    .await
    .expect("attempts");
    for seq in 1..=3 {
        let oks = kinds.iter().filter(|(s, _, outcome, _)| *s == seq && outcome.as_deref() == Some("ok")).count();
        assert_eq!(oks, 1, "call {seq}: {kinds:?}");
    }
    let events: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM workflow_events WHERE workflow_id = 'taken-back' ORDER BY id")
            .fetch_all(&mut sql)
            .await
            .expect("events");
    assert!(events.contains(&"taken-back".to_string()), "{events:?}");
}

/// Whether a journal session (`application_name` stepbox) waits for a lock in a statement that contains `statement`.
async fn waiting_in(sql: &mut sqlx::PgConnection, statement: &str) -> bool {
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'stepbox%' AND wait_event_type = 'Lock' \
         AND query LIKE $1",
    )
    .bind(format!("%{statement}%"))
    .fetch_one(&mut *sql)
    .await
    .expect("pg_stat_activity");
    waiting > 0
}

/// A worker frozen inside its claim (its statement waited on the queue's
/// row, held meanwhile by another session) delays no other worker: the claim
/// is one statement, so it holds nothing once that session lets go, and the
/// workflow it claimed while frozen is reaped and run by the other worker.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_frozen_inside_its_claim_delays_no_other_worker() {
    let setup = Setup::new().await;
    let journal = Journal::open(&setup.db.url).await.expect("journal");
    journal
        .set_queue(&QueueLimits { name: "q".into(), concurrency: Some(10), ..QueueLimits::default() })
        .await
        .expect("queue set");
    let mut sql = setup.sql().await;
    let mut a = setup.worker(&setup.db.url, &["--queue", "q", "--lease", "2s"]);
    executor_of(&mut sql, &a).await;
    // Another session holds the queue's row, so A's claim for the next submission waits on it.
    let mut holder = setup.sql().await;
    sqlx::raw_sql("BEGIN; SELECT * FROM queues WHERE name = 'q' FOR UPDATE").execute(&mut holder).await.expect("lock");
    setup.submit("c0", "q", 1, 300).await;
    let claiming = until_waiting_in(&mut sql, "FROM claim_workflows(").await;
    assert!(claiming, "A's claim never waited:\n{}", a.stderr());
    a.signal("STOP");
    let mut b = setup.worker(&setup.db.url, &["--queue", "q", "--lease", "2s"]);
    executor_of(&mut sql, &b).await;
    sqlx::raw_sql("COMMIT").execute(&mut holder).await.expect("unlock");
    // B claims new work within its poll interval (1 s), though A stays frozen.
    let submitted = Instant::now();
    setup.submit("c1", "q", 1, 300).await;
    let mut started = false;
    while !started && submitted.elapsed() < Duration::from_secs(10) {
        let status: String =
            sqlx::query_scalar("SELECT status FROM workflows WHERE id = 'c1'").fetch_one(&mut sql).await.expect("c1");
        started = status != "enqueued";
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let waited = submitted.elapsed();
    assert!(started, "B never claimed c1:\n{}", b.stderr());
    assert!(waited < Duration::from_secs(3), "B claimed c1 {waited:?} after its submit");
    // Whatever A claimed while frozen is reaped once its lease lapses, and B runs it.
    let ended = all_ended(&mut sql, Duration::from_secs(60), &[&b]).await;
    assert!(ended.iter().all(|(_, status)| status == "succeeded"), "{ended:?}\n{}", b.stderr());
    a.signal("CONT");
    assert_no_overlap(&executions(&setup.records));
    a.kill();
    b.kill();
}

/// A worker frozen inside a journal write's transaction: the server ends its
/// session (idle in transaction), so its lock on the workflow's row goes, the
/// other worker reaps and finishes the workflow, and the frozen worker's
/// late write never lands.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_frozen_inside_a_write_loses_its_locks_and_its_workflow() {
    let setup = Setup::new().await;
    let mut sql = setup.sql().await;
    let mut a = setup.worker(&setup.db.url, &["--lease", "2s"]);
    let a_id = executor_of(&mut sql, &a).await;
    // Two naps: a nap's end updates rows written in an earlier batch, in one transaction (fence first).
    setup.submit("w0", "default", 2, 1000).await;
    let napping = eventually(Duration::from_secs(60), || async { setup.started() == 1 }).await;
    assert!(napping, "{}", a.stderr());
    // Another session holds the nap's call row: A's write at the nap's end waits on it inside its
    // transaction, after its fence locked the workflow's row.
    let mut holder = setup.sql().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        sqlx::raw_sql("BEGIN").execute(&mut holder).await.expect("begin");
        let locked: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM step_calls WHERE workflow_id = 'w0' AND seq = 1 FOR UPDATE")
                .fetch_optional(&mut holder)
                .await
                .expect("lock");
        if locked.is_some() {
            break;
        }
        sqlx::raw_sql("ROLLBACK").execute(&mut holder).await.expect("rollback");
        assert!(Instant::now() < deadline, "the nap's call row never appeared");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let writing = until_waiting_in(&mut sql, "UPDATE step_calls").await;
    assert!(writing, "A's write never waited:\n{}", a.stderr());
    a.signal("STOP");
    let stopped_at = now_ms();
    sqlx::raw_sql("COMMIT").execute(&mut holder).await.expect("unlock");
    let mut b = setup.worker(&setup.db.url, &["--lease", "2s"]);
    let b_id = executor_of(&mut sql, &b).await;
    // A stays frozen: the server ends its idle transaction (5 s), B reaps and finishes the workflow.
    let ended = all_ended(&mut sql, Duration::from_secs(60), &[&b]).await;
    assert_eq!(ended, [("w0".to_string(), "succeeded".to_string())], "{}", b.stderr());
    let owner: String =
        sqlx::query_scalar("SELECT executor FROM workflows WHERE id = 'w0'").fetch_one(&mut sql).await.expect("row");
    assert_eq!(owner, b_id);
    a.signal("CONT");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let late: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM step_attempts WHERE executor = $1 AND (extract(epoch FROM coalesce(finished_at, \
         started_at)) * 1000)::bigint > $2",
    )
    .bind(&a_id)
    .bind(stopped_at)
    .fetch_one(&mut sql)
    .await
    .expect("count");
    assert_eq!(late, 0, "A wrote nothing after its stop");
    assert_no_overlap(&executions(&setup.records));
    a.kill();
    b.kill();
}

/// A SIGKILLed worker is `lost` once its lease has passed without a
/// heartbeat (not after a minute), in `host workers` and its JSON.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_is_lost_once_its_lease_has_passed() {
    let setup = Setup::new().await;
    let mut sql = setup.sql().await;
    let mut worker = setup.worker(&setup.db.url, &["--lease", "1s"]);
    let id = executor_of(&mut sql, &worker).await;
    let state = |json: &str| -> String {
        let workers: serde_json::Value = serde_json::from_str(json).expect("workers JSON");
        let worker = workers["workers"].as_array().unwrap().iter().find(|worker| worker["id"] == id.as_str()).cloned();
        worker.map(|worker| worker["state"].as_str().unwrap_or_default().to_string()).unwrap_or_default()
    };
    let listed = host_command(setup.scratch.path(), &["workers", "-o", "json", "--journal", &setup.db.url]);
    assert_eq!(state(&listed.stdout), "live", "{}", listed.stdout);
    worker.kill();
    let killed = Instant::now();
    let lost = eventually(Duration::from_secs(10), || async {
        let listed = host_command(setup.scratch.path(), &["workers", "-o", "json", "--journal", &setup.db.url]);
        state(&listed.stdout) == "lost"
    })
    .await;
    assert!(lost, "never lost");
    // A heartbeat every third of the lease: lost at most a lease after the kill (and the polling).
    assert!(killed.elapsed() < Duration::from_secs(4), "lost {:?} after the kill", killed.elapsed());
    let text = host_command(setup.scratch.path(), &["workers", "--journal", &setup.db.url]);
    assert!(text.stdout.lines().any(|line| line.starts_with(&id) && line.contains("lost")), "{}", text.stdout);
}

/// `host submit --dedup` with an explicit `--id` that a live workflow's key
/// wins over says so: the id printed is the live one, the given one unused.
#[tokio::test(flavor = "multi_thread")]
async fn a_dedup_hit_says_the_given_id_was_not_used() {
    let setup = Setup::new().await;
    let submit = |id: &str| {
        host_command(
            setup.scratch.path(),
            &[
                "submit",
                artifacts::QUEUE_CHAIN,
                "--step",
                artifacts::FLAKY,
                "--step",
                artifacts::HOSTILE,
                "--invoke",
                "sleepy",
                "100",
                "--dedup",
                "key",
                "--id",
                id,
                "--journal",
                &setup.db.url,
            ],
        )
    };
    let first = submit("first");
    assert_eq!((first.code, first.stdout.trim()), (Some(0), "first"), "{}", first.stderr);
    let second = submit("second");
    assert_eq!((second.code, second.stdout.trim()), (Some(0), "first"), "{}", second.stderr);
    assert!(second.stderr.contains("the --id second was not used"), "{}", second.stderr);
}
