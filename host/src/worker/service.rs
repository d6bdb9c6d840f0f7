//! A worker process: claims due workflows of its queues as local slots
//! free up, runs each through the runner of its deployment under the
//! claim's lease, reaps the workflows of workers that died (any worker, no
//! leader), keeps its `workers` row fresh, and on shutdown stops claiming,
//! lets running attempts finish for a grace period, then interrupts them and
//! hands every workflow back to its queue.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::deployments::Deployments;
use crate::Disposition;
use crate::config::CronSchedule;
use crate::journal::{Claimed, Firing, Journal, JournalError, Timestamp, WorkerInfo};
use crate::run::{Executor, MAX_RUNNING_WORKFLOWS, RunError, Wakeups};
use crate::wasm::{ComponentLoader, StopReason};

/// The default `--concurrency`: workflows one worker runs at once.
pub const DEFAULT_CONCURRENCY: usize = 100;

/// The default `--poll-interval`.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The default `--grace`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// The default `--crash-loop-cap`.
pub const DEFAULT_CRASH_LOOP_CAP: i32 = 5;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The queues it claims from, in this order.
    pub queues: Vec<String>,
    /// Workflows it runs at once (at most [`MAX_RUNNING_WORKFLOWS`]).
    pub concurrency: usize,
    /// How often it looks for work without being told (jittered ±20 %).
    pub poll_interval: Duration,
    /// Never LISTEN: for poolers in transaction mode and engines without NOTIFY.
    pub poll_only: bool,
    /// How long running attempts may go on after a shutdown request.
    pub grace: Duration,
    /// Lapsed leases in a row without progress before a workflow is `dead`.
    pub crash_loop_cap: i32,
    /// Backoffs longer than this give the slot up until the retry is due.
    pub park_after: Duration,
}

impl WorkerOptions {
    /// The defaults for `queues`, parking backoffs longer than `lease`.
    pub fn new(queues: Vec<String>, lease: Duration) -> Self {
        Self {
            queues,
            concurrency: DEFAULT_CONCURRENCY,
            poll_interval: DEFAULT_POLL_INTERVAL,
            poll_only: false,
            grace: DEFAULT_GRACE,
            crash_loop_cap: DEFAULT_CRASH_LOOP_CAP,
            park_after: lease,
        }
    }
}

/// What a worker did before it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Workflows it ran to an end (succeeded, failed, cancelled, timed out).
    pub finished: u64,
    /// Workflows it parked until a retry far away.
    pub parked: u64,
    /// Workflows it handed back to their queue when it stopped.
    pub handed_back: u64,
}

/// How one claimed workflow's turn ended, for the report.
enum Turn {
    Finished,
    Parked,
    HandedBack,
    Other,
}

/// A worker: claims and runs the workflows of its queues.
pub struct Worker {
    executor: Arc<Executor>,
    deployments: Arc<Deployments>,
    options: WorkerOptions,
}

impl Worker {
    /// A worker running through `executor` (its journal, id and lease).
    pub fn new(executor: Arc<Executor>, loader: ComponentLoader, mut options: WorkerOptions) -> Self {
        options.concurrency = options.concurrency.clamp(1, MAX_RUNNING_WORKFLOWS);
        let deployments = Arc::new(Deployments::new(executor.clone(), loader));
        Self { executor, deployments, options }
    }

    /// Its id: its executor's, as recorded on the workflows it runs.
    pub fn id(&self) -> &str {
        self.executor.id()
    }

    fn journal(&self) -> &Journal {
        self.executor.journal()
    }

