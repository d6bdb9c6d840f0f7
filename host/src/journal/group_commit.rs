//! Group commit: the attempt writes of every workflow in this process go to
//! one writer task, which commits whatever is queued in one transaction and
//! only then tells each writer that its rows are durable.
//!
//! Writes are *urgent* when a workflow waits on them (a call's final outcome)
//! and *lazy* otherwise (an attempt's start, a failed attempt that will be
//! retried). A batch is committed as soon as it holds an urgent write, or
//! [`LAZY_WINDOW`] after its first lazy one: a no-op step's start and finish
//! land in one row of one transaction, and concurrent workflows share commits.
//! Nothing a workflow can observe is released before it is durable; what the
//! lazy window trades is that a crash within it may forget an attempt that
//! had just started (it runs again under the same number).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::{AnyPool, Row as _};
use tokio::sync::{Notify, mpsc, oneshot};

use super::{AttemptOutcome, JournalError, StepCallStatus};

/// How long a lazy write may wait for company before it is committed alone.
pub const LAZY_WINDOW: Duration = Duration::from_millis(5);

/// The most writes one transaction carries (keeps statements under the
/// databases' bound-parameter limits).
const MAX_BATCH: usize = 512;

/// A step call's first row, owned for the trip to the writer.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct NewCall {
    pub step: String,
    pub input: String,
    pub max_attempts: i64,
}

/// One attempt write, addressed to a call of a workflow owned by `executor`.
#[derive(Debug)]
pub(super) struct Write {
    pub workflow_id: String,
    pub executor: String,
    pub seq: i64,
    pub attempt: i64,
    pub change: Change,
}

#[derive(Debug)]
pub(super) enum Change {
    Start { at: i64, new_call: Option<NewCall> },
    Finish { at: i64, outcome: AttemptOutcome, call_result: Option<(StepCallStatus, String)> },
}

impl Write {
    /// A write someone is about to wait for: commit without lingering.
    fn urgent(&self) -> bool {
        matches!(&self.change, Change::Finish { call_result: Some(_), .. })
    }
}

/// A write on its way to the database.
#[must_use = "a journal write is durable only once `durable` returns Ok"]
pub struct PendingWrite {
    /// `None` once [`PendingWrite::failed`] saw the write committed.
    receiver: Option<oneshot::Receiver<Result<(), JournalError>>>,
    location: Arc<str>,
}

impl PendingWrite {
    /// Waits until the write is committed (or failed).
    pub async fn durable(self) -> Result<(), JournalError> {
        match self.receiver {
            Some(receiver) => {
                receiver.await.unwrap_or_else(|_| Err(JournalError::WriterGone { location: self.location.to_string() }))
            }
            None => Ok(()),
        }
    }

    /// The write's error, if it has already failed; `None` while pending or once committed.
    pub fn failed(&mut self) -> Option<JournalError> {
        let result = match self.receiver.as_mut()?.try_recv() {
            Err(oneshot::error::TryRecvError::Empty) => return None,
            Ok(result) => result.err(),
            Err(oneshot::error::TryRecvError::Closed) => {
                Some(JournalError::WriterGone { location: self.location.to_string() })
            }
        };
        self.receiver = None;
        result
    }
}

/// Counts of what the writer committed, to measure commits per step.
#[derive(Debug, Default)]
pub struct CommitCounters {
    /// Transactions committed by the group-commit writer.
    pub batches: AtomicU64,
    /// Attempt writes those transactions carried.
    pub writes: AtomicU64,
}

struct Queued {
    write: Write,
    queued_at: Instant,
    done: oneshot::Sender<Result<(), JournalError>>,
}

/// The sending side of the writer task; the task ends when every clone is dropped.
#[derive(Clone)]
pub(super) struct Writer {
    sender: Arc<Sender>,
    location: Arc<str>,
    pub counters: Arc<CommitCounters>,
}

