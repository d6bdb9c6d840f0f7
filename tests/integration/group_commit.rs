//! Group commit, on real journals: a fast step's start and finish share one
//! transaction, concurrent workflows share commits, every row still lands,
//! and a workflow whose lease was taken over is refused inside a shared batch
//! without failing the others.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use stepbox::journal::{
    AttemptEnd, AttemptOutcome, CallEnd, CallRef, CallStatus, Claim, Journal, JournalError, JournalOptions,
    NewStepCall, NewWorkflow, Timestamp,
};
use stepbox::run::{RunRequest, RunSpec};
use stepbox_test_artifacts as artifacts;

use crate::support::{PostgresDb, Scratch, rows, runner};

fn spec() -> RunSpec {
    RunSpec {
        workflow: artifacts::BENCH_LOOP.into(),
        steps: vec![artifacts::NOOP.into()],
        invoke: Some("sequential".into()),
        ..RunSpec::default()
    }
}

fn request(id: Option<String>, steps: u32) -> RunRequest {
    RunRequest { id, arguments: vec![steps.to_string()] }
}

/// Runs one workflow of `steps` no-op steps; returns the attempt transactions it took.
async fn sequential(journal: &Journal, steps: u32) -> u64 {
    let runner = runner(journal, &spec());
    let before = journal.commit_count().attempt_batches;
    let id = format!("seq-{steps}-{}", Timestamp::now().millis());
    let outcome = runner.run(request(Some(id), steps)).await.expect("runs");
    assert_eq!(outcome.output, (0..u64::from(steps)).sum::<u64>().to_string());
    let rows = rows(journal.location(), &outcome.workflow_id).await;
    assert_eq!(rows.calls.len(), steps as usize);
    assert!(
        rows.calls.iter().all(|call| call.status == "succeeded" && call.attempts == 1 && call.finished_at.is_some())
    );
    assert_eq!(rows.attempts.len(), steps as usize);
    assert!(
        rows.attempts.iter().all(|attempt| attempt.outcome.as_deref() == Some("ok") && attempt.finished_at.is_some())
    );
    journal.commit_count().attempt_batches - before
}

