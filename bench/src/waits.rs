//! Workflows that wait (issue 24), through `host worker` processes on
//! PostgreSQL woken by NOTIFY, each figure from the journal's timestamps
//! (milliseconds, as the journal keeps them): a message to a workflow
//! waiting in `recv` until it runs again, a sleeper's wake-up after its due
//! time, and a schedule's tick until its workflow's first operation. Each
//! is measured with the workflow parked (status `waiting`, its slot given
//! back: `--park-after 0s`) and held in its slot (`--park-after 1h`).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use stepbox::journal::CatchUp;
use stepbox::operate::Sender;
use stepbox::worker::{ScheduleRequest, SubmitRequest};
use stepbox_test_artifacts as artifacts;

use crate::queues::Queues;
use crate::stats::{Summary, summarize};

/// The step name of a durable sleep's row in `step_calls`.
const SLEEP: &str = "stepbox:runtime/workflow-context.sleep";
/// A `recv`'s row.
const RECV: &str = "stepbox:runtime/workflow-context.recv";
/// The shortest sleep of the timer workload; each next sleeper sleeps 10 ms more.
pub const SLEEP_MS: u64 = 2000;
/// A wait that never times out within the benchmark.
const LONG_MS: &str = "600000";

/// How many of each.
#[derive(Debug, Clone, Copy)]
pub struct WaitSizes {
    pub messages: usize,
    pub sleepers: usize,
    pub ticks: usize,
}

/// Whether a waiting workflow keeps its worker slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// `--park-after 0s`: status `waiting`, lease released, slot free; claimed again when woken.
    Parked,
    /// `--park-after 1h`: it waits in its slot, its lease renewed.
    Held,
}

impl Hold {
    fn park_after(self) -> &'static str {
        match self {
            Hold::Parked => "0s",
            Hold::Held => "1h",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Hold::Parked => "parked",
            Hold::Held => "held",
        }
    }
}

/// A message's way back into its workflow, ms after the send.
#[derive(Debug, Clone, Copy)]
pub struct MessageWake {
    /// To the `recv` taking it (`messages.received_at` − `sent_at`): the workflow's next journal write.
    pub received: Summary,
    /// To the workflow's end (`workflows.finished_at` − `sent_at`).
    pub finished: Summary,
}

/// Everything this module measured.
#[derive(Debug, Clone, Copy)]
pub struct WaitResults {
    pub message_parked: MessageWake,
    pub message_held: MessageWake,
    /// Sleep lateness, ms: the sleep's `finished_at` − (`started_at` + its ms).
    pub timer_parked: Summary,
    pub timer_held: Summary,
    pub sleepers: usize,
    /// Tick → the tick's workflow's first operation `started_at`, ms.
    pub tick_first_operation: Summary,
    /// Tick → its workflow claimed (`workflows.started_at` − `scheduled_at`), ms.
    pub tick_claimed: Summary,
}

/// Runs every wait workload through `queues`' client and `host` binary.
pub async fn measure(queues: &Queues, sizes: WaitSizes) -> anyhow::Result<WaitResults> {
    let (waiter, flaky) = (Path::new(artifacts::WAITER), Path::new(artifacts::FLAKY));
    let mut results = Vec::new();
    for hold in [Hold::Parked, Hold::Held] {
        crate::progress(&format!("(w) message → running again, {}", hold.key()));
        let wake = messages(queues, waiter, flaky, hold, sizes.messages).await?;
        crate::progress(&format!(
            "    send → recv p50 {:.0} ms, p99 {:.0} ms",
            wake.received.median, wake.received.p99
        ));
        crate::progress(&format!("(w) timer due → running, {}", hold.key()));
        let late = timers(queues, waiter, flaky, hold, sizes.sleepers).await?;
        crate::progress(&format!("    lateness p50 {:.0} ms, p99 {:.0} ms", late.median, late.p99));
        results.push((wake, late));
    }
    crate::progress("(w) schedule tick → first operation");
    let (first, claimed) = ticks(queues, waiter, flaky, sizes.ticks).await?;
    crate::progress(&format!("    tick → first operation p50 {:.0} ms", first.median));
    let [(message_parked, timer_parked), (message_held, timer_held)] = [results[0], results[1]];
    Ok(WaitResults {
        message_parked,
        message_held,
        timer_parked,
        timer_held,
        sleepers: sizes.sleepers,
        tick_first_operation: first,
        tick_claimed: claimed,
    })
}