    /// Runs until `shutdown` completes, then stops gracefully. `hard_stop`
    /// completing during the grace period interrupts running attempts at once.
    pub async fn run(
        &self,
        shutdown: impl Future<Output = ()>,
        hard_stop: impl Future<Output = ()>,
    ) -> Result<WorkerReport, JournalError> {
        let options = &self.options;
        let journal = self.journal().clone();
        let info = WorkerInfo {
            id: self.id().to_string(),
            host: hostname(),
            pid: i32::try_from(std::process::id()).unwrap_or(i32::MAX),
            queues: options.queues.clone(),
            concurrency: i32::try_from(options.concurrency).unwrap_or(i32::MAX),
            lease: self.executor.lease(),
        };
        journal.register_worker(&info).await?;
        let work = Arc::new(Notify::new());
        let wakeups = if options.poll_only {
            Wakeups::Poll
        } else {
            self.executor.listen(options.queues.clone(), work.clone(), true).await
        };
        tracing::info!(
            source = "host",
            "Worker {} on queue(s) {} of {}: {} at once, {}",
            self.id(),
            options.queues.join(", "),
            journal.location(),
            options.concurrency,
            match wakeups {
                Wakeups::Notify => format!(
                    "woken by NOTIFY (polling every {} as a safety net)",
                    humantime::format_duration(options.poll_interval)
                ),
                Wakeups::Poll => format!("polling every {}", humantime::format_duration(options.poll_interval)),
            }
        );
        let heartbeat = tokio::spawn(heartbeat(journal.clone(), self.executor.clone()));
        let slots = Arc::new(Semaphore::new(options.concurrency));
        let mut turns: JoinSet<Turn> = JoinSet::new();
        let mut report = WorkerReport::default();
        let reap_every = self.executor.lease() / 2;
        let mut next_reap = Instant::now();
        let mut next_tick = Instant::now();
        tokio::pin!(shutdown);
        loop {
            if Instant::now() >= next_reap {
                self.reap().await;
                next_reap = Instant::now() + jittered(reap_every);
            }
            if Instant::now() >= next_tick && !self.executor.cut_off() {
                next_tick = self.fire_schedules().await;
            }
            // Cut off (its leases lapsed for want of an answer): nothing is claimed until the journal answers.
            let (claimed_all, outage) =
                if self.executor.cut_off() { (false, true) } else { self.claim(&slots, &mut turns).await };
            let wait = if claimed_all && slots.available_permits() > 0 {
                Duration::ZERO
            } else if outage {
                options.poll_interval
            } else {
                let mut wait = jittered(options.poll_interval)
                    .min(next_reap.saturating_duration_since(Instant::now()))
                    .min(next_tick.saturating_duration_since(Instant::now()));
                if slots.available_permits() > 0
                    && let Ok(Some(due)) = journal.next_due(&options.queues).await
                {
                    // A delayed start or a parked retry: be there when it is due.
                    wait = wait.min(due.since(Timestamp::now()) + Duration::from_millis(1));
                }
                wait
            };
            tokio::select! {
                () = &mut shutdown => break,
                () = work.notified() => {}
                () = tokio::time::sleep(wait) => {}
                () = self.executor.reachable(), if self.executor.cut_off() => {}
                Some(turn) = turns.join_next(), if !turns.is_empty() => count(&mut report, turn),
            }
            while let Some(turn) = turns.try_join_next() {
                count(&mut report, turn);
            }
        }
        let running = turns.len();
        if running > 0 {
            tracing::warn!(
                source = "host",
                "Worker stopping: no more claims; {running} workflow(s) may finish their running attempt within {} \
                 (signal again to interrupt them now)",
                humantime::format_duration(options.grace)
            );
        }
        self.executor.drain_all();
        let grace = tokio::time::sleep(options.grace);
        tokio::pin!(grace, hard_stop);
        let mut stopped = false;
        loop {
            tokio::select! {
                turn = turns.join_next() => match turn {
                    Some(turn) => count(&mut report, turn),
                    None => break,
                },
                () = &mut grace, if !stopped => {
                    stopped = true;
                    self.executor.stop_all(StopReason::Shutdown);
                }
                () = &mut hard_stop, if !stopped => {
                    stopped = true;
                    self.executor.stop_all(StopReason::Shutdown);
                }
            }
        }
        heartbeat.abort();
        // Ended (cancelled at its next await) before the row says stopped.
        let _ = heartbeat.await;
        journal.worker_seen(self.id(), 0, true).await.ok();
        tracing::info!(
            source = "host",
            "Worker {} stopped: {} finished, {} parked, {} handed back to their queue",
            self.id(),
            report.finished,
            report.parked,
            report.handed_back
        );
        Ok(report)
    }

