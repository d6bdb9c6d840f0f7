//! The journal's behaviour, one suite run against SQLite and PostgreSQL alike
//! (each case is an `async fn(target)` and `on_both!` makes a test per
//! backend): leases renewed exactly as held, fences by (workflow, epoch),
//! reclaims recorded, and what only PostgreSQL's row locks make possible.

use std::time::Duration;

use serde_json::json;
use sqlx::Connection as _;
use stepbox::journal::{
    AttemptEnd, AttemptOutcome, CallEnd, CallRef, CallStatus, Claim, Finish, Journal, JournalError, Lease, NewStepCall,
    NewSubmission, NewWorkflow, QueueLimits, Renewal, Submitted, Timestamp, WorkflowFilter, WorkflowStatus,
};

use crate::support::PostgresDb;

/// A test per backend for `case(target)`: `NAME::sqlite` and `NAME::postgres`.
macro_rules! on_both {
    ($case:ident) => {
        mod $case {
            #[tokio::test]
            async fn sqlite() {
                let scratch = crate::support::Scratch::new();
                super::$case(&scratch.journal()).await;
            }

            #[tokio::test]
            async fn postgres() {
                let db = crate::support::PostgresDb::create().await;
                super::$case(&db.url).await;
            }
        }
    };
}

fn workflow(id: &str) -> NewWorkflow {
    NewWorkflow {
        id: id.into(),
        name: "w".into(),
        component: "w.wasm".into(),
        component_digest: "d".into(),
        entry: "run".into(),
        input: "()".into(),
        input_json: json!([]),
        options: json!({}),
        created_at: Timestamp::now(),
    }
}

const A_MINUTE: Duration = Duration::from_secs(60);

/// When a workflow's lease expires, as the database keeps it.
async fn expiry(journal: &Journal, id: &str) -> Option<Timestamp> {
    journal.workflow(id).await.expect("reads").expect("exists").lease_expires_at
}

/// A renewal renews exactly the (workflow, epoch) pairs it is given, and
/// never a lease that has lapsed: a workflow whose release failed is not
/// kept alive by its old owner's heartbeat.
async fn renewals_renew_exactly_what_is_held(target: &str) {
    let journal = Journal::open(target).await.expect("opens");
    let me = "me:1:aaaa";
    let held = journal.create_workflow(&workflow("held"), me, A_MINUTE).await.expect("creates").expect("new");
    journal.create_workflow(&workflow("forgotten"), me, A_MINUTE).await.expect("creates").expect("new");
    let lapsed = journal.create_workflow(&workflow("lapsed"), me, Duration::ZERO).await.expect("creates").expect("new");
    let before = expiry(&journal, "forgotten").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let wrong_epoch = Lease { epoch: 7, ..held.clone() };
    let (renewals, _) =
        journal.renew_leases(me, &[held.clone(), lapsed, wrong_epoch], A_MINUTE, A_MINUTE).await.expect("renews");
    assert_eq!(renewals, [Renewal::Held { cancel: false }, Renewal::Lost, Renewal::Lost]);
    assert_eq!(expiry(&journal, "forgotten").await, before, "a lease not held is not renewed");
    assert!(expiry(&journal, "held").await > before, "the held lease is");
}
on_both!(renewals_renew_exactly_what_is_held);

