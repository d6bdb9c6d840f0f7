//! OpenTelemetry traces: a run with `OTEL_EXPORTER_OTLP_ENDPOINT` set exports
//! its spans over OTLP/HTTP (protobuf) to a collector listening on a local
//! port: one trace, workflow → step call → attempt, a failed attempt marked
//! as an error with its kind, the retry warning as an event of its call.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message as _;

use crate::support::{Scratch, artifacts, host_with_env};

/// A request the collector received: its request line, headers and body.
struct Received {
    head: String,
    body: Vec<u8>,
}

/// An OTLP/HTTP collector on a free local port, answering 200 to everything.
struct Collector {
    address: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Collector {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let address = listener.local_addr().unwrap().to_string();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                if let Some(request) = read_request(&mut stream) {
                    sink.lock().unwrap().push(request);
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        Self { address, received }
    }

    /// Every span received, decoded.
    fn spans(&self) -> Vec<Span> {
        let received = self.received.lock().unwrap();
        received
            .iter()
            .flat_map(|request| {
                let export = ExportTraceServiceRequest::decode(request.body.as_slice()).expect("an OTLP trace export");
                export
                    .resource_spans
                    .into_iter()
                    .flat_map(|resource| resource.scope_spans)
                    .flat_map(|scope| scope.spans)
            })
            .collect()
    }
}

fn read_request(stream: &mut std::net::TcpStream) -> Option<Received> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 8192];
    let head_end = loop {
        let read = stream.read(&mut buffer).ok().filter(|read| *read > 0)?;
        data.extend_from_slice(&buffer[..read]);
        if let Some(end) = data.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let length = head
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase().strip_prefix("content-length:").map(|value| value.trim().to_string())
        })
        .and_then(|value| value.parse::<usize>().ok())?;
    while data.len() < head_end + length {
        let read = stream.read(&mut buffer).ok().filter(|read| *read > 0)?;
        data.extend_from_slice(&buffer[..read]);
    }
    Some(Received { head, body: data[head_end..head_end + length].to_vec() })
}

/// A span's string and integer attributes.
fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .filter_map(|attribute| {
            let value = match attribute.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(text) => text.clone(),
                AnyValue::IntValue(number) => number.to_string(),
                other => format!("{other:?}"),
            };
            Some((attribute.key.clone(), value))
        })
        .collect()
}

#[test]
fn a_run_exports_workflow_call_and_attempt_spans_over_otlp() {
    let collector = Collector::start();
    let scratch = Scratch::new();
    let journal = scratch.journal();
    let endpoint = format!("http://{}", collector.address);
    // Three items; the third fails its first attempt and is retried 10 ms later.
    let run = host_with_env(
        scratch.path(),
        &[artifacts::PIPELINE, "3", "10", "--id", "traced-1", "--interval", "10ms", "--journal", &journal],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), ("OTEL_SERVICE_NAME", "stepbox-test")],
    );
    assert!(run.stdout.contains("12"), "the run finished:\n{}", run.stderr);

    // The exporter flushed before the process exited.
    let heads: Vec<String> = collector.received.lock().unwrap().iter().map(|request| request.head.clone()).collect();
    assert!(!heads.is_empty(), "no export arrived:\n{}", run.stderr);
    for head in &heads {
        assert!(head.starts_with("POST /v1/traces HTTP/1.1"), "{head}");
        assert!(head.to_ascii_lowercase().contains("content-type: application/x-protobuf"), "{head}");
    }
    let spans = collector.spans();
    let named = |prefix: &str| spans.iter().filter(|span| span.name.starts_with(prefix)).collect::<Vec<_>>();

    let workflows = named("workflow ");
    assert_eq!(workflows.len(), 1, "one workflow span: {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>());
    let workflow = workflows[0];
    assert_eq!(workflow.name, "workflow pipeline");
    assert!(workflow.parent_span_id.is_empty(), "the workflow span is the root");
    assert_eq!(attributes(workflow).get("workflow.id").map(String::as_str), Some("traced-1"));

    let calls = named("step ");
    assert_eq!(calls.len(), 3, "one span per step call");
    for call in &calls {
        assert_eq!(call.name, "step process");
        assert_eq!(call.parent_span_id, workflow.span_id, "a call is a child of its workflow");
        assert_eq!(call.trace_id, workflow.trace_id, "one trace");
    }
    let call_seq = |call: &Span| attributes(call).get("step.seq").cloned().unwrap_or_default();
    let third = calls.iter().find(|call| call_seq(call) == "3").expect("call 3");
    assert!(
        third.events.iter().any(|event| event.name.contains("automatically retried")),
        "the retry warning is an event of the third call: {:?}",
        third.events
    );

    let attempts = named("attempt ");
    assert_eq!(attempts.len(), 4, "items 1 and 2 once, item 3 twice");
    let of_third: Vec<&&Span> = attempts.iter().filter(|attempt| attempt.parent_span_id == third.span_id).collect();
    assert_eq!(of_third.len(), 2, "an attempt is a child of its call");
    let first = of_third.iter().find(|attempt| attempt.name == "attempt 1").expect("attempt 1");
    let second = of_third.iter().find(|attempt| attempt.name == "attempt 2").expect("attempt 2");
    let status = |span: &Span| span.status.as_ref().map_or(StatusCode::Unset as i32, |status| status.code);
    assert_eq!(status(first), StatusCode::Error as i32, "the failed attempt is an error");
    let first_attributes = attributes(first);
    assert_eq!(first_attributes.get("attempt.outcome").map(String::as_str), Some("failed"));
    assert_eq!(first_attributes.get("attempt.kind").map(String::as_str), Some("returned-error"));
    assert_eq!(attributes(second).get("attempt.outcome").map(String::as_str), Some("ok"));
    assert_ne!(status(second), StatusCode::Error as i32);
    for attempt in &attempts {
        assert_eq!(attempt.trace_id, workflow.trace_id, "one trace");
        assert!(attempt.end_time_unix_nano >= attempt.start_time_unix_nano);
    }
}