/// The queue's sending end and the writer's doorbell. Lazy writes ring it
/// only to arm the writer's timer, so a run of lazy writes costs the writer
/// task one wake-up, not one each.
struct Sender {
    queue: Option<mpsc::UnboundedSender<Queued>>,
    wake: Arc<Wake>,
    batching: bool,
}

#[derive(Default)]
struct Wake {
    notify: Notify,
    /// A lazy write is queued and the writer was told since its last commit.
    armed: AtomicBool,
}

impl Drop for Sender {
    fn drop(&mut self) {
        // Close the queue first, then wake the writer to see it closed.
        self.queue.take();
        self.wake.notify.notify_one();
    }
}

impl Writer {
    /// Starts the writer task on the current tokio runtime. With `batching`
    /// off, every write is its own transaction (the behaviour before group
    /// commit, kept to measure against).
    pub fn spawn(pool: AnyPool, location: &str, batching: bool, postgres: bool) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        let location: Arc<str> = location.into();
        let counters = Arc::new(CommitCounters::default());
        let wake = Arc::new(Wake::default());
        let task = Task { pool, location: location.clone(), counters: counters.clone(), batching, postgres };
        tokio::spawn(task.run(receiver, wake.clone()));
        Self { sender: Arc::new(Sender { queue: Some(queue), wake, batching }), location, counters }
    }

    /// Queues `write`; the returned handle resolves once it is durable.
    pub fn send(&self, write: Write) -> PendingWrite {
        let (done, receiver) = oneshot::channel();
        let ring = write.urgent() || !self.sender.batching || !self.sender.wake.armed.swap(true, Ordering::AcqRel);
        let queued = Queued { write, queued_at: Instant::now(), done };
        match &self.sender.queue {
            Some(queue) => {
                if let Err(rejected) = queue.send(queued) {
                    let _ = rejected.0.done.send(Err(JournalError::WriterGone { location: self.location.to_string() }));
                }
            }
            None => {
                let _ = queued.done.send(Err(JournalError::WriterGone { location: self.location.to_string() }));
            }
        }
        if ring {
            self.sender.wake.notify.notify_one();
        }
        PendingWrite { receiver: Some(receiver), location: self.location.clone() }
    }
}

struct Task {
    pool: AnyPool,
    location: Arc<str>,
    counters: Arc<CommitCounters>,
    batching: bool,
    /// PostgreSQL takes a batch of inserts as one statement.
    postgres: bool,
}

impl Task {
    async fn run(self, mut receiver: mpsc::UnboundedReceiver<Queued>, wake: Arc<Wake>) {
        // Writes held back from the last batch, oldest first.
        let mut carried: Vec<Queued> = Vec::new();
        let mut open = true;
        loop {
            let mut batch = std::mem::take(&mut carried);
            loop {
                open &= drain(&mut receiver, &mut batch);
                let ready = !open
                    || (!self.batching && !batch.is_empty())
                    || batch.len() >= MAX_BATCH
                    || batch.iter().any(|queued| queued.write.urgent());
                if ready {
                    break;
                }
                let Some(first) = batch.first() else {
                    wake.notify.notified().await;
                    continue;
                };
                let deadline = first.queued_at + LAZY_WINDOW;
                tokio::select! {
                    () = wake.notify.notified() => {}
                    () = tokio::time::sleep_until(deadline.into()) => break,
                }
            }
            if batch.is_empty() && !open {
                return;
            }
            if !self.batching {
                carried = batch.split_off(1.min(batch.len()));
            } else if open && batch.len() < MAX_BATCH {
                carried = hold_back(&mut batch, Instant::now());
            }
            // Writes queued from here on are drained before the writer waits again.
            wake.armed.store(!carried.is_empty(), Ordering::Release);
            self.commit(batch).await;
        }
    }