/// Writes queued under an older lease of a workflow (this process claimed it
/// again since) never land, even in one batch with the newer lease's writes.
async fn a_write_under_an_older_epoch_never_lands_beside_the_newer_ones(target: &str) {
    let journal = Journal::open(target).await.expect("opens");
    let me = "me:1:aaaa";
    let old = journal.create_workflow(&workflow("w"), me, Duration::ZERO).await.expect("creates").expect("new");
    let Claim::Claimed(new) = journal.claim_workflow("w", me, A_MINUTE).await.expect("claims") else {
        panic!("claimed again")
    };
    assert_eq!((old.epoch, new.epoch), (1, 2));
    let input_json = json!([1]);
    let call = NewStepCall { step: "s:t/steps.f", input: "(1)", input_json: &input_json, max_attempts: 3 };
    let end = || AttemptEnd {
        outcome: AttemptOutcome::Ok,
        kind: None,
        message: None,
        retry_at: None,
        finished_at: Some(Timestamp::now()),
        stdout: None,
        stderr: None,
    };
    let call_end = || CallEnd { status: CallStatus::Succeeded, output: Some("ok(1)".into()), output_json: None };
    // Queued back to back, before the writer runs (this test's runtime has one thread): one batch.
    let writes = [(&old, 1), (&new, 2)].map(|(lease, seq)| {
        let call_ref = CallRef { lease, seq };
        let start = journal.start_attempt(call_ref, 1, Timestamp::now(), Some(&call));
        let finish = journal.finish_attempt(call_ref, 1, end(), Some(call_end()));
        (start, finish)
    });
    let [(old_start, old_finish), (new_start, new_finish)] = writes;
    assert!(matches!(old_finish.durable().await, Err(JournalError::NotOwner { .. })));
    assert!(matches!(old_start.durable().await, Err(JournalError::NotOwner { .. })));
    new_start.durable().await.expect("the new lease's start lands");
    new_finish.durable().await.expect("the new lease's finish lands");
    let seqs: Vec<i64> = journal.step_calls("w").await.expect("calls").iter().map(|call| call.seq).collect();
    assert_eq!(seqs, [2], "only the newer lease's call is in the journal");
    assert_eq!(journal.attempts("w").await.expect("attempts").len(), 1);
}
on_both!(a_write_under_an_older_epoch_never_lands_beside_the_newer_ones);

