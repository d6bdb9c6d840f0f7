//! Metrics the layers record as they work — attempts by outcome and kind,
//! attempt durations per step, journal commits, claims, lost leases — and
//! their Prometheus text rendering. Recording is a no-op until a process
//! installs the recorder (`host serve`, `host worker --serve`).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Histogram buckets in seconds, from a no-op attempt to a slow step.
const BUCKETS: &[f64] =
    &[0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0];

/// Batch sizes of journal commits.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0];

/// Installs the process's recorder once; its handle renders `/metrics`.
pub(crate) fn install() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full("stepbox_journal_commit_writes".into()),
                        BATCH_BUCKETS,
                    )
                })
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

/// Every family's `# HELP`, and the unlabeled ones registered at zero, so a
/// scrape lists them all before anything counted.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!("stepbox_attempts_total", "Step attempts this process ended, by outcome and failure kind");
    describe_histogram!("stepbox_attempt_duration_seconds", Unit::Seconds, "How long step attempts ran, by step");
    describe_histogram!(
        "stepbox_journal_commit_seconds",
        Unit::Seconds,
        "How long journal commits of attempt writes took"
    );
    describe_histogram!("stepbox_journal_commit_writes", "Attempt writes per journal commit (group commit batch size)");
    describe_histogram!("stepbox_claim_seconds", Unit::Seconds, "How long a worker's claims of queued workflows took");
    describe_counter!("stepbox_claimed_total", "Workflows this process claimed from queues");
    describe_counter!("stepbox_lease_losses_total", "Workflows whose lease this process found taken by another");
    describe_gauge!(
        "stepbox_queue_workflows",
        "Workflows of a queue by state (ready, delayed, waiting, running), from the journal"
    );
    describe_gauge!("stepbox_workflows", "Workflows by status and queue (\"\" for none), from the journal");
    describe_gauge!(
        "stepbox_queue_oldest_ready_seconds",
        Unit::Seconds,
        "How long the oldest due workflow of a queue has waited for a worker"
    );
    describe_gauge!("stepbox_workers", "Worker processes by state (live, stopped, lost), from the journal");
    metrics::counter!("stepbox_attempts_total", "outcome" => "ok", "kind" => "").increment(0);
    metrics::counter!("stepbox_claimed_total").increment(0);
    metrics::counter!("stepbox_lease_losses_total").increment(0);
    let _ = metrics::histogram!("stepbox_journal_commit_seconds");
    let _ = metrics::histogram!("stepbox_journal_commit_writes");
    let _ = metrics::histogram!("stepbox_claim_seconds");
}

/// An attempt ended: `outcome` (`ok`, `failed`, `rejected`) and, for failures, the kind.
pub(crate) fn attempt(step: &str, outcome: &'static str, kind: Option<&'static str>, took: Duration) {
    metrics::counter!("stepbox_attempts_total", "outcome" => outcome, "kind" => kind.unwrap_or("")).increment(1);
    metrics::histogram!("stepbox_attempt_duration_seconds", "step" => step.to_string()).record(took.as_secs_f64());
}

/// The journal committed a batch of `writes` attempt writes.
pub(crate) fn commit(took: Duration, writes: usize) {
    metrics::histogram!("stepbox_journal_commit_seconds").record(took.as_secs_f64());
    metrics::histogram!("stepbox_journal_commit_writes").record(writes as f64);
}

/// A worker's claim took `took` and got `claimed` workflows.
pub(crate) fn claim(took: Duration, claimed: usize) {
    metrics::histogram!("stepbox_claim_seconds").record(took.as_secs_f64());
    metrics::counter!("stepbox_claimed_total").increment(claimed as u64);
}

/// A workflow's lease was found taken by another executor.
pub(crate) fn lease_lost() {
    metrics::counter!("stepbox_lease_losses_total").increment(1);
}

/// Sets a queue's depth gauges before a scrape.
pub(crate) fn queue_depth(queue: &str, ready: i64, delayed: i64, waiting: i64, running: i64) {
    for (state, count) in [("ready", ready), ("delayed", delayed), ("waiting", waiting), ("running", running)] {
        metrics::gauge!("stepbox_queue_workflows", "queue" => queue.to_string(), "state" => state).set(count as f64);
    }
}

/// Sets the count of workflows of one status and queue before a scrape.
pub(crate) fn workflows(status: &str, queue: &str, count: i64) {
    metrics::gauge!("stepbox_workflows", "status" => status.to_string(), "queue" => queue.to_string())
        .set(count as f64);
}

/// Sets how long a queue's oldest due workflow has waited, before a scrape.
pub(crate) fn oldest_ready(queue: &str, waited: Duration) {
    metrics::gauge!("stepbox_queue_oldest_ready_seconds", "queue" => queue.to_string()).set(waited.as_secs_f64());
}

/// Sets the count of workers in one state before a scrape.
pub(crate) fn workers(state: &str, count: usize) {
    metrics::gauge!("stepbox_workers", "state" => state.to_string()).set(count as f64);
}