    /// Writes `batch` in one transaction and reports to each writer.
    async fn commit(&self, batch: Vec<Queued>) {
        if batch.is_empty() {
            return;
        }
        let (writes, senders): (Vec<Write>, Vec<_>) =
            batch.into_iter().map(|queued| (queued.write, queued.done)).unzip();
        match self.write(&writes).await {
            Ok(refused) => {
                self.counters.batches.fetch_add(1, Ordering::Relaxed);
                self.counters.writes.fetch_add(writes.len() as u64, Ordering::Relaxed);
                for (write, sender) in writes.iter().zip(senders) {
                    let result = if refused.contains(&(write.workflow_id.as_str(), write.executor.as_str())) {
                        Err(JournalError::NotOwner {
                            location: self.location.to_string(),
                            id: write.workflow_id.clone(),
                        })
                    } else {
                        Ok(())
                    };
                    let _ = sender.send(result);
                }
            }
            Err(error) => {
                let message = error.to_string();
                for sender in senders {
                    let _ = sender.send(Err(JournalError::Batch {
                        location: self.location.to_string(),
                        message: message.clone(),
                    }));
                }
            }
        }
    }

    /// Writes what the executors still own; returns the (workflow, executor)
    /// pairs refused because another executor took the workflow over.
    async fn write<'w>(&self, writes: &'w [Write]) -> Result<HashSet<(&'w str, &'w str)>, sqlx::Error> {
        let now = super::now_ms();
        let mut by_executor: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for write in writes {
            let ids = by_executor.entry(&write.executor).or_default();
            if !ids.contains(&write.workflow_id.as_str()) {
                ids.push(&write.workflow_id);
            }
        }
        if self.postgres && by_executor.len() == 1 {
            let plan = Plan::of(&writes.iter().collect::<Vec<_>>());
            if let (Some((executor, ids)), true) = (by_executor.first_key_value(), plan.inserts_only()) {
                return self.write_one_statement(executor, ids, &plan).await;
            }
        }
        let mut tx = self.pool.begin().await?;
        let mut refused = HashSet::new();
        // The fence: lock the workflows this executor still owns, so a
        // process that lost its lease never writes over its successor.
        for (executor, ids) in &by_executor {
            let sql = format!(
                "UPDATE workflows SET updated_at = $1 WHERE executor = $2 AND status = 'running' AND id IN ({}) \
                 RETURNING id",
                placeholders(3, ids.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).bind(*executor);
            for id in ids {
                query = query.bind(*id);
            }
            let owned: HashSet<String> =
                query.fetch_all(&mut *tx).await?.iter().map(|row| row.try_get("id")).collect::<Result<_, _>>()?;
            refused.extend(ids.iter().filter(|id| !owned.contains(**id)).map(|id| (*id, *executor)));
        }
        let accepted: Vec<&Write> = writes
            .iter()
            .filter(|write| !refused.contains(&(write.workflow_id.as_str(), write.executor.as_str())))
            .collect();
        let plan = Plan::of(&accepted);
        plan.execute(&mut tx).await?;
        tx.commit().await?;
        Ok(refused)
    }

    /// PostgreSQL: fence and inserts of a batch in one statement, so the
    /// batch costs one round trip and one commit — the floor. The fence is
    /// a share lock on the owned workflow rows (it conflicts with a
    /// takeover's update without writing a row version per batch).
    async fn write_one_statement<'w>(
        &self,
        executor: &'w str,
        ids: &[&'w str],
        plan: &Plan<'w>,
    ) -> Result<HashSet<(&'w str, &'w str)>, sqlx::Error> {
        let calls_at = 2 + ids.len();
        let attempts_at = calls_at + plan.calls.len() * CALL_COLUMNS;
        let sql = format!(
            "WITH fence AS (SELECT id FROM workflows WHERE executor = $1 AND status = 'running' \
             AND id IN ({ids}) FOR SHARE), \
             calls AS (INSERT INTO step_calls ({CALL_FIELDS}) SELECT * FROM (VALUES {calls}) AS v ({CALL_FIELDS}) \
             WHERE v.workflow_id IN (SELECT id FROM fence)), \
             attempts AS (INSERT INTO step_attempts ({ATTEMPT_FIELDS}) SELECT * FROM (VALUES {attempts}) \
             AS v ({ATTEMPT_FIELDS}) WHERE v.workflow_id IN (SELECT id FROM fence)) \
             SELECT id FROM fence",
            ids = placeholders(2, ids.len()),
            calls = rows_from(calls_at, CALL_COLUMNS, plan.calls.len()),
            attempts = rows_from(attempts_at, ATTEMPT_COLUMNS, plan.attempts.len()),
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(executor);
        for id in ids {
            query = query.bind(*id);
        }
        for call in &plan.calls {
            query = bind_call(query, call);
        }
        for row in &plan.attempts {
            query = bind_attempt(query, row);
        }
        let owned: HashSet<String> =
            query.fetch_all(&self.pool).await?.iter().map(|row| row.try_get("id")).collect::<Result<_, _>>()?;
        Ok(ids.iter().filter(|id| !owned.contains(**id)).map(|id| (*id, executor)).collect())
    }
}

/// Takes out of `batch` the lazy writes younger than [`LAZY_WINDOW`] of
/// workflows with nothing urgent in it: their finish is likely to follow
/// and join them in one row. A workflow's writes keep their order.
fn hold_back(batch: &mut Vec<Queued>, now: Instant) -> Vec<Queued> {
    let urgent: HashSet<String> =
        batch.iter().filter(|queued| queued.write.urgent()).map(|queued| queued.write.workflow_id.clone()).collect();
    let (kept, held): (Vec<Queued>, Vec<Queued>) = std::mem::take(batch)
        .into_iter()
        .partition(|queued| urgent.contains(&queued.write.workflow_id) || queued.queued_at + LAZY_WINDOW <= now);
    *batch = kept;
    held
}

const CALL_FIELDS: &str =
    "workflow_id, seq, step, input, status, output, attempts, max_attempts, started_at, finished_at";
const CALL_COLUMNS: usize = 10;
const ATTEMPT_FIELDS: &str =
    "workflow_id, seq, attempt, started_at, finished_at, outcome, kind, message, next_delay_ms, stdout, stderr";
const ATTEMPT_COLUMNS: usize = 11;

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Binds a new call's row, in [`CALL_FIELDS`] order.
fn bind_call<'q>(query: AnyQuery<'q>, call: &CallRow<'q>) -> AnyQuery<'q> {
    let (step, input, max_attempts, started_at) =
        call.new.map_or(("", "", 0, 0), |(new, at)| (new.step.as_str(), new.input.as_str(), new.max_attempts, at));
    query
        .bind(call.workflow_id)
        .bind(call.seq)
        .bind(step)
        .bind(input)
        .bind(call.result.as_ref().map_or("running", |result| result.status.as_str()))
        .bind(call.result.as_ref().map(|result| result.output))
        .bind(call.attempts.unwrap_or(0))
        .bind(max_attempts)
        .bind(started_at)
        .bind(call.result.as_ref().map(|result| result.at))
}

/// Binds an attempt's row, in [`ATTEMPT_FIELDS`] order.
fn bind_attempt<'q>(query: AnyQuery<'q>, row: &AttemptRow<'q>) -> AnyQuery<'q> {
    let outcome = row.finished.as_ref().map(|finished| finished.outcome);
    query
        .bind(row.workflow_id)
        .bind(row.seq)
        .bind(row.attempt)
        .bind(row.started_at)
        .bind(row.finished.as_ref().map(|finished| finished.at))
        .bind(outcome.map(|outcome| outcome.outcome))
        .bind(outcome.and_then(|outcome| outcome.kind))
        .bind(outcome.and_then(|outcome| outcome.message.as_deref()))
        .bind(outcome.and_then(AttemptOutcome::next_delay_ms))
        .bind(outcome.and_then(|outcome| outcome.stdout.as_deref()))
        .bind(outcome.and_then(|outcome| outcome.stderr.as_deref()))
}

/// Moves what is queued into `batch` (up to [`MAX_BATCH`]); false once the queue is closed and empty.
fn drain(receiver: &mut mpsc::UnboundedReceiver<Queued>, batch: &mut Vec<Queued>) -> bool {
    while batch.len() < MAX_BATCH {
        match receiver.try_recv() {
            Ok(queued) => batch.push(queued),
            Err(mpsc::error::TryRecvError::Empty) => return true,
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        }
    }
    true
}

/// `$first, $first+1, …` for `count` parameters.
fn placeholders(first: usize, count: usize) -> String {
    let mut text = String::new();
    for n in first..first + count {
        if n > first {
            text.push_str(", ");
        }
        let _ = write!(text, "${n}");
    }
    text
}

/// `($first, …), (…)` for `rows` rows of `columns` parameters.
fn rows_from(first: usize, columns: usize, rows: usize) -> String {
    (0..rows).map(|row| format!("({})", placeholders(first + row * columns, columns))).collect::<Vec<_>>().join(", ")
}

/// How an attempt ended, for its row.
#[derive(Debug, Clone, PartialEq)]
struct Finished<'w> {
    at: i64,
    outcome: &'w AttemptOutcome,
}

