//! Child workflows (`start-child`, `await-child`) with real `host worker`
//! processes on SQLite and PostgreSQL, from Rust and Python: a parent starting 20 children on a
//! queue served by two workers, one SIGKILLed; cancelling a parent cancels
//! its running children (not a detached one) within a second or so; a
//! cancelled child wakes its parked parent; bad starts refused with the reason.

use std::collections::BTreeMap;
use std::time::Duration;

use stepbox::journal::Journal;
use stepbox::run::RunSpec;
use stepbox::wasm::ComponentLoader;
use stepbox::worker::{Client, SubmitRequest, Submittable};

use serde_json::json;

use crate::serve::Server;
use crate::support::rows::Rows;
use crate::support::{Child, PostgresDb, Scratch, artifacts, eventually, host_command, shared_cache};

/// A journal of each kind for one test: a SQLite file, or a fresh PostgreSQL database.
struct Service {
    _db: Option<PostgresDb>,
    journal: String,
    postgres: bool,
    scratch: Scratch,
    /// The family workflow component: Rust or Python.
    workflow: String,
}

impl Service {
    async fn new(postgres: bool) -> Self {
        let scratch = Scratch::new();
        let (db, journal) = match postgres {
            true => {
                let db = PostgresDb::create().await;
                let url = db.url.clone();
                (Some(db), url)
            }
            false => (None, scratch.journal()),
        };
        Journal::open(&journal).await.expect("the journal is created");
        Self { _db: db, journal, postgres, scratch, workflow: artifacts::FAMILY.into() }
    }

    /// A `host worker` on the default queue with `lease`, ten workflows at once.
    fn worker(&self, lease: &str) -> Child {
        let mut args = vec!["worker", "--journal", &self.journal, "--lease", lease, "--concurrency", "10"];
        if !self.postgres {
            args.extend(["--poll-interval", "100ms"]);
        }
        Child::spawn(self.scratch.path(), &args)
    }

    /// Submits the family workflow's `entry` with `arguments` (WAVE); its id.
    async fn submit(&self, entry: &str, arguments: &[&str]) -> String {
        let engine = stepbox::wasm::new_engine().expect("the engine starts");
        let journal = Journal::open(&self.journal).await.expect("the journal opens");
        let client = Client::new(journal, ComponentLoader::new(&engine, Some(shared_cache())));
        let spec = RunSpec {
            workflow: self.workflow.clone().into(),
            steps: vec![artifacts::HOSTILE.into()],
            invoke: Some(entry.into()),
            ..RunSpec::default()
        };
        let submittable: Submittable = client.prepare(&spec).await.expect("the family workflow is submittable");
        let request = SubmitRequest {
            arguments: arguments.iter().map(|argument| argument.to_string()).collect(),
            ..SubmitRequest::default()
        };
        client.submit(&submittable, &request).await.expect("submitted").id
    }

    /// Stores the component file at `path` in the journal under `name`; its digest.
    async fn upload(&self, name: &str, path: &str) -> String {
        let engine = stepbox::wasm::new_engine().expect("the engine starts");
        let journal = Journal::open(&self.journal).await.expect("the journal opens");
        let client = Client::new(journal, ComponentLoader::new(&engine, Some(shared_cache())));
        let bytes = std::fs::read(path).expect("the component file");
        client.upload(name, bytes).await.expect("uploaded").digest
    }

    async fn rows(&self) -> Rows {
        Rows::open(&self.journal).await
    }