/// `samples` workflows (and a tenth more, discarded) wait in `recv` under
/// one worker; each is sent its message once the previous one has ended.
async fn messages(
    queues: &Queues,
    waiter: &Path,
    flaky: &Path,
    hold: Hold,
    samples: usize,
) -> anyhow::Result<MessageWake> {
    let queue = format!("message-{}", hold.key());
    let approval = queues.prepare(waiter, &[flaky], "approval").await?;
    let total = samples + samples / 10;
    let concurrency = if hold == Hold::Held { total.clamp(1, 500) } else { stepbox::worker::DEFAULT_CONCURRENCY };
    let mut worker = queues.started_worker(&queue, concurrency, &["--park-after", hold.park_after()]).await?;
    let result = async {
        let request = SubmitRequest {
            arguments: vec![r#""go""#.into(), LONG_MS.into()],
            queue: Some(queue.clone()),
            ..SubmitRequest::default()
        };
        let mut ids = Vec::with_capacity(total);
        for _ in 0..total {
            ids.push(queues.client().submit(&approval, &request).await?.id);
        }
        let mut database = queues.database().await?;
        // Everyone in its recv (and, parked, its slot given back) before the first send.
        let waiting = match hold {
            Hold::Parked => {
                "SELECT count(*) FROM stepbox.workflows WHERE queue = $1 AND status = 'waiting' \
                 AND waiting_for = $2"
            }
            Hold::Held => {
                "SELECT count(*) FROM stepbox.step_calls c JOIN stepbox.workflows w ON w.id = c.workflow_id \
                 WHERE w.queue = $1 AND c.step = $2 AND c.status = 'running'"
            }
        };
        let what = if hold == Hold::Parked { "message" } else { RECV };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let count: i64 = sqlx::query_scalar(waiting).bind(&queue).bind(what).fetch_one(&mut database).await?;
            if count as usize >= total {
                break;
            }
            if Instant::now() > deadline {
                bail!("only {count} of {total} workflows of {queue} reached their recv within 2 minutes");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let sender = Sender { name: "bench".into(), idempotency_key: None };
        for id in &ids {
            queues.client().send(id, "go", "true", &sender).await?;
            ended(queues, id).await?;
        }
        let rows: Vec<(f64, f64)> = sqlx::query_as(
            "SELECT extract(epoch FROM m.received_at - m.sent_at)::float8 * 1000, \
             extract(epoch FROM w.finished_at - m.sent_at)::float8 * 1000 \
             FROM stepbox.messages m JOIN stepbox.workflows w ON w.id = m.workflow_id \
             WHERE w.queue = $1 AND m.received_at IS NOT NULL ORDER BY m.id",
        )
        .bind(&queue)
        .fetch_all(&mut database)
        .await?;
        if rows.len() != total {
            bail!("{} of {total} messages of {queue} were received", rows.len());
        }
        let kept = &rows[samples / 10..];
        Ok(MessageWake {
            received: summarize(kept.iter().map(|row| row.0).collect()),
            finished: summarize(kept.iter().map(|row| row.1).collect()),
        })
    }
    .await;
    worker.stop();
    result
}

/// Waits until workflow `id` succeeded.
async fn ended(queues: &Queues, id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let workflow = queues.client().journal().workflow(id).await?.context("the workflow is in the journal")?;
        if workflow.status.is_final() {
            if workflow.status != stepbox::journal::WorkflowStatus::Succeeded {
                bail!("workflow {id} ended {}", workflow.status);
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("workflow {id} did not end within 30 s of its message");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `sleepers` workflows submitted together, the n-th sleeping
/// `SLEEP_MS` + 10·n ms (so their due times are spread), under one worker:
/// each sleep's lateness, ms.
async fn timers(queues: &Queues, waiter: &Path, flaky: &Path, hold: Hold, sleepers: usize) -> anyhow::Result<Summary> {
    let queue = format!("timer-{}", hold.key());
    let nap = queues.prepare(waiter, &[flaky], "nap").await?;
    let concurrency = if hold == Hold::Held { sleepers.clamp(1, 500) } else { stepbox::worker::DEFAULT_CONCURRENCY };
    let mut worker = queues.started_worker(&queue, concurrency, &["--park-after", hold.park_after()]).await?;
    let result = async {
        for n in 0..sleepers as u64 {
            let request = SubmitRequest {
                arguments: vec![(SLEEP_MS + 10 * n).to_string()],
                queue: Some(queue.clone()),
                ..SubmitRequest::default()
            };
            queues.client().submit(&nap, &request).await?;
        }
        queues.drained_at(&queue, sleepers).await?;
        let mut database = queues.database().await?;
        let late: Vec<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM c.finished_at - c.started_at)::float8 * 1000 - (c.input_json->>0)::float8 \
             FROM stepbox.step_calls c JOIN stepbox.workflows w ON w.id = c.workflow_id \
             WHERE w.queue = $1 AND c.step = $2",
        )
        .bind(&queue)
        .bind(SLEEP)
        .fetch_all(&mut database)
        .await?;
        if late.len() != sleepers {
            bail!("{} of {sleepers} sleeps of {queue} are in the journal", late.len());
        }
        Ok(summarize(late))
    }
    .await;
    worker.stop();
    result
}

/// A schedule every second starting `nap(0)` (one operation) on a queue
/// of its own, under one worker, for `ticks` ticks after the first:
/// tick → first operation, and tick → claimed, ms.
async fn ticks(queues: &Queues, waiter: &Path, flaky: &Path, ticks: usize) -> anyhow::Result<(Summary, Summary)> {
    let (queue, name) = ("ticks", "bench-every-second");
    let nap = queues.prepare(waiter, &[flaky], "nap").await?;
    // The worker first: ticks due before it listens would fire late.
    let mut worker = queues.started_worker(queue, stepbox::worker::DEFAULT_CONCURRENCY, &[]).await?;
    let result = async {
        let request = ScheduleRequest {
            name: name.into(),
            cron: "* * * * * *".into(),
            timezone: "UTC".into(),
            catch_up: CatchUp::Skip,
            arguments: vec!["0".into()],
            queue: Some(queue.into()),
            priority: 0,
            timeout: None,
        };
        queues.client().schedule(&nap, &request).await?;
        let mut database = queues.database().await?;
        let deadline = Instant::now() + Duration::from_secs(ticks as u64 + 60);
        loop {
            let done: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM stepbox.workflows WHERE schedule = $1 AND status = 'succeeded'",
            )
            .bind(name)
            .fetch_one(&mut database)
            .await?;
            if done as usize > ticks {
                break;
            }
            if Instant::now() > deadline {
                bail!("only {done} of {} ticks of schedule {name} ran in time", ticks + 1);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        queues.client().journal().delete_schedule(name).await?;
        // The first tick may have been due while the schedule was being set: left out.
        let rows: Vec<(Option<f64>, f64)> = sqlx::query_as(
            "SELECT extract(epoch FROM (SELECT min(c.started_at) FROM stepbox.step_calls c \
             WHERE c.workflow_id = w.id) - w.scheduled_at)::float8 * 1000, \
             extract(epoch FROM w.started_at - w.scheduled_at)::float8 * 1000 \
             FROM stepbox.workflows w WHERE w.schedule = $1 AND w.status = 'succeeded' \
             ORDER BY w.scheduled_at OFFSET 1 LIMIT $2",
        )
        .bind(name)
        .bind(ticks as i64)
        .fetch_all(&mut database)
        .await?;
        let first: anyhow::Result<Vec<f64>> =
            rows.iter().map(|row| row.0.context("a tick's workflow journaled its operation")).collect();
        Ok((summarize(first?), summarize(rows.iter().map(|row| row.1).collect())))
    }
    .await;
    worker.stop();
    result
}