#[derive(Debug, PartialEq)]
struct AttemptRow<'w> {
    workflow_id: &'w str,
    seq: i64,
    attempt: i64,
    started_at: i64,
    finished: Option<Finished<'w>>,
}

#[derive(Debug, PartialEq)]
struct CallResult<'w> {
    status: StepCallStatus,
    output: &'w str,
    at: i64,
}

#[derive(Debug, PartialEq)]
struct CallRow<'w> {
    workflow_id: &'w str,
    seq: i64,
    new: Option<(&'w NewCall, i64)>,
    /// The highest attempt started in this batch.
    attempts: Option<i64>,
    result: Option<CallResult<'w>>,
}

/// A batch folded into the fewest statements: a call started and finished
/// within the batch is one inserted row, and so is each such attempt.
#[derive(Debug, Default, PartialEq)]
struct Plan<'w> {
    calls: Vec<CallRow<'w>>,
    attempts: Vec<AttemptRow<'w>>,
    /// Attempts started in an earlier batch, finished in this one.
    finished_earlier: Vec<AttemptRow<'w>>,
}

impl<'w> Plan<'w> {
    fn of(writes: &[&'w Write]) -> Self {
        let mut plan = Plan::default();
        let mut call_index: HashMap<(&str, i64), usize> = HashMap::new();
        let mut attempt_index: HashMap<(&str, i64, i64), usize> = HashMap::new();
        for write in writes {
            let key = (write.workflow_id.as_str(), write.seq);
            let call = *call_index.entry(key).or_insert_with(|| {
                plan.calls.push(CallRow {
                    workflow_id: &write.workflow_id,
                    seq: write.seq,
                    new: None,
                    attempts: None,
                    result: None,
                });
                plan.calls.len() - 1
            });
            let call = &mut plan.calls[call];
            match &write.change {
                Change::Start { at, new_call } => {
                    if let Some(new_call) = new_call {
                        call.new = Some((new_call, *at));
                    }
                    call.attempts = Some(call.attempts.map_or(write.attempt, |n| n.max(write.attempt)));
                    attempt_index.insert((key.0, key.1, write.attempt), plan.attempts.len());
                    plan.attempts.push(AttemptRow {
                        workflow_id: &write.workflow_id,
                        seq: write.seq,
                        attempt: write.attempt,
                        started_at: *at,
                        finished: None,
                    });
                }
                Change::Finish { at, outcome, call_result } => {
                    if let Some((status, output)) = call_result {
                        call.result = Some(CallResult { status: *status, output, at: *at });
                    }
                    let finished = Finished { at: *at, outcome };
                    match attempt_index.get(&(key.0, key.1, write.attempt)) {
                        Some(&index) => plan.attempts[index].finished = Some(finished),
                        None => plan.finished_earlier.push(AttemptRow {
                            workflow_id: &write.workflow_id,
                            seq: write.seq,
                            attempt: write.attempt,
                            started_at: 0,
                            finished: Some(finished),
                        }),
                    }
                }
            }
        }
        plan
    }

    /// True when the batch only adds rows: every call is new, no attempt was started earlier.
    fn inserts_only(&self) -> bool {
        self.finished_earlier.is_empty() && self.calls.iter().all(|call| call.new.is_some())
    }

    async fn execute(&self, tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<(), sqlx::Error> {
        let new_calls: Vec<&CallRow> = self.calls.iter().filter(|call| call.new.is_some()).collect();
        for chunk in new_calls.chunks(MAX_BATCH) {
            let sql =
                format!("INSERT INTO step_calls ({CALL_FIELDS}) VALUES {}", rows_from(1, CALL_COLUMNS, chunk.len()));
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for call in chunk {
                query = bind_call(query, call);
            }
            query.execute(&mut **tx).await?;
        }
        for call in self.calls.iter().filter(|call| call.new.is_none()) {
            if let Some(attempts) = call.attempts {
                let updated = sqlx::query("UPDATE step_calls SET attempts = $1 WHERE workflow_id = $2 AND seq = $3")
                    .bind(attempts)
                    .bind(call.workflow_id)
                    .bind(call.seq)
                    .execute(&mut **tx)
                    .await?;
                expect_one(updated.rows_affected(), "step call", call.workflow_id, call.seq)?;
            }
            if let Some(result) = &call.result {
                let updated = sqlx::query(
                    "UPDATE step_calls SET status = $1, output = $2, finished_at = $3 WHERE workflow_id = $4 AND seq = $5",
                )
                .bind(result.status.as_str())
                .bind(result.output)
                .bind(result.at)
                .bind(call.workflow_id)
                .bind(call.seq)
                .execute(&mut **tx)
                .await?;
                expect_one(updated.rows_affected(), "step call", call.workflow_id, call.seq)?;
            }
        }
        for chunk in self.attempts.chunks(MAX_BATCH) {
            let sql = format!(
                "INSERT INTO step_attempts ({ATTEMPT_FIELDS}) VALUES {}",
                rows_from(1, ATTEMPT_COLUMNS, chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for row in chunk {
                query = bind_attempt(query, row);
            }
            query.execute(&mut **tx).await?;
        }
        for row in &self.finished_earlier {
            let Some(Finished { at, outcome }) = &row.finished else { continue };
            let updated = sqlx::query(
                "UPDATE step_attempts SET finished_at = $1, outcome = $2, kind = $3, message = $4, next_delay_ms = $5, \
                 stdout = $6, stderr = $7 WHERE workflow_id = $8 AND seq = $9 AND attempt = $10",
            )
            .bind(*at)
            .bind(outcome.outcome)
            .bind(outcome.kind)
            .bind(outcome.message.as_deref())
            .bind(outcome.next_delay_ms())
            .bind(outcome.stdout.as_deref())
            .bind(outcome.stderr.as_deref())
            .bind(row.workflow_id)
            .bind(row.seq)
            .bind(row.attempt)
            .execute(&mut **tx)
            .await?;
            expect_one(updated.rows_affected(), "attempt", row.workflow_id, row.seq)?;
        }
        Ok(())
    }
}

/// An update that found no row means an earlier write of the same call failed.
fn expect_one(rows: u64, what: &str, workflow_id: &str, seq: i64) -> Result<(), sqlx::Error> {
    if rows == 1 {
        Ok(())
    } else {
        Err(sqlx::Error::Protocol(format!(
            "the {what} row of call {seq} of workflow {workflow_id} is missing (an earlier write of it failed)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(seq: i64, attempt: i64, new: bool) -> Write {
        let new_call = new.then(|| NewCall { step: "s".into(), input: "(1)".into(), max_attempts: 3 });
        Write {
            workflow_id: "w".into(),
            executor: "e".into(),
            seq,
            attempt,
            change: Change::Start { at: 10, new_call },
        }
    }

    fn finish(seq: i64, attempt: i64, result: Option<StepCallStatus>) -> Write {
        let outcome = AttemptOutcome {
            outcome: if result.is_some() { "ok" } else { "failed" },
            kind: None,
            message: None,
            next_delay: None,
            stdout: None,
            stderr: None,
        };
        let call_result = result.map(|status| (status, "ok(1)".to_string()));
        Write {
            workflow_id: "w".into(),
            executor: "e".into(),
            seq,
            attempt,
            change: Change::Finish { at: 20, outcome, call_result },
        }
    }

    #[test]
    fn a_call_started_and_finished_in_one_batch_is_one_row_of_each() {
        let writes =
            [start(1, 1, true), finish(1, 1, None), start(1, 2, false), finish(1, 2, Some(StepCallStatus::Exhausted))];
        let plan = Plan::of(&writes.iter().collect::<Vec<_>>());
        assert_eq!(plan.calls.len(), 1);
        let call = &plan.calls[0];
        assert!(call.new.is_some());
        assert_eq!(call.attempts, Some(2));
        assert_eq!(call.result.as_ref().map(|result| result.status), Some(StepCallStatus::Exhausted));
        assert_eq!(plan.attempts.len(), 2);
        assert!(plan.attempts.iter().all(|row| row.finished.is_some()));
        assert!(plan.finished_earlier.is_empty());
    }

    #[test]
    fn a_finish_whose_start_was_committed_earlier_updates_its_row() {
        let writes = [finish(1, 1, Some(StepCallStatus::Succeeded)), start(2, 1, true)];
        let plan = Plan::of(&writes.iter().collect::<Vec<_>>());
        assert_eq!(plan.finished_earlier.len(), 1);
        assert_eq!(plan.finished_earlier[0].attempt, 1);
        assert_eq!(plan.calls.len(), 2);
        assert!(plan.calls[0].new.is_none() && plan.calls[0].result.is_some() && plan.calls[0].attempts.is_none());
        assert!(plan.calls[1].new.is_some() && plan.calls[1].result.is_none());
        assert_eq!(plan.attempts.len(), 1);
        assert!(plan.attempts[0].finished.is_none());
    }

    fn queued(write: Write, age: Duration, now: Instant) -> Queued {
        Queued { write, queued_at: now - age, done: oneshot::channel().0 }
    }

    #[test]
    fn young_lazy_writes_wait_unless_their_workflow_has_something_urgent() {
        let now = Instant::now();
        let young = Duration::from_micros(100);
        let mut other = start(1, 1, true);
        other.workflow_id = "other".into();
        let mut old = start(1, 1, true);
        old.workflow_id = "old".into();
        let mut batch = vec![
            queued(start(1, 1, true), young, now),
            queued(other, young, now),
            queued(old, LAZY_WINDOW * 2, now),
            queued(finish(1, 1, Some(StepCallStatus::Succeeded)), young, now),
        ];
        let held = hold_back(&mut batch, now);
        let ids = |queued: &[Queued]| queued.iter().map(|q| q.write.workflow_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&held), ["other"]);
        assert_eq!(ids(&batch), ["w", "old", "w"]);
    }

    #[test]
    fn only_a_final_outcome_is_urgent() {
        assert!(!start(1, 1, true).urgent());
        assert!(!finish(1, 1, None).urgent());
        assert!(finish(1, 1, Some(StepCallStatus::Succeeded)).urgent());
    }

    #[test]
    fn placeholders_number_rows_in_order() {
        assert_eq!(placeholders(3, 2), "$3, $4");
        assert_eq!(rows_from(1, 2, 2), "($1, $2), ($3, $4)");
        assert_eq!(rows_from(5, 1, 2), "($5), ($6)");
    }
}