    /// Fires the schedules that are due (each tick starts one workflow,
    /// whichever worker fires it); when to look again: the next tick, or the
    /// next poll (a schedule set meanwhile).
    async fn fire_schedules(&self) -> Instant {
        let journal = self.journal();
        let now = Timestamp::now();
        let fired = journal
            .fire_schedules(now, |schedule| match CronSchedule::parse(&schedule.cron, &schedule.timezone) {
                Ok(cron) => cron.plan(schedule.next_tick_at, now, schedule.catch_up),
                // Checked when it was set: only another version's expression lands here.
                Err(_) => Firing { ticks: Vec::new(), next_tick_at: Timestamp::from_millis(i64::MAX) },
            })
            .await;
        match fired {
            Ok(fired) => {
                for tick in fired.iter().filter(|tick| tick.started) {
                    tracing::info!(
                        source = "host",
                        "Schedule {} fired its tick {}: workflow {}",
                        tick.schedule,
                        tick.tick,
                        tick.workflow_id
                    );
                }
            }
            Err(error) => tracing::warn!(source = "host", "cannot fire due schedules: {error}"),
        }
        let poll = Instant::now() + self.options.poll_interval;
        match journal.next_tick().await {
            Ok(Some(due)) => poll.min(Instant::now() + due.since(Timestamp::now())),
            _ => poll,
        }
    }

    /// Claims as many due workflows as there are free slots, queue by queue,
    /// and starts each. Says whether every free slot was filled (there may be
    /// more) and whether the journal was unreachable.
    async fn claim(&self, slots: &Arc<Semaphore>, turns: &mut JoinSet<Turn>) -> (bool, bool) {
        let mut filled = false;
        for queue in &self.options.queues {
            let free = slots.available_permits();
            if free == 0 {
                return (true, false);
            }
            let limit = u32::try_from(free).unwrap_or(u32::MAX);
            let began = Instant::now();
            let claimed = match self.journal().claim_workflows(queue, self.id(), limit, self.executor.lease()).await {
                Ok(claimed) => {
                    crate::telemetry::claim(began.elapsed(), claimed.len());
                    claimed
                }
                Err(error) => {
                    tracing::warn!(source = "host", "cannot claim from queue {queue}: {error}");
                    return (false, true);
                }
            };
            filled = claimed.len() == free;
            for workflow in claimed {
                let Ok(permit) = slots.clone().try_acquire_owned() else { break };
                let (executor, deployments) = (self.executor.clone(), self.deployments.clone());
                let park_after = self.options.park_after;
                turns.spawn(run_one(executor, deployments, workflow, park_after, permit));
            }
        }
        (filled, false)
    }

    /// Puts back the workflows of workers whose leases lapsed; ends those past their deadline.
    async fn reap(&self) {
        match self.journal().reap_workflows(self.options.crash_loop_cap).await {
            Ok(reaped) => {
                for id in &reaped.requeued {
                    tracing::warn!(source = "host", "Workflow {id}: its worker's lease lapsed; back in its queue");
                }
                for id in &reaped.dead {
                    tracing::error!(
                        source = "host",
                        "Workflow {id} is dead: its worker stopped {} times in a row without progress",
                        self.options.crash_loop_cap
                    );
                }
                for id in &reaped.timed_out {
                    tracing::warn!(source = "host", "Workflow {id} timed out before a worker started it");
                }
            }
            Err(error) => tracing::warn!(source = "host", "cannot reap lapsed leases: {error}"),
        }
    }
}

/// Runs one claimed workflow to the end of its turn, then frees its slot.
async fn run_one(
    executor: Arc<Executor>,
    deployments: Arc<Deployments>,
    claimed: Claimed,
    park_after: Duration,
    _slot: OwnedSemaphorePermit,
) -> Turn {
    let id = claimed.workflow.id.clone();
    let journal = executor.journal();
    // Held while its deployment loads (a compile can outlast the lease): renewed, never lapsing meanwhile.
    let loading = executor.hold(claimed.lease.clone(), None).await;
    let runner = deployments.runner(&claimed.workflow).await;
    let claimed = Claimed { lease: loading.renewed(&claimed.lease), workflow: claimed.workflow };
    drop(loading);
    let result = match runner {
        Ok(runner) => runner.run_claimed(&claimed, park_after).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(outcome) => {
            tracing::info!(source = "host", "Workflow {id} succeeded in {:.1?}: {}", outcome.elapsed, outcome.output);
            Turn::Finished
        }
        Err(RunError::Parked { until, .. }) => {
            tracing::info!(source = "host", "Workflow {id} waits until {until} for its next attempt; slot given up");
            Turn::Parked
        }
        Err(error @ RunError::Waiting { .. }) => {
            tracing::info!(source = "host", "{error}");
            Turn::Parked
        }
        Err(error) => match afterwards(error.disposition()) {
            Afterwards::Ended => {
                tracing::warn!(source = "host", "{error}");
                Turn::Finished
            }
            Afterwards::Leave => match error {
                // Released on the way out (a shutdown): another worker takes it at once.
                RunError::Stopped { .. } => Turn::HandedBack,
                // One line, once the journal answers: who has the workflow now.
                RunError::LeaseLost { .. } | RunError::LeaseExpired { .. } => {
                    crate::telemetry::lease_lost();
                    tracing::warn!(source = "host", "{error}");
                    Turn::Other
                }
                error => {
                    tracing::warn!(source = "host", "{error}");
                    Turn::Other
                }
            },
            Afterwards::Release => release(journal, &claimed, &error).await,
            Afterwards::Bury => bury(journal, &claimed, &error).await,
        },
    }
}

