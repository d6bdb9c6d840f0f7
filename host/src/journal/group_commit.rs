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
//!
//! Every batch is idempotent on its natural keys (workflow, seq, attempt):
//! when a connection is lost during `COMMIT` the outcome is unknown, and the
//! same batch is written again on a fresh connection — rows it already wrote
//! are neither duplicated nor lost. Each write is fenced by its lease epoch.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use tokio::sync::{Notify, mpsc, oneshot};

use super::faults::Weather;
use super::queue::PROGRESS;
use super::{AttemptEnd, Backend, CallEnd, JournalError, Timestamp, statement, with_conn};

/// How long a lazy write may wait for company before it is committed alone.
pub const LAZY_WINDOW: Duration = Duration::from_millis(5);

/// The most writes one transaction carries (keeps statements under the
/// databases' bound-parameter limits).
const MAX_BATCH: usize = 256;

/// The most often one process tells listeners that attempts were journaled.
const NOTICE_EVERY: Duration = Duration::from_millis(100);

/// A step call's first row, owned for the trip to the writer.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct NewCall {
    pub step: String,
    pub input: String,
    pub input_json: Json,
    pub max_attempts: i32,
}

/// One attempt write, addressed to a call of a workflow held under `epoch`.
#[derive(Debug)]
pub(super) struct Write {
    pub workflow_id: String,
    pub executor: String,
    pub epoch: i64,
    pub seq: i64,
    pub attempt: i32,
    pub change: Change,
}

#[derive(Debug)]
pub(super) enum Change {
    Start { at: Timestamp, new_call: Option<NewCall> },
    Finish { end: AttemptEnd, call_end: Option<CallEnd> },
}

