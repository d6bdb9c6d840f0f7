//! What a process tells the outside about its work: metrics (Prometheus
//! text at `/metrics`) and traces (workflow → step call → attempt, exported
//! with OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set). Both cost next to
//! nothing until a process turns them on.

mod metrics;
mod traces;

pub(crate) use metrics::{attempt, claim, commit, install, lease_lost, oldest_ready, queue_depth, workers, workflows};
pub use traces::{SPAN_TARGET, Traces};
pub(crate) use traces::{attempt_span, call_span, ended, workflow_span};