async fn a_fast_steps_start_and_finish_share_one_transaction(target: &str) {
    let batched = Journal::open(target).await.expect("opens");
    let options = JournalOptions { group_commit: false, ..JournalOptions::default() };
    let unbatched = Journal::open_with(target, options).await.expect("opens");
    let steps = 40;
    assert_eq!(sequential(&unbatched, steps).await, 2 * u64::from(steps), "one transaction per write");
    // One per step, plus one for each step slower than the 5 ms lazy window on a loaded machine
    // (preemption of a few ms is common there): never near the two per step of no batching.
    let batches = sequential(&batched, steps).await;
    let most = u64::from(steps) + u64::from(steps) / 2;
    assert!(batches >= u64::from(steps) && batches <= most, "{batches} transactions for {steps} steps");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_steps_start_and_finish_share_one_transaction_on_sqlite() {
    let scratch = Scratch::new();
    a_fast_steps_start_and_finish_share_one_transaction(&scratch.journal()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_steps_start_and_finish_share_one_transaction_on_postgres() {
    let db = PostgresDb::create().await;
    a_fast_steps_start_and_finish_share_one_transaction(&db.url).await;
}

async fn concurrent_workflows_share_commits(target: &str) {
    let journal = Journal::open(target).await.expect("opens");
    let runner = Arc::new(runner(&journal, &spec()));
    let (workflows, steps) = (20, 10u32);
    let before = journal.commit_count().attempt_batches;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workflows {
        let runner = runner.clone();
        tasks.spawn(async move { runner.run(request(None, steps)).await });
    }
    let mut ids = Vec::new();
    while let Some(result) = tasks.join_next().await {
        let outcome = result.expect("joins").expect("runs");
        assert_eq!(outcome.output, "45");
        ids.push(outcome.workflow_id);
    }
    let batches = journal.commit_count().attempt_batches - before;
    let total = (workflows * steps) as u64;
    assert!(batches <= total / 2, "{batches} transactions for {total} steps of {workflows} concurrent workflows");
    for id in ids {
        let rows = rows(target, &id).await;
        assert_eq!(rows.workflow.map(|(status, _)| status).as_deref(), Some("succeeded"));
        assert_eq!((rows.calls.len(), rows.attempts.len()), (steps as usize, steps as usize));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_workflows_share_commits_on_sqlite() {
    let scratch = Scratch::new();
    concurrent_workflows_share_commits(&scratch.journal()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_workflows_share_commits_on_postgres() {
    let db = PostgresDb::create().await;
    concurrent_workflows_share_commits(&db.url).await;
}

fn workflow(id: &str) -> NewWorkflow {
    NewWorkflow {
        id: id.into(),
        name: "c".into(),
        component: "c.wasm".into(),
        component_digest: "d".into(),
        entry: "run".into(),
        input: "()".into(),
        input_json: json!([]),
        options: json!({}),
        created_at: Timestamp::now(),
    }
}

async fn a_taken_over_workflow_is_refused_within_a_shared_batch(target: &str) {
    let journal = Journal::open(target).await.expect("opens");
    let me = "me:1:aaaa";
    let a_minute = Duration::from_secs(60);
    let kept = journal.create_workflow(&workflow("kept"), me, a_minute).await.expect("creates").expect("new");
    // Its lease already lapsed, and another executor takes it.
    let lost = journal.create_workflow(&workflow("lost"), me, Duration::ZERO).await.expect("creates").expect("new");
    let claim = journal.claim_workflow("lost", "them:2:bbbb", a_minute).await.expect("claims");
    assert!(matches!(claim, Claim::Claimed(ref lease) if lease.epoch == 2), "{claim:?}");
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
    let call_end =
        || CallEnd { status: CallStatus::Succeeded, output: Some("ok(1)".into()), output_json: Some(json!({"ok": 1})) };
    // Queued together, so they travel in one batch.
    let mut writes = Vec::new();
    for lease in [&kept, &lost] {
        let at = CallRef { lease, seq: 1 };
        writes.push(journal.start_attempt(at, 1, Timestamp::now(), Some(&call)));
        writes.push(journal.finish_attempt(at, 1, end(), Some(call_end())));
    }
    let results: Vec<_> = settle_all(writes).await;
    assert!(results[..2].iter().all(Result::is_ok), "{results:?}");
    assert!(results[2..].iter().all(|result| matches!(result, Err(JournalError::NotOwner { id, .. }) if id == "lost")));
    assert_eq!(journal.step_calls("kept").await.expect("reads").len(), 1);
    assert!(journal.step_calls("lost").await.expect("reads").is_empty());
    assert!(journal.attempts("lost").await.expect("reads").is_empty());
    // Alone in its batch (on PostgreSQL, one workflow's batch is another statement), it is refused too.
    let at = CallRef { lease: &lost, seq: 2 };
    let alone = vec![
        journal.start_attempt(at, 1, Timestamp::now(), Some(&call)),
        journal.finish_attempt(at, 1, end(), Some(call_end())),
    ];
    let results = settle_all(alone).await;
    assert!(results.iter().all(|result| matches!(result, Err(JournalError::NotOwner { id, .. }) if id == "lost")));
    assert!(journal.step_calls("lost").await.expect("reads").is_empty());
    // And a workflow still held writes alone.
    let at = CallRef { lease: &kept, seq: 2 };
    let alone = vec![
        journal.start_attempt(at, 1, Timestamp::now(), Some(&call)),
        journal.finish_attempt(at, 1, end(), Some(call_end())),
    ];
    assert!(settle_all(alone).await.iter().all(Result::is_ok));
    assert_eq!(journal.step_calls("kept").await.expect("reads").len(), 2);
}

async fn settle_all(writes: Vec<stepbox::journal::PendingWrite>) -> Vec<Result<(), JournalError>> {
    let mut results = Vec::new();
    for write in writes {
        results.push(tokio::time::timeout(Duration::from_secs(10), write.durable()).await.expect("commits in time"));
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_over_workflow_is_refused_within_a_shared_batch_on_sqlite() {
    let scratch = Scratch::new();
    a_taken_over_workflow_is_refused_within_a_shared_batch(&scratch.journal()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_over_workflow_is_refused_within_a_shared_batch_on_postgres() {
    let db = PostgresDb::create().await;
    a_taken_over_workflow_is_refused_within_a_shared_batch(&db.url).await;
}

/// More concurrent workflows than the engine's instance pool holds (each
/// holds a workflow instance plus a step instance per attempt): the runner
/// queues the excess instead of failing their steps for want of a slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_workflows_than_the_instance_pool_holds_all_finish() {
    let scratch = Scratch::new();
    let target = scratch.journal();
    let journal = Journal::open(&target).await.expect("opens");
    let runner = Arc::new(runner(&journal, &spec()));
    let workflows = stepbox::wasm::POOL_COMPONENT_INSTANCES as usize + 200;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workflows {
        let runner = runner.clone();
        tasks.spawn(async move { runner.run(request(None, 3)).await });
    }
    let mut finished = 0;
    while let Some(result) =
        tokio::time::timeout(Duration::from_secs(120), tasks.join_next()).await.expect("no deadlock")
    {
        assert_eq!(result.expect("joins").expect("runs").output, "3", "every step succeeded on its first attempt");
        finished += 1;
    }
    assert_eq!(finished, workflows);
}