impl Write {
    /// A write someone is about to wait for: commit without lingering.
    fn urgent(&self) -> bool {
        matches!(&self.change, Change::Finish { call_end: Some(_), .. })
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
pub(super) struct CommitCounters {
    /// Transactions committed by the group-commit writer.
    pub batches: AtomicU64,
    /// Attempt writes those transactions carried.
    pub writes: AtomicU64,
    /// Time spent writing and committing them, µs.
    pub micros: AtomicU64,
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
    pub fn spawn(backend: Backend, location: &str, batching: bool, weather: Weather) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        let location: Arc<str> = location.into();
        let counters = Arc::new(CommitCounters::default());
        let wake = Arc::new(Wake::default());
        let task = Task {
            backend,
            location: location.clone(),
            counters: counters.clone(),
            batching,
            weather,
            last_notice: std::sync::Mutex::default(),
        };
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
    backend: Backend,
    location: Arc<str>,
    counters: Arc<CommitCounters>,
    batching: bool,
    weather: Weather,
    /// When a batch last carried a progress notice (PostgreSQL).
    last_notice: std::sync::Mutex<Option<Instant>>,
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

    /// Writes `batch` in one transaction (again, through outages) and reports to each writer.
    async fn commit(&self, batch: Vec<Queued>) {
        if batch.is_empty() {
            return;
        }
        let (writes, senders): (Vec<Write>, Vec<_>) =
            batch.into_iter().map(|queued| (queued.write, queued.done)).unzip();
        let began = Instant::now();
        let written = self.weather.retry(|| self.write(&writes), || self.backend.reconnect()).await;
        match written {
            Ok(refused) => {
                let took = began.elapsed();
                crate::telemetry::commit(took, writes.len());
                self.counters.micros.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
                self.counters.batches.fetch_add(1, Ordering::Relaxed);
                self.counters.writes.fetch_add(writes.len() as u64, Ordering::Relaxed);
                for (write, sender) in writes.iter().zip(senders) {
                    let result = if refused.contains(&(write.workflow_id.as_str(), write.epoch)) {
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
            Err(outage) => {
                let message = match outage.lasted {
                    Some(lasted) => format!(
                        "unreachable for {} ({})",
                        humantime::format_duration(Duration::from_secs(lasted.as_secs())),
                        outage.error
                    ),
                    None => outage.error.to_string(),
                };
                for sender in senders {
                    let _ = sender.send(Err(JournalError::Batch {
                        location: self.location.to_string(),
                        message: message.clone(),
                    }));
                }
            }
        }
    }

    /// Whether this batch should tell listeners (dashboards) that attempts
    /// were journaled: at most every [`NOTICE_EVERY`], so a busy journal
    /// does not pay a notification per commit (listeners look again a moment after each).
    fn notice_due(&self) -> bool {
        if !matches!(self.backend, Backend::Postgres(_)) {
            return false;
        }
        let mut last = self.last_notice.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let due = last.is_none_or(|at| now.duration_since(at) >= NOTICE_EVERY);
        if due {
            *last = Some(now);
        }
        due
    }

    /// Writes what the leases still hold; returns the (workflow, epoch) pairs
    /// refused because another executor took the workflow over.
    async fn write<'w>(&self, writes: &'w [Write]) -> Result<HashSet<(&'w str, i64)>, sqlx::Error> {
        let now = Timestamp::now();
        let mut leases: BTreeMap<(&str, i64), &str> = BTreeMap::new();
        for write in writes {
            leases.insert((write.workflow_id.as_str(), write.epoch), &write.executor);
        }
        let plan = Plan::of(&writes.iter().collect::<Vec<_>>());
        let notice = self.notice_due();
        if let (Backend::Postgres(db), true) = (&self.backend, plan.inserts_only() && statement::persistent()) {
            let mut writer = db.writer_connection().await?;
            let owned = one_statement(&mut writer.connection, &leases, &plan, notice).await?;
            writer.keep();
            return Ok(leases.keys().copied().filter(|lease| !owned.contains(lease)).collect());
        }
        with_conn!(&self.backend, |conn| {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            if notice {
                super::queue::notify_progress(&mut *tx).await?;
            }
            let mut refused = HashSet::new();
            // The fence: touch the workflows these leases still hold, so a
            // process that lost its lease never writes over its successor.
            for &(id, epoch) in leases.keys() {
                let held = statement::query(
                    "UPDATE workflows SET updated_at = $1 WHERE id = $2 AND lease_epoch = $3 AND status = 'running'",
                )
                .bind(now)
                .bind(id)
                .bind(epoch)
                .execute(&mut *tx)
                .await?;
                if held.rows_affected() == 0 {
                    refused.insert((id, epoch));
                }
            }
            let accepted: Vec<&Write> =
                writes.iter().filter(|write| !refused.contains(&(write.workflow_id.as_str(), write.epoch))).collect();
            let plan = Plan::of(&accepted);
            for chunk in plan.calls.iter().filter(|call| call.new.is_some()).collect::<Vec<_>>().chunks(MAX_BATCH) {
                let sql = format!(
                    "INSERT INTO step_calls ({CALL_FIELDS}) VALUES {} ON CONFLICT (workflow_id, seq) DO NOTHING",
                    rows_from(1, CALL_COLUMNS, chunk.len())
                );
                let mut query = statement::query(sqlx::AssertSqlSafe(sql));
                for call in chunk {
                    let row = call.row();
                    query = query
                        .bind(row.0)
                        .bind(row.1)
                        .bind(row.2)
                        .bind(row.3)
                        .bind(row.4)
                        .bind(row.5)
                        .bind(row.6)
                        .bind(row.7)
                        .bind(row.8)
                        .bind(row.9)
                        .bind(row.10)
                        .bind(row.11);
                }
                query.execute(&mut *tx).await?;
            }
            for call in plan.calls.iter().filter(|call| call.new.is_none()) {
                if let Some(attempts) = call.attempts {
                    let updated = statement::query(
                        "UPDATE step_calls SET attempts = CASE WHEN attempts > $1 THEN attempts ELSE $1 END \
                         WHERE workflow_id = $2 AND seq = $3",
                    )
                    .bind(attempts)
                    .bind(call.workflow_id)
                    .bind(call.seq)
                    .execute(&mut *tx)
                    .await?;
                    expect_one(updated.rows_affected(), "step call", call.workflow_id, call.seq)?;
                }
                if let Some(end) = &call.end {
                    let updated = statement::query(
                        "UPDATE step_calls SET status = $1, output = $2, output_json = $3, finished_at = $4 \
                         WHERE workflow_id = $5 AND seq = $6",
                    )
                    .bind(end.end.status)
                    .bind(&end.end.output)
                    .bind(&end.end.output_json)
                    .bind(end.at)
                    .bind(call.workflow_id)
                    .bind(call.seq)
                    .execute(&mut *tx)
                    .await?;
                    expect_one(updated.rows_affected(), "step call", call.workflow_id, call.seq)?;
                }
            }
            for chunk in plan.attempts.chunks(MAX_BATCH) {
                let sql = format!(
                    "INSERT INTO step_attempts ({ATTEMPT_FIELDS}) VALUES {} ON CONFLICT (workflow_id, seq, attempt) \
                     DO UPDATE SET {ATTEMPT_FINISH_FROM_EXCLUDED}",
                    rows_from(1, ATTEMPT_COLUMNS, chunk.len())
                );
                let mut query = statement::query(sqlx::AssertSqlSafe(sql));
                for attempt in chunk {
                    let end = attempt.end;
                    query = query
                        .bind(attempt.workflow_id)
                        .bind(attempt.seq)
                        .bind(attempt.attempt)
                        .bind(attempt.executor)
                        .bind(attempt.started_at)
                        .bind(end.and_then(|end| end.finished_at))
                        .bind(end.map(|end| end.outcome))
                        .bind(end.and_then(|end| end.kind))
                        .bind(end.and_then(|end| end.message.as_deref()))
                        .bind(end.and_then(|end| end.retry_at))
                        .bind(end.and_then(|end| end.stdout.as_deref()))
                        .bind(end.and_then(|end| end.stderr.as_deref()));
                }
                query.execute(&mut *tx).await?;
            }
            for attempt in &plan.finished_earlier {
                let Some(end) = attempt.end else { continue };
                let updated = statement::query(
                    "UPDATE step_attempts SET finished_at = $1, outcome = $2, kind = $3, message = $4, retry_at = $5, \
                     stdout = $6, stderr = $7 WHERE workflow_id = $8 AND seq = $9 AND attempt = $10",
                )
                .bind(end.finished_at)
                .bind(end.outcome)
                .bind(end.kind)
                .bind(end.message.as_deref())
                .bind(end.retry_at)
                .bind(end.stdout.as_deref())
                .bind(end.stderr.as_deref())
                .bind(attempt.workflow_id)
                .bind(attempt.seq)
                .bind(attempt.attempt)
                .execute(&mut *tx)
                .await?;
                expect_one(updated.rows_affected(), "attempt", attempt.workflow_id, attempt.seq)?;
            }
            tx.commit().await?;
            Ok(refused)
        })
        .await
    }
}

/// PostgreSQL: fence and inserts of a batch in one statement, so the batch
/// costs one round trip and one commit — the floor. The fence is a share
/// lock on the held workflow rows (it conflicts with a takeover's update
/// without writing a row version per batch). Returns the leases still held.
async fn one_statement<'w>(
    connection: &mut sqlx::PgConnection,
    leases: &BTreeMap<(&'w str, i64), &'w str>,
    plan: &Plan<'w>,
    notice: bool,
) -> Result<HashSet<(&'w str, i64)>, sqlx::Error> {
    if leases.len() == 1 {
        one_workflow(connection, leases, plan, notice).await
    } else {
        many_workflows(connection, leases, plan, notice).await
    }
}

/// [`one_statement`] for the writes of several workflows: every column
/// travels as one array, so a batch of any size is the same statement,
/// prepared once per connection and planned once, not parsed and planned
/// again for each new size (the sizes of concurrent batches seldom repeat).
async fn many_workflows<'w>(
    connection: &mut sqlx::PgConnection,
    leases: &BTreeMap<(&'w str, i64), &'w str>,
    plan: &Plan<'w>,
    notice: bool,
) -> Result<HashSet<(&'w str, i64)>, sqlx::Error> {
    let calls: Vec<CallValues<'w>> = plan.calls.iter().map(CallRow::row).collect();
    let ends = || plan.attempts.iter().map(|attempt| attempt.end);
    let owned = statement::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(MANY_WORKFLOWS.as_str()))
        .bind(leases.keys().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(leases.keys().map(|(_, epoch)| *epoch).collect::<Vec<_>>())
        .bind(calls.iter().map(|row| row.0).collect::<Vec<_>>())
        .bind(calls.iter().map(|row| row.1).collect::<Vec<_>>())
        .bind(calls.iter().map(|row| row.2).collect::<Vec<_>>())
        .bind(calls.iter().map(|row| row.3).collect::<Vec<_>>())
        .bind(calls.iter().map(|row| row.4).collect::<Vec<_>>())
        .bind(calls.iter().map(|row| row.5.as_column()).collect::<Vec<_>>())
        .bind(calls.iter().map(|row| row.6).collect::<Vec<_>>())
        .bind(calls.iter().map(|row| row.7).collect::<Vec<_>>())
        .bind(calls.iter().map(|row| row.8).collect::<Vec<_>>())
        .bind(calls.iter().map(|row| row.9).collect::<Vec<_>>())
        .bind(calls.iter().map(|row| row.10).collect::<Vec<_>>())
        .bind(calls.iter().map(|row| row.11).collect::<Vec<_>>())
        .bind(plan.attempts.iter().map(|attempt| attempt.workflow_id).collect::<Vec<_>>())
        .bind(plan.attempts.iter().map(|attempt| attempt.seq).collect::<Vec<_>>())
        .bind(plan.attempts.iter().map(|attempt| attempt.attempt).collect::<Vec<_>>())
        .bind(plan.attempts.iter().map(|attempt| attempt.executor).collect::<Vec<_>>())
        .bind(plan.attempts.iter().map(|attempt| attempt.started_at).collect::<Vec<_>>())
        .bind(ends().map(|end| end.and_then(|end| end.finished_at)).collect::<Vec<_>>())
        .bind(ends().map(|end| end.map(|end| end.outcome.as_column())).collect::<Vec<_>>())
        .bind(ends().map(|end| end.and_then(|end| end.kind).map(|kind| kind.as_column())).collect::<Vec<_>>())
        .bind(ends().map(|end| end.and_then(|end| end.message.as_deref())).collect::<Vec<_>>())
        .bind(ends().map(|end| end.and_then(|end| end.retry_at)).collect::<Vec<_>>())
        .bind(ends().map(|end| end.and_then(|end| end.stdout.as_deref())).collect::<Vec<_>>())
        .bind(ends().map(|end| end.and_then(|end| end.stderr.as_deref())).collect::<Vec<_>>())
        .bind(notice)
        .fetch_all(connection)
        .await?;
    Ok(leases
        .keys()
        .copied()
        .filter(|(id, epoch)| owned.iter().any(|(owned_id, owned_epoch)| owned_id == id && owned_epoch == epoch))
        .collect())
}

/// The batch statement of [`many_workflows`]: `$1`–`$2` the held leases,
/// `$3`–`$14` the new calls' columns, `$15`–`$26` the attempts' columns,
/// `$27` whether to tell listeners (identical notices of one transaction
/// are delivered once).
static MANY_WORKFLOWS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let calls_at = 3;
    let attempts_at = calls_at + CALL_COLUMNS;
    let notice_at = attempts_at + ATTEMPT_COLUMNS;
    format!(
        // The fence looks each held workflow up by its key alone, status and
        // epoch checked after the lock (`OFFSET 0` keeps them out of the
        // lookup): otherwise the one generic plan may walk the partial index
        // of every running workflow instead.
        "WITH fence AS (SELECT w.id, w.lease_epoch FROM unnest($1::text[], $2::bigint[]) AS held (id, epoch) \
         CROSS JOIN LATERAL (SELECT id, lease_epoch, status FROM workflows WHERE id = held.id FOR SHARE OFFSET 0) \
         AS w \
         WHERE w.lease_epoch = held.epoch AND w.status = 'running'), \
         calls AS (INSERT INTO step_calls ({CALL_FIELDS}) SELECT * FROM unnest({calls}) AS v ({CALL_FIELDS}) \
         WHERE v.workflow_id IN (SELECT id FROM fence) ON CONFLICT (workflow_id, seq) DO NOTHING), \
         attempts AS (INSERT INTO step_attempts ({ATTEMPT_FIELDS}) SELECT * FROM unnest({attempts}) \
         AS v ({ATTEMPT_FIELDS}) WHERE v.workflow_id IN (SELECT id FROM fence) \
         ON CONFLICT (workflow_id, seq, attempt) DO UPDATE SET {ATTEMPT_FINISH_FROM_EXCLUDED}) \
         SELECT id, lease_epoch, (SELECT pg_notify(current_schema() || '_{PROGRESS}', '') WHERE ${notice_at}) \
         FROM fence",
        calls = array_parameters(calls_at, CALL_TYPES),
        attempts = array_parameters(attempts_at, ATTEMPT_TYPES),
    )
});

/// As [`many_workflows`], for a batch of one workflow's writes (`leases`
/// holds one), with a row of parameters per row: a batch of one step costs PostgreSQL 0.1 ms less
/// this way than through arrays, and one workflow's batches come in few shapes
/// (each shape is a statement prepared once per connection).
async fn one_workflow<'w>(
    connection: &mut sqlx::PgConnection,
    leases: &BTreeMap<(&'w str, i64), &'w str>,
    plan: &Plan<'w>,
    notice: bool,
) -> Result<HashSet<(&'w str, i64)>, sqlx::Error> {
    let calls_at = 3;
    let attempts_at = calls_at + plan.calls.len() * CALL_COLUMNS;
    let sql = format!(
        // The lookup by key as in [`MANY_WORKFLOWS`].
        "WITH fence AS (SELECT id, lease_epoch FROM (SELECT id, lease_epoch, status FROM workflows \
         WHERE id = $1 FOR SHARE OFFSET 0) AS w WHERE lease_epoch = $2 AND status = 'running'), \
         calls AS (INSERT INTO step_calls ({CALL_FIELDS}) SELECT * FROM (VALUES {calls}) AS v ({CALL_FIELDS}) \
         WHERE v.workflow_id IN (SELECT id FROM fence) ON CONFLICT (workflow_id, seq) DO NOTHING), \
         attempts AS (INSERT INTO step_attempts ({ATTEMPT_FIELDS}) SELECT * FROM (VALUES {attempts}) \
         AS v ({ATTEMPT_FIELDS}) WHERE v.workflow_id IN (SELECT id FROM fence) \
         ON CONFLICT (workflow_id, seq, attempt) DO UPDATE SET {ATTEMPT_FINISH_FROM_EXCLUDED}) \
         SELECT id, lease_epoch FROM fence{notice}",
        // Identical notices of one transaction are delivered once.
        notice = if notice {
            format!(", (SELECT pg_notify(current_schema() || '_{PROGRESS}', '')) AS notice")
        } else {
            String::new()
        },
        calls = typed_rows(calls_at, CALL_TYPES, plan.calls.len()),
        attempts = typed_rows(attempts_at, ATTEMPT_TYPES, plan.attempts.len()),
    );
    let mut query = statement::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql));
    for (id, epoch) in leases.keys() {
        query = query.bind(*id).bind(*epoch);
    }
    for call in &plan.calls {
        let row = call.row();
        query = query
            .bind(row.0)
            .bind(row.1)
            .bind(row.2)
            .bind(row.3)
            .bind(row.4)
            .bind(row.5)
            .bind(row.6)
            .bind(row.7)
            .bind(row.8)
            .bind(row.9)
            .bind(row.10)
            .bind(row.11);
    }
    for attempt in &plan.attempts {
        let end = attempt.end;
        query = query
            .bind(attempt.workflow_id)
            .bind(attempt.seq)
            .bind(attempt.attempt)
            .bind(attempt.executor)
            .bind(attempt.started_at)
            .bind(end.and_then(|end| end.finished_at))
            .bind(end.map(|end| end.outcome))
            .bind(end.and_then(|end| end.kind))
            .bind(end.and_then(|end| end.message.as_deref()))
            .bind(end.and_then(|end| end.retry_at))
            .bind(end.and_then(|end| end.stdout.as_deref()))
            .bind(end.and_then(|end| end.stderr.as_deref()));
    }
    let owned = query.fetch_all(connection).await?;
    Ok(leases
        .keys()
        .copied()
        .filter(|(id, epoch)| owned.iter().any(|(owned_id, owned_epoch)| owned_id == id && owned_epoch == epoch))
        .collect())
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

const CALL_FIELDS: &str = "workflow_id, seq, step, input, input_json, status, output, output_json, attempts, \
                           max_attempts, started_at, finished_at";
const CALL_COLUMNS: usize = 12;
/// PostgreSQL types of [`CALL_FIELDS`], for the batch statements' rows and arrays.
const CALL_TYPES: [&str; CALL_COLUMNS] = [
    "text",
    "bigint",
    "text",
    "text",
    "jsonb",
    "text",
    "text",
    "jsonb",
    "integer",
    "integer",
    "timestamptz",
    "timestamptz",
];
const ATTEMPT_FIELDS: &str =
    "workflow_id, seq, attempt, executor, started_at, finished_at, outcome, kind, message, retry_at, stdout, stderr";
const ATTEMPT_COLUMNS: usize = 12;
const ATTEMPT_TYPES: [&str; ATTEMPT_COLUMNS] = [
    "text",
    "bigint",
    "integer",
    "text",
    "timestamptz",
    "timestamptz",
    "text",
    "text",
    "text",
    "timestamptz",
    "text",
    "text",
];
/// An attempt row written again (a start whose finish is now known, or a
/// batch retried after an unknown commit) takes the finish it carries.
const ATTEMPT_FINISH_FROM_EXCLUDED: &str = "finished_at = COALESCE(excluded.finished_at, step_attempts.finished_at), \
     outcome = COALESCE(excluded.outcome, step_attempts.outcome), kind = COALESCE(excluded.kind, step_attempts.kind), \
     message = COALESCE(excluded.message, step_attempts.message), \
     retry_at = COALESCE(excluded.retry_at, step_attempts.retry_at), \
     stdout = COALESCE(excluded.stdout, step_attempts.stdout), stderr = COALESCE(excluded.stderr, step_attempts.stderr)";

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

/// As [`rows_from`], the first row's parameters cast to `types` so the `VALUES` list has column types.
fn typed_rows(first: usize, types: [&str; 12], rows: usize) -> String {
    (0..rows)
        .map(|row| {
            let cells: Vec<String> = (0..types.len())
                .map(|column| {
                    let n = first + row * types.len() + column;
                    if row == 0 { format!("${n}::{}", types[column]) } else { format!("${n}") }
                })
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `$first::type[], …`: one array parameter per column of `types`.
fn array_parameters(first: usize, types: [&str; 12]) -> String {
    types.iter().enumerate().map(|(n, ty)| format!("${}::{ty}[]", first + n)).collect::<Vec<_>>().join(", ")
}

#[derive(Debug, PartialEq)]
struct AttemptRow<'w> {
    workflow_id: &'w str,
    executor: &'w str,
    seq: i64,
    attempt: i32,
    started_at: Timestamp,
    end: Option<&'w AttemptEnd>,
}

#[derive(Debug, PartialEq)]
struct EndedCall<'w> {
    end: &'w CallEnd,
    at: Timestamp,
}

#[derive(Debug, PartialEq)]
struct CallRow<'w> {
    workflow_id: &'w str,
    seq: i64,
    new: Option<(&'w NewCall, Timestamp)>,
    /// The highest attempt started in this batch.
    attempts: Option<i32>,
    end: Option<EndedCall<'w>>,
}

/// A new call row's values, in [`CALL_FIELDS`] order.
type CallValues<'w> = (
    &'w str,
    i64,
    &'w str,
    &'w str,
    Option<&'w Json>,
    super::CallStatus,
    Option<&'w str>,
    Option<&'w Json>,
    i32,
    i32,
    Timestamp,
    Option<Timestamp>,
);

impl<'w> CallRow<'w> {
    fn row(&self) -> CallValues<'w> {
        let (step, input, input_json, max_attempts, started_at) = match self.new {
            Some((new, at)) => (new.step.as_str(), new.input.as_str(), Some(&new.input_json), new.max_attempts, at),
            None => ("", "", None, 0, Timestamp::from_millis(0)),
        };
        (
            self.workflow_id,
            self.seq,
            step,
            input,
            input_json,
            self.end.as_ref().map_or(super::CallStatus::Running, |end| end.end.status),
            self.end.as_ref().and_then(|end| end.end.output.as_deref()),
            self.end.as_ref().and_then(|end| end.end.output_json.as_ref()),
            self.attempts.unwrap_or(0),
            max_attempts,
            started_at,
            self.end.as_ref().map(|end| end.at),
        )
    }
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
        let mut attempt_index: HashMap<(&str, i64, i32), usize> = HashMap::new();
        for write in writes {
            let key = (write.workflow_id.as_str(), write.seq);
            let call = *call_index.entry(key).or_insert_with(|| {
                plan.calls.push(CallRow {
                    workflow_id: &write.workflow_id,
                    seq: write.seq,
                    new: None,
                    attempts: None,
                    end: None,
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
                        executor: &write.executor,
                        seq: write.seq,
                        attempt: write.attempt,
                        started_at: *at,
                        end: None,
                    });
                }
                Change::Finish { end, call_end } => {
                    if let Some(call_end) = call_end {
                        let at = end.finished_at.unwrap_or_else(Timestamp::now);
                        call.end = Some(EndedCall { end: call_end, at });
                    }
                    match attempt_index.get(&(key.0, key.1, write.attempt)) {
                        Some(&index) => plan.attempts[index].end = Some(end),
                        None => plan.finished_earlier.push(AttemptRow {
                            workflow_id: &write.workflow_id,
                            executor: &write.executor,
                            seq: write.seq,
                            attempt: write.attempt,
                            started_at: Timestamp::from_millis(0),
                            end: Some(end),
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
    use super::super::{AttemptOutcome, CallStatus};
    use super::*;

    fn start(seq: i64, attempt: i32, new: bool) -> Write {
        let new_call =
            new.then(|| NewCall { step: "s".into(), input: "(1)".into(), input_json: Json::Null, max_attempts: 3 });
        Write {
            workflow_id: "w".into(),
            executor: "e".into(),
            epoch: 1,
            seq,
            attempt,
            change: Change::Start { at: Timestamp::from_millis(10), new_call },
        }
    }

    fn finish(seq: i64, attempt: i32, result: Option<CallStatus>) -> Write {
        let end = AttemptEnd {
            outcome: if result.is_some() { AttemptOutcome::Ok } else { AttemptOutcome::Failed },
            kind: None,
            message: None,
            retry_at: None,
            finished_at: Some(Timestamp::from_millis(20)),
            stdout: None,
            stderr: None,
        };
        let call_end =
            result.map(|status| CallEnd { status, output: Some("ok(1)".to_string()), output_json: Some(Json::Null) });
        Write {
            workflow_id: "w".into(),
            executor: "e".into(),
            epoch: 1,
            seq,
            attempt,
            change: Change::Finish { end, call_end },
        }
    }

    #[test]
    fn a_call_started_and_finished_in_one_batch_is_one_row_of_each() {
        let writes =
            [start(1, 1, true), finish(1, 1, None), start(1, 2, false), finish(1, 2, Some(CallStatus::Exhausted))];
        let plan = Plan::of(&writes.iter().collect::<Vec<_>>());
        assert_eq!(plan.calls.len(), 1);
        let call = &plan.calls[0];
        assert!(call.new.is_some());
        assert_eq!(call.attempts, Some(2));
        assert_eq!(call.end.as_ref().map(|end| end.end.status), Some(CallStatus::Exhausted));
        assert_eq!(plan.attempts.len(), 2);
        assert!(plan.attempts.iter().all(|row| row.end.is_some()));
        assert!(plan.finished_earlier.is_empty());
        assert!(plan.inserts_only());
    }

    #[test]
    fn a_finish_whose_start_was_committed_earlier_updates_its_row() {
        let writes = [finish(1, 1, Some(CallStatus::Succeeded)), start(2, 1, true)];
        let plan = Plan::of(&writes.iter().collect::<Vec<_>>());
        assert_eq!(plan.finished_earlier.len(), 1);
        assert_eq!(plan.finished_earlier[0].attempt, 1);
        assert_eq!(plan.calls.len(), 2);
        assert!(plan.calls[0].new.is_none() && plan.calls[0].end.is_some() && plan.calls[0].attempts.is_none());
        assert!(plan.calls[1].new.is_some() && plan.calls[1].end.is_none());
        assert_eq!(plan.attempts.len(), 1);
        assert!(plan.attempts[0].end.is_none());
        assert!(!plan.inserts_only());
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
            queued(finish(1, 1, Some(CallStatus::Succeeded)), young, now),
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
        assert!(finish(1, 1, Some(CallStatus::Succeeded)).urgent());
    }

    #[test]
    fn placeholders_number_rows_in_order() {
        assert_eq!(placeholders(3, 2), "$3, $4");
        assert_eq!(rows_from(1, 2, 2), "($1, $2), ($3, $4)");
        assert_eq!(rows_from(5, 1, 2), "($5), ($6)");
        let types = ["text"; 12];
        assert!(typed_rows(1, types, 2).starts_with("($1::text, $2::text"));
        assert!(typed_rows(1, types, 2).contains("), ($13, $14"));
        assert!(array_parameters(3, CALL_TYPES).starts_with("$3::text[], $4::bigint[], "));
        assert!(array_parameters(3, CALL_TYPES).ends_with(", $14::timestamptz[]"));
    }
}