/// A lapsed lease that the reaper puts back in its queue is a `reclaimed`
/// event naming the owner it was taken from.
async fn reclaims_are_recorded_as_events(target: &str) {
    let journal = Journal::open(target).await.expect("opens");
    let submission = NewSubmission {
        workflow: workflow("q"),
        queue: "default".into(),
        priority: 0,
        partition_key: None,
        dedup_key: None,
        run_at: Timestamp::now(),
        deadline_at: None,
    };
    journal.submit_workflow(&submission).await.expect("submits");
    let claimed = journal.claim_workflows("default", "gone:1:aaaa", 10, Duration::ZERO).await.expect("claims");
    assert_eq!(claimed.len(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let reaped = journal.reap_workflows(5).await.expect("reaps");
    assert_eq!(reaped.requeued, ["q"]);
    let events = journal.events("q").await.expect("events");
    let reclaimed: Vec<_> = events.iter().filter(|event| event.kind == "reclaimed").collect();
    assert_eq!(reclaimed.len(), 1, "{events:?}");
    assert_eq!(reclaimed[0].detail["from"], "gone:1:aaaa");
}
on_both!(reclaims_are_recorded_as_events);

/// A workflow taken back by the owner that let its lease lapse gets a new
/// epoch (the old one's writes are fenced out); one taken over by another
/// owner meanwhile is not taken back.
async fn a_lapsed_lease_is_taken_back_only_if_nobody_took_it(target: &str) {
    let journal = Journal::open(target).await.expect("opens");
    let me = "me:1:aaaa";
    let lapsed = journal.create_workflow(&workflow("back"), me, Duration::ZERO).await.expect("creates").expect("new");
    let back = journal.take_back(&lapsed, A_MINUTE).await.expect("takes back").expect("still ours");
    assert_eq!(back.epoch, lapsed.epoch + 1);
    let events: Vec<String> =
        journal.events("back").await.expect("events").into_iter().map(|event| event.kind).collect();
    assert_eq!(events, ["taken-back"]);

    let lapsed = journal.create_workflow(&workflow("gone"), me, Duration::ZERO).await.expect("creates").expect("new");
    let claim = journal.claim_workflow("gone", "them:2:bbbb", A_MINUTE).await.expect("claims");
    assert!(matches!(claim, Claim::Claimed(_)), "{claim:?}");
    assert_eq!(journal.take_back(&lapsed, A_MINUTE).await.expect("answers"), None);
    let events: Vec<String> =
        journal.events("gone").await.expect("events").into_iter().map(|event| event.kind).collect();
    assert_eq!(events, ["taken-over"], "a claim of a lapsed lease says whose it was");
}
on_both!(a_lapsed_lease_is_taken_back_only_if_nobody_took_it);

/// `prune` takes the workflow rows first and skips one that changed since it
/// was picked: a dead workflow requeued while the prune waits on its row
/// keeps its history (PostgreSQL: SQLite's write lock serializes the two).
#[tokio::test]
async fn a_prune_skips_a_dead_workflow_requeued_meanwhile_and_keeps_its_history() {
    let db = PostgresDb::create().await;
    let journal = Journal::open(&db.url).await.expect("opens");
    let lease = journal.create_workflow(&workflow("dead"), "me:1:aaaa", A_MINUTE).await.expect("creates").expect("new");
    let input_json = json!([1]);
    let call = NewStepCall { step: "s:t/steps.f", input: "(1)", input_json: &input_json, max_attempts: 3 };
    let call_ref = CallRef { lease: &lease, seq: 1 };
    journal.start_attempt(call_ref, 1, Timestamp::now(), Some(&call)).durable().await.expect("written");
    assert!(journal.bury(&lease, "for the test").await.expect("buried"));
    // Another session requeues it, and holds on before committing.
    let mut requeue = sqlx::PgConnection::connect(&db.url).await.expect("connects");
    sqlx::raw_sql(
        "SET search_path TO stepbox; BEGIN; UPDATE workflows SET status = 'enqueued', queue = 'default', \
         finished_at = NULL WHERE id = 'dead'",
    )
    .execute(&mut requeue)
    .await
    .expect("requeue under way");
    let pruning = tokio::spawn({
        let journal = journal.clone();
        async move { journal.prune_workflows(Timestamp::now().plus(Duration::from_secs(60))).await }
    });
    // The prune waits on the workflow's row; then the requeue commits.
    let mut watch = sqlx::PgConnection::connect(&db.url).await.expect("connects");
    let mut waited = false;
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'DELETE FROM workflows%'",
        )
        .fetch_one(&mut watch)
        .await
        .expect("activity");
        if waiting > 0 {
            waited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(waited, "the prune never waited on the workflow's row");
    sqlx::raw_sql("COMMIT").execute(&mut requeue).await.expect("requeued");
    let pruned = pruning.await.expect("the prune task").expect("prunes");
    assert_eq!(pruned, 0, "the requeued workflow is not pruned");
    assert_eq!(journal.step_calls("dead").await.expect("calls").len(), 1, "its history is whole");
    assert_eq!(journal.attempts("dead").await.expect("attempts").len(), 1);
}

/// A SQLite journal written before workflows could wait (migrations 1 and 2)
/// opens with this version: migration 3 rebuilds its workflows table (SQLite
/// changes a CHECK no other way) and keeps every call, attempt and event.
#[tokio::test]
async fn an_older_sqlite_journal_keeps_its_rows_through_the_rebuild_of_migration_3() {
    let scratch = tempfile::tempdir().expect("scratch");
    let older = scratch.path().join("migrations");
    std::fs::create_dir(&older).expect("folder");
    let ours = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    for file in ["0001_journal.sql", "0002_lease_safety.sql"] {
        std::fs::copy(ours.join(file), older.join(file)).expect("copied");
    }
    let path = scratch.path().join("journal.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut connection = sqlx::SqliteConnection::connect(&url).await.expect("a new file");
    sqlx::raw_sql("PRAGMA foreign_keys = ON").execute(&mut connection).await.expect("pragma");
    let migrator = sqlx::migrate::Migrator::new(older.as_path()).await.expect("the older migrations");
    migrator.run(&mut connection).await.expect("the older schema");
    sqlx::raw_sql(
        "INSERT INTO workflows (id, name, component, component_digest, entry, input, input_json, status, options, \
         created_at, updated_at) VALUES ('old', 'w', 'w.wasm', 'd', 'run', '()', '[]', 'succeeded', '{}', 1, 1); \
         INSERT INTO step_calls (workflow_id, seq, step, input, input_json, status, attempts, max_attempts, started_at) \
         VALUES ('old', 1, 'a:b/c.d', '()', '[]', 'succeeded', 2, 3, 1); \
         INSERT INTO step_attempts (workflow_id, seq, attempt, executor, started_at, outcome) \
         VALUES ('old', 1, 1, 'x', 1, 'failed'), ('old', 1, 2, 'x', 2, 'ok'); \
         INSERT INTO workflow_events (workflow_id, at, kind, detail) VALUES ('old', 1, 'reclaimed', '{}');",
    )
    .execute(&mut connection)
    .await
    .expect("rows of an older journal");
    connection.close().await.expect("closed");

    let journal = Journal::open(&path.display().to_string()).await.expect("this version opens it");
    let history = journal.history("old").await.expect("read").expect("the workflow is there");
    assert_eq!(history.calls.len(), 1);
    assert_eq!(history.calls[0].attempts.len(), 2, "its attempts survived the rebuild");
    assert_eq!(history.events.len(), 1, "its events survived the rebuild");
    assert_eq!(history.workflow.waiting_for, None);
    // The rebuilt table takes the new status, and its foreign keys still hold.
    let mut connection = sqlx::SqliteConnection::connect(&url).await.expect("reopened");
    sqlx::raw_sql("PRAGMA foreign_keys = ON").execute(&mut connection).await.expect("pragma");
    sqlx::raw_sql("UPDATE workflows SET status = 'waiting' WHERE id = 'old'")
        .execute(&mut connection)
        .await
        .expect("waiting is a status now");
    let orphan = sqlx::raw_sql(
        "INSERT INTO step_calls (workflow_id, seq, step, input, input_json, status, attempts, max_attempts, \
         started_at) VALUES ('nobody', 1, 's', '()', '[]', 'running', 0, 0, 1)",
    )
    .execute(&mut connection)
    .await;
    assert!(orphan.is_err(), "a call of no workflow is refused by the rebuilt table's foreign key");
    let violations: Vec<(String,)> =
        sqlx::query_as("PRAGMA foreign_key_check").fetch_all(&mut connection).await.expect("check");
    assert!(violations.is_empty(), "{violations:?}");
}

/// A new SQLite journal opens while other connections read the file the
/// moment it exists (a `host list` or a test polling a `host run` that is
/// starting): its switch to WAL meets their locks and waits them out, and
/// every reader gets the journal or "not there yet", never a locked error.
#[test]
fn a_new_sqlite_journal_opens_while_others_poll_it() {
    use std::sync::atomic::{AtomicBool, Ordering};
    for round in 0..20 {
        let scratch = tempfile::tempdir().expect("scratch");
        let path = scratch.path().join("journal.db").display().to_string();
        let done = std::sync::Arc::new(AtomicBool::new(false));
        // Each poller on a thread and runtime of its own, as another process would be.
        let pollers: Vec<_> = (0..4)
            .map(|_| {
                let (path, done) = (path.clone(), done.clone());
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                    let mut locked = Vec::new();
                    while !done.load(Ordering::SeqCst) {
                        match runtime.block_on(Journal::open_existing(&path)) {
                            Ok(journal) => {
                                runtime.block_on(journal.workflow("w1")).expect("a read of an opened journal");
                            }
                            Err(error) if error.to_string().contains("locked") => locked.push(error.to_string()),
                            Err(_) => std::thread::yield_now(),
                        }
                    }
                    locked
                })
            })
            .collect();
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let opened = runtime.block_on(Journal::open(&path));
        done.store(true, Ordering::SeqCst);
        opened.unwrap_or_else(|error| panic!("round {round}: the new journal did not open: {error}"));
        for poller in pollers {
            let locked = poller.join().expect("poller");
            assert!(locked.is_empty(), "round {round}: a reader was told the journal is locked: {locked:?}");
        }
    }
}

/// A SQLite file another connection keeps under an exclusive lock past the
/// busy timeout is refused with what holds it, not a bare "database is locked".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_file_locked_past_the_busy_timeout_is_refused_clearly() {
    let scratch = tempfile::tempdir().expect("scratch");
    let path = scratch.path().join("held.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut holder = sqlx::SqliteConnection::connect(&url).await.expect("a new file");
    sqlx::raw_sql("CREATE TABLE held (x); BEGIN EXCLUSIVE; INSERT INTO held VALUES (1);")
        .execute(&mut holder)
        .await
        .expect("an exclusive lock");
    let started = std::time::Instant::now();
    let refused = Journal::open_existing(&path.display().to_string()).await.err().expect("refused while held");
    let message = refused.to_string();
    assert!(message.contains("stayed locked by another process for 5 s"), "{message}");
    assert!(message.contains("let it finish or stop it"), "{message}");
    assert!(started.elapsed() >= Duration::from_secs(5), "it waited the lock out first: {:?}", started.elapsed());
    sqlx::raw_sql("ROLLBACK").execute(&mut holder).await.expect("released");
}

/// Submits and finishes made at once by one process each get their own
/// answer — new, the same submission again, an id taken, a dedup key held,
/// a finish under a lost lease refused — and on PostgreSQL they share
/// statements: fewer commits than calls.
async fn concurrent_submits_and_finishes_each_get_their_own_answer(target: &str) {
    let journal = Journal::open(target).await.expect("opens");
    let submission = |id: &str, input: &str, dedup: Option<&str>| NewSubmission {
        workflow: NewWorkflow { input: input.into(), ..workflow(id) },
        queue: "together".into(),
        priority: 0,
        partition_key: None,
        dedup_key: dedup.map(str::to_string),
        run_at: Timestamp::now(),
        deadline_at: None,
    };
    let mut submissions: Vec<NewSubmission> = (0..30).map(|n| submission(&format!("s-{n}"), "()", None)).collect();
    // The same submission again is no conflict; the same id with another input is.
    submissions.push(submission("s-5", "()", None));
    submissions.push(submission("s-6", "(7)", None));
    submissions.extend((0..5).map(|n| submission(&format!("d-{n}"), "()", Some("key"))));
    let before = journal.commit_count().workflow_commits;
    let mut calls = tokio::task::JoinSet::new();
    for (index, submission) in submissions.into_iter().enumerate() {
        let journal = journal.clone();
        calls.spawn(async move { (index, submission.workflow.id.clone(), journal.submit_workflow(&submission).await) });
    }
    let mut answers = calls.join_all().await;
    answers.sort_by_key(|(index, _, _)| *index);
    let submits = journal.commit_count().workflow_commits - before;
    let mut holder = None;
    for (index, id, answer) in &answers {
        let answer = answer.as_ref().expect("submits");
        match (*index, id.as_str()) {
            (0..=30, _) => assert_eq!(*answer, Submitted::New, "{id}"),
            (31, _) => assert_eq!(*answer, Submitted::IdTaken, "{id}"),
            (_, id) => match answer {
                Submitted::New => assert!(holder.replace(id.to_string()).is_none(), "one new holder of the key"),
                Submitted::Deduplicated(_) => {}
                other => panic!("{id}: {other:?}"),
            },
        }
    }
    let holder = holder.expect("one submit of the dedup key went in");
    for (_, id, answer) in answers.iter().filter(|(_, id, _)| id.starts_with("d-") && *id != holder) {
        assert_eq!(answer.as_ref().expect("submits"), &Submitted::Deduplicated(holder.clone()), "{id}");
    }
    let six = journal.workflow("s-6").await.expect("reads").expect("exists");
    assert_eq!(six.input, "()", "the first submit of s-6 kept its row");

    // Finish 20 at once; one of them under an older epoch than the one that holds it.
    let claimed = journal.claim_workflows("together", "me:1:aaaa", 20, A_MINUTE).await.expect("claims");
    assert_eq!(claimed.len(), 20);
    let before = journal.commit_count().workflow_commits;
    let mut finishes = tokio::task::JoinSet::new();
    for (n, claimed) in claimed.into_iter().enumerate() {
        let journal = journal.clone();
        let mut lease = claimed.lease;
        if n == 0 {
            lease.epoch -= 1;
        }
        let finish = Finish {
            status: WorkflowStatus::Succeeded,
            output: Some(format!("{n}")),
            output_json: Some(json!(n)),
            error: None,
        };
        finishes.spawn(async move { (lease.workflow_id.clone(), n, journal.finish_workflow(&lease, &finish).await) });
    }
    for (id, n, finished) in finishes.join_all().await {
        assert_eq!(finished.expect("answers"), n != 0, "{id}: only the lease that holds it finishes it");
        let row = journal.workflow(&id).await.expect("reads").expect("exists");
        match n {
            0 => assert_eq!(row.status, WorkflowStatus::Running, "{id}"),
            n => {
                assert_eq!(row.status, WorkflowStatus::Succeeded, "{id}");
                assert_eq!(row.output.as_deref(), Some(n.to_string().as_str()), "{id}");
            }
        }
    }
    let finishes = journal.commit_count().workflow_commits - before;
    if target.starts_with("postgres") {
        assert!(submits < 36, "36 submits at once took {submits} commits: they did not share statements");
        assert!(finishes < 20, "20 finishes at once took {finishes} commits: they did not share statements");
    }
}
on_both!(concurrent_submits_and_finishes_each_get_their_own_answer);

/// A worker's finish wakes whoever waits for that workflow's result: on
/// PostgreSQL through its announcement (a watch would otherwise sleep its
/// whole minute), the finishes of a shared statement each to its own
/// waiters and nobody else's; on SQLite the wait polls. Either way
/// `operate::result` hands over the output.
async fn a_finish_wakes_the_waiters_of_that_workflow(target: &str) {
    let journal = Journal::open(target).await.expect("opens");
    for n in 0..3 {
        let submission = NewSubmission {
            workflow: workflow(&format!("e-{n}")),
            queue: "ends".into(),
            priority: 0,
            partition_key: None,
            dedup_key: None,
            run_at: Timestamp::now(),
            deadline_at: None,
        };
        assert_eq!(journal.submit_workflow(&submission).await.expect("submits"), Submitted::New);
    }
    let claimed = journal.claim_workflows("ends", "me:1:aaaa", 3, A_MINUTE).await.expect("claims");
    assert_eq!(claimed.len(), 3);
    let waiting = tokio::spawn({
        let journal = journal.clone();
        async move { stepbox::operate::result(&journal, "e-0", Duration::from_secs(60)).await }
    });
    let (mut first, mut second, mut untouched) =
        (journal.watch_end("e-0").await, journal.watch_end("e-1").await, journal.watch_end("e-2").await);
    let began = std::time::Instant::now();
    let mut finishes = tokio::task::JoinSet::new();
    for claimed in claimed.into_iter().filter(|claimed| claimed.workflow.id != "e-2") {
        let journal = journal.clone();
        let finish = Finish {
            status: WorkflowStatus::Succeeded,
            output: Some(format!("\"{}\"", claimed.workflow.id)),
            output_json: Some(json!(claimed.workflow.id)),
            error: None,
        };
        finishes.spawn(async move { journal.finish_workflow(&claimed.lease, &finish).await });
    }
    for finished in finishes.join_all().await {
        assert!(finished.expect("finishes"), "each finishes under its own lease");
    }
    let result = waiting.await.expect("the waiter ran").expect("a result");
    assert_eq!(result.status, WorkflowStatus::Succeeded);
    assert_eq!(result.output, Some(json!("e-0")));
    if target.starts_with("postgres") {
        first.notice_or(Duration::from_secs(60)).await;
        second.notice_or(Duration::from_secs(60)).await;
        assert!(began.elapsed() < Duration::from_secs(30), "the finishes' announcements did not wake their watches");
        // Nothing announced e-2's end: its watch waits out what it was given.
        let quiet = std::time::Instant::now();
        untouched.notice_or(Duration::from_millis(300)).await;
        assert!(quiet.elapsed() >= Duration::from_millis(300), "a finish woke another workflow's watch");
    }
}
on_both!(a_finish_wakes_the_waiters_of_that_workflow);

/// What a workflow runs with, as its options record it (components, entry,
/// step settings) with its own `arguments`.
fn options_of(arguments: &str, max_attempts: u32) -> serde_json::Value {
    json!({
        "workflow": {"path": "/srv/w.wasm", "digest": "aa"},
        "steps": [{"path": "/srv/s.wasm", "digest": "bb"}],
        "entry": "run",
        "settings": {"a:b/c.d": {"max_attempts": max_attempts, "backoff": 2.0, "grants": {"env": ["HOME"]}}},
        "max_concurrent_calls": 16,
        "arguments": [arguments],
    })
}

/// The rows of `deployments` and the `options` of the workflow rows, as the database keeps them.
async fn stored_rows(target: &str) -> (i64, Vec<serde_json::Value>) {
    if target.starts_with("postgres") {
        let mut connection = sqlx::PgConnection::connect(target).await.expect("connects");
        let count = sqlx::query_scalar("SELECT count(*) FROM stepbox.deployments").fetch_one(&mut connection);
        let count = count.await.expect("counts");
        let own = sqlx::query_scalar("SELECT options FROM stepbox.workflows ORDER BY id").fetch_all(&mut connection);
        (count, own.await.expect("reads"))
    } else {
        let mut connection = sqlx::SqliteConnection::connect(&format!("sqlite://{target}")).await.expect("connects");
        let count = sqlx::query_scalar("SELECT count(*) FROM deployments").fetch_one(&mut connection);
        let count = count.await.expect("counts");
        let own: Vec<String> = sqlx::query_scalar("SELECT options FROM workflows ORDER BY id")
            .fetch_all(&mut connection)
            .await
            .expect("reads");
        (count, own.iter().map(|text| serde_json::from_str(text).expect("JSON")).collect())
    }
}

/// A deployment is stored once for the workflows that run it, however they
/// were written (submits at once and alone, `host run`'s create, a claim's
/// answer, a list, an update of the options), and every workflow's options
/// read back exactly as written; the workflow rows keep only their arguments.
async fn a_deployment_is_stored_once_and_options_read_back_whole(target: &str) {
    let journal = Journal::open(target).await.expect("opens");
    let submission = |id: &str| NewSubmission {
        workflow: NewWorkflow { options: options_of(id, 3), ..workflow(id) },
        queue: "shared".into(),
        priority: 0,
        partition_key: None,
        dedup_key: None,
        run_at: Timestamp::now(),
        deadline_at: None,
    };
    let mut submits = tokio::task::JoinSet::new();
    for n in 0..12 {
        let (journal, submission) = (journal.clone(), submission(&format!("q-{n:02}")));
        submits.spawn(async move { journal.submit_workflow(&submission).await });
    }
    for submitted in submits.join_all().await {
        assert_eq!(submitted.expect("submits"), Submitted::New);
    }
    assert_eq!(journal.submit_workflow(&submission("q-alone")).await.expect("submits"), Submitted::New);
    let created = NewWorkflow { options: options_of("r-run", 3), ..workflow("r-run") };
    let lease = journal.create_workflow(&created, "x", A_MINUTE).await.expect("creates").expect("new");

    let (deployments, own) = stored_rows(target).await;
    assert_eq!(deployments, 1, "one deployment for the 14 workflows that run it");
    assert_eq!(own.len(), 14);
    for options in &own {
        assert_eq!(options.as_object().map(|fields| fields.len()), Some(1), "only the arguments: {options}");
    }

    for id in ["q-00", "q-11", "q-alone", "r-run"] {
        let row = journal.workflow(id).await.expect("reads").expect("exists");
        assert_eq!(row.options, options_of(id, 3), "{id} reads back whole");
    }
    let claimed = journal.claim_workflows("shared", "y", 20, A_MINUTE).await.expect("claims");
    assert_eq!(claimed.len(), 13);
    for claim in &claimed {
        assert_eq!(claim.workflow.options, options_of(&claim.workflow.id, 3), "a claim's answer is whole");
    }
    let filter = WorkflowFilter { limit: 100, ..WorkflowFilter::default() };
    let listed = journal.list_workflows(&filter).await.expect("lists");
    assert_eq!(listed.len(), 14);
    assert!(listed.iter().all(|row| row.options == options_of(&row.id, 3)), "a list's rows are whole");

    // Options changed under a lease name another deployment, stored beside the first.
    journal.update_options(&lease, &options_of("r-run", 5)).await.expect("updates");
    let row = journal.workflow("r-run").await.expect("reads").expect("exists");
    assert_eq!(row.options, options_of("r-run", 5));
    assert_eq!(stored_rows(target).await.0, 2);
    assert_eq!(journal.workflow("q-00").await.expect("reads").expect("exists").options, options_of("q-00", 3));
}
on_both!(a_deployment_is_stored_once_and_options_read_back_whole);

/// A claim that began before a submit committed (waiting on the queue's lock
/// meanwhile) still answers the workflow's options whole: the deployment the
/// submit stored with the row is read by the claim's own update, not by a
/// statement whose snapshot predates the submit. The first workflow of each
/// new deployment, claimed at once by a waiting worker, read as options with
/// no deployment ("missing field `workflow`") before.
#[tokio::test]
async fn a_claim_waiting_on_the_queue_reads_a_deployment_committed_meanwhile() {
    let db = PostgresDb::create().await;
    let journal = Journal::open(&db.url).await.expect("opens");
    let limits = QueueLimits {
        name: "locked".into(),
        concurrency: Some(10),
        partition_concurrency: None,
        rate_limit: None,
        rate_period_ms: None,
    };
    journal.set_queue(&limits).await.expect("a queue with a row to lock");
    let mut submitter = sqlx::PgConnection::connect(&db.url).await.expect("connects");
    sqlx::raw_sql(
        "SET search_path TO stepbox; BEGIN; SELECT * FROM queues WHERE name = 'locked' FOR UPDATE; \
         INSERT INTO deployments (digest, deployment, created_at) VALUES ('new', '{\"entry\": \"run\"}', now()); \
         INSERT INTO workflows (id, name, component, component_digest, entry, input, input_json, status, options, \
         queue, run_at, created_at, updated_at, deployment) VALUES ('late', 'w', 'w.wasm', 'd', 'run', '()', '[]', \
         'enqueued', '{\"arguments\": []}', 'locked', now(), now(), now(), 'new');",
    )
    .execute(&mut submitter)
    .await
    .expect("the submit, not committed yet");
    let claiming = tokio::spawn({
        let journal = journal.clone();
        async move { journal.claim_workflows("locked", "x", 1, A_MINUTE).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!claiming.is_finished(), "the claim waits for the queue's lock");
    sqlx::raw_sql("COMMIT").execute(&mut submitter).await.expect("committed");
    let claimed = claiming.await.expect("the claim ran").expect("claims");
    assert_eq!(claimed.len(), 1, "the claim takes the workflow committed while it waited");
    assert_eq!(claimed[0].workflow.options, json!({"entry": "run", "arguments": []}));
}