    /// Waits until workflow `id` has ended; its status and output.
    async fn ended(&self, id: &str, timeout: Duration, workers: &[&Child]) -> (String, Option<String>) {
        let mut rows = self.rows().await;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let (status, output): (String, Option<String>) =
                rows.one("SELECT status, output FROM workflows WHERE id = $1", &[id]).await;
            if !["enqueued", "delayed", "waiting", "running"].contains(&status.as_str()) {
                return (status, output);
            }
            if std::time::Instant::now() > deadline {
                let logs: Vec<String> = workers.iter().map(|worker| worker.stderr()).collect();
                panic!("workflow {id} still {status} after {timeout:?}:\n{}", logs.join("\n----\n"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Stops a worker with SIGTERM and expects a clean exit.
fn stop(worker: &mut Child) {
    worker.signal("TERM");
    assert_eq!(worker.wait_for_exit(Duration::from_secs(60)), Some(0), "{}", worker.stderr());
}

/// A parent starts 20 children (each a 1.5 s nap) on a queue two workers
/// serve; once children run on worker A, A is SIGKILLed. Every child and
/// the parent finish, each child's nap has exactly one ok attempt, and the
/// parent's 20 starts and 20 awaits are journaled once each.
async fn twenty_children_through_a_kill(workflow: &str, postgres: bool) {
    let service = Service { workflow: workflow.into(), ..Service::new(postgres).await };
    let parent = service.submit("parent", &["20", "1500"]).await;
    let mut a = service.worker("2s");
    let mut b = service.worker("2s");
    let a_pattern = format!("%:{}:%", a.process.id());
    let mut rows = service.rows().await;
    let busy = eventually(Duration::from_secs(60), || async {
        let running: i64 = Rows::open(&service.journal)
            .await
            .value(
                "SELECT count(*) FROM step_attempts WHERE executor LIKE $1 AND outcome IS NULL AND workflow_id <> $2",
                &[&a_pattern, &parent],
            )
            .await;
        running > 0
    })
    .await;
    assert!(busy, "worker A never ran a child:\n{}\n{}", a.stderr(), b.stderr());
    a.kill();
    let (status, output) = service.ended(&parent, Duration::from_secs(120), &[&b]).await;
    assert_eq!((status.as_str(), output.as_deref()), ("succeeded", Some("ok(1900)")), "{}", b.stderr());

    let children: Vec<(String, String, Option<String>, bool)> = rows
        .all("SELECT id, status, output, parent_detached FROM workflows WHERE parent_id = $1 ORDER BY id", &[&parent])
        .await;
    assert_eq!(children.len(), 20, "{children:?}");
    for (id, status, output, detached) in &children {
        assert_eq!(status, "succeeded", "child {id}");
        assert!(!detached);
        let index: u32 = id.rsplit('-').next().and_then(|seq| seq.parse::<u32>().ok()).expect("PARENT-SEQ") - 1;
        assert_eq!(output.as_deref(), Some((index * 10).to_string().as_str()), "child {id} is child({index}, ..)");
    }
    let naps: Vec<(String, i64)> = rows
        .all(
            "SELECT workflow_id, count(*) FROM step_attempts WHERE outcome = 'ok' AND workflow_id <> $1 \
             GROUP BY workflow_id",
            &[&parent],
        )
        .await;
    assert_eq!(naps.len(), 20);
    assert!(naps.iter().all(|(_, oks)| *oks == 1), "one ok nap per child: {naps:?}");
    let continued: i64 = rows
        .value(
            "SELECT count(*) FROM workflows w WHERE w.parent_id = $1 AND w.executor NOT LIKE $2 AND EXISTS \
             (SELECT 1 FROM step_attempts s WHERE s.workflow_id = w.id AND s.executor LIKE $2)",
            &[&parent, &a_pattern],
        )
        .await;
    assert!(continued > 0, "a child the killed worker ran was finished by the other");
    let operations: Vec<(String, i64)> = rows
        .all(
            "SELECT step, count(*) FROM step_calls WHERE workflow_id = $1 AND status = 'succeeded' GROUP BY step",
            &[&parent],
        )
        .await;
    let operations: BTreeMap<String, i64> = operations.into_iter().collect();
    let op = |name: &str| operations.get(&format!("stepbox:runtime/workflow-context.{name}")).copied();
    assert_eq!((op("start-child"), op("await-child")), (Some(20), Some(20)), "{operations:?}");
    stop(&mut b);
    linked(&service, &parent, &children[0].0);
}

/// `host show`, the API and the dashboard link `parent` and its `child`.
fn linked(service: &Service, parent: &str, child: &str) {
    let show = host_command(service.scratch.path(), &["show", child, "--journal", &service.journal]);
    assert!(show.stdout.contains(&format!("parent    {parent}")), "{}", show.stdout);
    let show = host_command(service.scratch.path(), &["show", parent, "--journal", &service.journal]);
    assert_eq!(show.stdout.matches("\nchild     ").count(), 20, "{}", show.stdout);
    assert!(show.stdout.contains(&format!("child     {child} succeeded (child)")), "{}", show.stdout);
    let server = Server::start(&service.scratch, &service.journal, &[]);
    let (status, history) = server.json(&format!("/api/v1/workflows/{parent}"));
    assert_eq!(status, 200);
    let children = history["children"].as_array().expect("a list of children");
    assert_eq!(children.len(), 20);
    assert_eq!(
        (&children[0]["id"], &children[0]["status"], &children[0]["detached"]),
        (&json!(child), &json!("succeeded"), &json!(false))
    );
    let (_, child_history) = server.json(&format!("/api/v1/workflows/{child}"));
    assert_eq!(child_history["parent_id"], json!(parent));
    let (_, page) = server.get_page(&format!("/workflows/{parent}"));
    assert!(page.contains("Child workflows") && page.contains(&format!("href=\"/workflows/{child}\"")), "{page}");
    let (_, page) = server.get_page(&format!("/workflows/{child}"));
    assert!(page.contains(&format!("href=\"/workflows/{parent}\"")), "{page}");
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_children_of_a_rust_workflow_finish_through_a_worker_kill_on_postgres() {
    twenty_children_through_a_kill(artifacts::FAMILY, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_children_of_a_python_workflow_finish_through_a_worker_kill_on_sqlite() {
    twenty_children_through_a_kill(artifacts::FAMILY_PY.path(), false).await;
}

/// A parent with 5 running children (30 s naps), and a detached child of
/// another parent. Cancelling the first parent cancels its children, whose
/// attempts stop within `limit_ms` of the request; the detached child runs
/// on after its parent is cancelled. A child cancelled on its own wakes the
/// parent parked awaiting it, which gets `cancelled`.
async fn cancel_reaches_children(postgres: bool, limit_ms: i64) {
    let service = Service::new(postgres).await;
    let parent = service.submit("parent", &["5", "30000"]).await;
    let let_go = service.submit("try-child", &["\"child\"", "\"[7, 30000]\"", "\"\"", "true"]).await;
    let awaiting = service.submit("try-child", &["\"child\"", "\"[8, 30000]\"", "\"kid-8\"", "false"]).await;
    let lease = if postgres { "30s" } else { "2s" };
    let mut worker = service.worker(lease);
    let all_running = eventually(Duration::from_secs(60), || async {
        let running: i64 = Rows::open(&service.journal)
            .await
            .value(
                "SELECT count(*) FROM step_attempts s JOIN workflows w ON w.id = s.workflow_id \
                 WHERE w.parent_id IS NOT NULL AND s.outcome IS NULL",
                &[],
            )
            .await;
        running == 7
    })
    .await;
    assert!(all_running, "the 7 children never all ran:\n{}", worker.stderr());
    // The parent awaiting kid-8 gave its worker slot back.
    let parked = eventually(Duration::from_secs(30), || async {
        let row: (String, Option<String>, Option<String>) = Rows::open(&service.journal)
            .await
            .one("SELECT status, waiting_for, wait_topic FROM workflows WHERE id = $1", &[&awaiting])
            .await;
        row == ("waiting".into(), Some("child".into()), Some("kid-8".into()))
    })
    .await;
    assert!(parked, "the parent awaiting kid-8 never parked:\n{}", worker.stderr());
    let scratch = &service.scratch;
    let cancel = host_command(scratch.path(), &["cancel", &parent, "--journal", &service.journal]);
    assert_eq!(cancel.code, Some(0), "{}", cancel.stderr);
    let cancel_kid = host_command(scratch.path(), &["cancel", "kid-8", "--journal", &service.journal]);
    assert_eq!(cancel_kid.code, Some(0), "{}", cancel_kid.stderr);
    // The parent awaiting kid-8 hears of its end and returns what await-child said.
    let (status, output) = service.ended(&awaiting, Duration::from_secs(60), &[&worker]).await;
    assert_eq!(status, "succeeded");
    assert_eq!(output.as_deref(), Some(r#"err("cancelled: cancelled on request")"#));

    let mut rows = service.rows().await;
    let requested: i64 = rows.value("SELECT MS(cancel_requested_at) FROM workflows WHERE id = $1", &[&parent]).await;
    let children_gone = eventually(Duration::from_secs(10), || async {
        let live: i64 = Rows::open(&service.journal)
            .await
            .value("SELECT count(*) FROM workflows WHERE parent_id = $1 AND status <> 'cancelled'", &[&parent])
            .await;
        live == 0
    })
    .await;
    assert!(children_gone, "the cancelled parent's children were not all cancelled:\n{}", worker.stderr());
    let stops: Vec<(String, i64)> = rows
        .all(
            "SELECT s.workflow_id, MS(s.finished_at) FROM step_attempts s JOIN workflows w ON w.id = s.workflow_id \
             WHERE w.parent_id = $1",
            &[&parent],
        )
        .await;
    assert_eq!(stops.len(), 5, "{stops:?}");
    for (child, finished) in &stops {
        let took = finished - requested;
        eprintln!("child {child}'s nap stopped {took} ms after its parent's cancel");
        assert!((0..=limit_ms).contains(&took), "child {child}'s nap stopped {took} ms after the parent's cancel");
    }
    let (parent_status, detached_status): (String, String) = rows
        .one(
            "SELECT (SELECT status FROM workflows WHERE id = $1), \
             (SELECT status FROM workflows WHERE parent_id = $2)",
            &[&parent, &let_go],
        )
        .await;
    assert_eq!((parent_status.as_str(), detached_status.as_str()), ("cancelled", "running"));
    // Cancelling the detached child's parent (it has ended) leaves the child running.
    host_command(scratch.path(), &["cancel", &let_go, "--journal", &service.journal]);
    let detached: String = rows.value("SELECT status FROM workflows WHERE parent_id = $1", &[&let_go]).await;
    assert_eq!(detached, "running");
    stop(&mut worker);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_parent_cancels_its_children_on_postgres() {
    cancel_reaches_children(true, 1500).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_parent_cancels_its_children_on_sqlite() {
    cancel_reaches_children(false, 2000).await;
}

/// Starts the refusals can tell: an unknown entry, arguments that do not
/// fit, a taken id, a component not stored or not linking with the parent's
/// steps; and under `host run`, no workers. A child of another stored
/// component (by name, by digest) runs with the parent's steps.
#[tokio::test(flavor = "multi_thread")]
async fn bad_starts_are_refused_with_the_reason() {
    let service = Service::new(false).await;
    let taken = service.submit("child", &["1", "10"]).await;
    let taken_id = format!("\"{taken}\"");
    let cases = [
        (["\"nope\"", "\"[]\"", "\"\""], "`nope`"),
        (["\"child\"", "\"[1]\"", "\"\""], "takes 2 argument(s)"),
        (["\"child\"", "\"[\\\"x\\\", 5]\"", "\"\""], "expected"),
        (["\"child\"", "\"[1, 5]\"", taken_id.as_str()], "belongs to another workflow"),
    ];
    let mut ids = Vec::new();
    for (arguments, _) in &cases {
        let mut all = arguments.to_vec();
        all.push("false");
        ids.push(service.submit("try-child", &all).await);
    }
    let fan_out = service.upload("fan-out.wasm", artifacts::FAN_OUT).await;
    service.upload("queue-chain.wasm", artifacts::QUEUE_CHAIN).await;
    let adopted = [
        (service.submit("adopt", &["\"fan-out.wasm\"", "\"spread\"", "\"[3, 10]\""]).await, r#"ok("3")"#),
        (service.submit("adopt", &[&format!("\"{fan_out}\""), "\"spread\"", "\"[2, 10]\""]).await, r#"ok("2")"#),
    ];
    let refused = [
        (service.submit("adopt", &["\"nope.wasm\"", "\"run\"", "\"[]\""]).await, "no component nope.wasm is stored"),
        (
            service.submit("adopt", &["\"queue-chain.wasm\"", "\"chain\"", "\"[1, 1, 0, 1]\""]).await,
            "cannot run as a child of this workflow",
        ),
    ];
    let mut worker = service.worker("5s");
    for (id, expected) in &adopted {
        let (status, output) = service.ended(id, Duration::from_secs(60), &[&worker]).await;
        assert_eq!((status.as_str(), output.as_deref()), ("succeeded", Some(*expected)), "{}", worker.stderr());
    }
    let mut rows = service.rows().await;
    let digests: Vec<(String,)> =
        rows.all("SELECT component_digest FROM workflows WHERE parent_id = $1", &[&adopted[0].0]).await;
    assert_eq!(digests, vec![(fan_out.clone(),)], "the child runs the stored fan-out component");
    for (id, said) in &refused {
        let (status, output) = service.ended(id, Duration::from_secs(60), &[&worker]).await;
        let output = output.unwrap_or_default();
        assert_eq!(status, "succeeded");
        assert!(output.starts_with("err(") && output.contains(said), "{output} should say {said}");
    }
    for (id, (_, said)) in ids.iter().zip(&cases) {
        let (status, output) = service.ended(id, Duration::from_secs(60), &[&worker]).await;
        let output = output.unwrap_or_default();
        assert_eq!(status, "succeeded");
        assert!(output.starts_with("err(") && output.contains(said), "{output} should say {said}");
    }
    stop(&mut worker);
    let run = host_command(
        service.scratch.path(),
        &[
            "run",
            artifacts::FAMILY,
            "--step",
            artifacts::HOSTILE,
            "--invoke",
            "try-child",
            "--journal",
            &service.journal,
            "\"child\"",
            "\"[1, 5]\"",
            "\"\"",
            "false",
        ],
    );
    assert!(run.stdout.contains("child workflows run on workers"), "{}\n{}", run.stdout, run.stderr);
}
