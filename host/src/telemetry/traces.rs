//! Traces: a span per workflow run, per step call and per attempt, nested
//! in that order, exported with OTLP over HTTP (protobuf) when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! is set. The spans have their own target: the log leaves them out, and
//! without an exporter nobody is interested in them, so they cost nothing.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::field::Empty;
use tracing::{Level, Span, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

/// The target of the runtime's spans.
pub const SPAN_TARGET: &str = "stepbox::otel";

/// How long a process waits at its end for its last spans to be exported.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// This process's span exporter, from the standard OpenTelemetry environment variables.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// The exporter the environment asks for; `None` when no OTLP endpoint is set.
    pub fn from_env() -> Result<Option<Self>, String> {
        let set = |name: &str| std::env::var_os(name).is_some_and(|value| !value.is_empty());
        if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            return Ok(None);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|error| format!("cannot export traces to OTEL_EXPORTER_OTLP_ENDPOINT: {error}"))?;
        let mut resource = Resource::builder();
        if !set("OTEL_SERVICE_NAME") {
            resource = resource.with_service_name("stepbox");
        }
        let provider =
            SdkTracerProvider::builder().with_resource(resource.build()).with_batch_exporter(exporter).build();
        Ok(Some(Self { provider }))
    }

    /// The subscriber layer that hands the runtime's spans (and the host's
    /// log lines inside them, as span events) to the exporter.
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("stepbox"))
            // What guests print stays in the journal and the log: it may carry their secrets.
            .with_filter(
                Targets::new().with_target("stepbox", Level::INFO).with_target("stepbox::guest", LevelFilter::OFF),
            )
    }

    /// Exports the spans not sent yet, waiting a few seconds at most; call it before the process exits.
    pub fn shutdown(self) -> Result<(), String> {
        self.provider
            .shutdown_with_timeout(FLUSH_TIMEOUT)
            .map_err(|error| format!("exporting the last traces: {error}"))
    }
}

/// The span of one run of workflow `id` (a first run, or a resume).
pub(crate) fn workflow_span(id: &str, component: &str, entry: &str) -> Span {
    tracing::info_span!(
        target: SPAN_TARGET,
        "workflow",
        otel.name = %format_args!("workflow {component}"),
        workflow.id = %id,
        workflow.entry = %entry,
        otel.status_description = Empty,
    )
}

/// The span of step call `seq` of workflow `id`: its attempts and backoffs.
pub(crate) fn call_span(id: &str, seq: i64, step: &str, function: &str) -> Span {
    tracing::info_span!(
        target: SPAN_TARGET,
        "step call",
        otel.name = %format_args!("step {function}"),
        workflow.id = %id,
        step.seq = seq,
        step.name = %step,
    )
}

/// The span of one attempt, in a fresh instance.
pub(crate) fn attempt_span(attempt: u32) -> Span {
    tracing::info_span!(
        target: SPAN_TARGET,
        "attempt",
        otel.name = %format_args!("attempt {attempt}"),
        attempt.number = attempt,
        attempt.outcome = Empty,
        attempt.kind = Empty,
        otel.status_description = Empty,
    )
}

/// Records how an attempt (or a workflow) ended; a failure marks the span as an error.
pub(crate) fn ended(span: &Span, outcome: &str, kind: Option<&str>, failure: Option<&str>) {
    span.record("attempt.outcome", outcome);
    if let Some(kind) = kind {
        span.record("attempt.kind", kind);
    }
    if let Some(failure) = failure {
        span.record("otel.status_description", failure);
    }
}