/// What a worker does with a workflow whose turn ended in an error, from
/// the error's disposition alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Afterwards {
    /// It ended (badly): nothing more to do.
    Ended,
    /// It stopped here: its lease was released on the way out, or belongs to another owner now.
    Leave,
    /// The journal was at fault: back to its queue, for another try.
    Release,
    /// It cannot run (its components, its replay, a broken invariant): `dead`
    /// with the reason, so it does not come back forever.
    Bury,
}

fn afterwards(disposition: Disposition) -> Afterwards {
    match disposition {
        Disposition::WorkflowFailed => Afterwards::Ended,
        Disposition::Stopped => Afterwards::Leave,
        Disposition::Outage => Afterwards::Release,
        Disposition::Refused | Disposition::Conflict | Disposition::NotFound | Disposition::Bug => Afterwards::Bury,
    }
}

/// Hands a workflow back to its queue after an outage; says only what happened.
async fn release(journal: &Journal, claimed: &Claimed, error: &RunError) -> Turn {
    // A release fenced out (its lease lapsed or was taken) is not a hand-back.
    match journal.release(&claimed.lease).await {
        Ok(true) => {
            tracing::warn!(source = "host", "{error}; it goes back to its queue");
            Turn::HandedBack
        }
        _ => {
            tracing::warn!(source = "host", "{error}; its lease lapses and another worker takes it over");
            Turn::Other
        }
    }
}

/// Marks a workflow that cannot run `dead`, with the reason. Fenced by the
/// claim's epoch (a release keeps it): a worker that claimed it since is left alone.
async fn bury(journal: &Journal, claimed: &Claimed, error: &RunError) -> Turn {
    let id = &claimed.workflow.id;
    match journal.bury(&claimed.lease, &format!("cannot run: {error}")).await {
        Ok(true) => tracing::error!(source = "host", "Workflow {id} cannot run here: {error}. It is marked dead"),
        Ok(false) => tracing::warn!(
            source = "host",
            "Workflow {id} could not run here ({error}); it is no longer this worker's, so it is left as it is"
        ),
        Err(bury) => {
            tracing::warn!(source = "host", "Workflow {id} cannot run here: {error}; marking it dead failed: {bury}")
        }
    }
    Turn::Other
}

fn count(report: &mut WorkerReport, turn: Result<Turn, tokio::task::JoinError>) {
    match turn {
        Ok(Turn::Finished) => report.finished += 1,
        Ok(Turn::Parked) => report.parked += 1,
        Ok(Turn::HandedBack) => report.handed_back += 1,
        Ok(Turn::Other) => {}
        Err(error) => tracing::error!(source = "host", "a workflow's task failed: {error}"),
    }
}

/// Keeps the worker's row fresh every third of the lease.
async fn heartbeat(journal: Journal, executor: Arc<Executor>) {
    let period = executor.lease() / 3;
    loop {
        tokio::time::sleep(period).await;
        let running = i32::try_from(executor.running()).unwrap_or(i32::MAX);
        if let Err(error) = journal.worker_seen(executor.id(), running, false).await {
            tracing::debug!(source = "host", "cannot update this worker's row: {error}");
        }
    }
}

/// `period` ±20 %, so workers started together do not poll in step.
fn jittered(period: Duration) -> Duration {
    period.mul_f64(0.8 + 0.4 * rand::random::<f64>())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_follows_a_failed_turn_depends_on_the_disposition_alone() {
        assert_eq!(afterwards(Disposition::Outage), Afterwards::Release);
        assert_eq!(afterwards(Disposition::Stopped), Afterwards::Leave);
        assert_eq!(afterwards(Disposition::WorkflowFailed), Afterwards::Ended);
        for cannot_run in [Disposition::Refused, Disposition::Conflict, Disposition::NotFound, Disposition::Bug] {
            assert_eq!(afterwards(cannot_run), Afterwards::Bury);
        }
    }
}
