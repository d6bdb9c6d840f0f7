//! `host serve`: the JSON API and the dashboard through the real binary and
//! real HTTP, on SQLite and PostgreSQL: lists and pagination, a workflow's
//! calls and attempts, results, cancel from the API and from a page's form,
//! escaping of journal strings, the token, cross-site refusals, the event
//! stream, and malformed requests; components uploaded, workflows
//! submitted, resumed and forked over the API and run by a real worker.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Child, PostgresDb, Run, Scratch, artifacts, eventually, host_command, rows};

/// A running `host serve`.
pub struct Server {
    child: Child,
    pub address: String,
    /// Its OpenAPI document, fetched at the first API request: every JSON answer of the API is
    /// checked against it (a documented status, a body of the documented schema).
    contract: std::sync::OnceLock<Value>,
}

impl Server {
    pub fn start(scratch: &Scratch, journal: &str, extra: &[&str]) -> Self {
        let mut args = vec!["serve", "--bind", "127.0.0.1:0", "--journal", journal];
        args.extend(extra);
        Self::spawn(scratch, &args)
    }

    /// Any `host` command that serves (`serve`, `worker --serve`), once it says where.
    fn spawn(scratch: &Scratch, args: &[&str]) -> Self {
        let child = Child::spawn(scratch.path(), args);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stderr = child.stderr();
            if let Some(rest) = stderr.split(" at http://").nth(1) {
                let address = rest.split('/').next().expect("an address").to_string();
                return Self { child, address, contract: std::sync::OnceLock::new() };
            }
            assert!(Instant::now() < deadline, "the server did not start:\n{stderr}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends raw bytes; the whole response (the server closes the connection).
    fn raw(&self, request: &str) -> String {
        let mut stream = TcpStream::connect(&self.address).expect("the server accepts connections");
        stream.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
        stream.write_all(request.as_bytes()).expect("the request is sent");
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        String::from_utf8_lossy(&response).into_owned()
    }

    /// A request with `headers` (lines) and `body`; the status and the body.
    fn request(&self, method: &str, path: &str, headers: &[&str], body: &str) -> (u16, String, String) {
        self.request_bytes(method, path, headers, body.as_bytes())
    }

    /// As [`Server::request`], with a body of any bytes.
    fn request_bytes(&self, method: &str, path: &str, headers: &[&str], body: &[u8]) -> (u16, String, String) {
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", self.address);
        for header in headers {
            request.push_str(header);
            request.push_str("\r\n");
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut stream = TcpStream::connect(&self.address).expect("the server accepts connections");
        stream.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
        stream.write_all(request.as_bytes()).expect("the request is sent");
        stream.write_all(body).expect("the body is sent");
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let response = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
        if path.starts_with("/api/v1/") && path != OPENAPI && head.to_ascii_lowercase().contains("application/json") {
            let contract = self.contract.get_or_init(|| {
                let (_, _, document) = self.request_bytes("GET", OPENAPI, headers, b"");
                serde_json::from_str(&document).unwrap_or_else(|_| panic!("{OPENAPI} answered JSON, not:\n{document}"))
            });
            conforms(contract, method, path, status, body);
        }
        (status, head.to_string(), body.to_string())
    }

    /// A page's status and HTML.
    pub fn get_page(&self, path: &str) -> (u16, String) {
        self.get(path)
    }

    fn get(&self, path: &str) -> (u16, String) {
        let (status, _, body) = self.request("GET", path, &[], "");
        (status, body)
    }

    pub fn json(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.get(path);
        (status, serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path} answered JSON, not:\n{body}")))
    }

    /// POSTs `body` as JSON; the status and the JSON answer.
    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, _, answer) = self.request("POST", path, &["Content-Type: application/json"], &body.to_string());
        (status, serde_json::from_str(&answer).unwrap_or_else(|_| panic!("{path} answered JSON, not:\n{answer}")))
    }
}

const OPENAPI: &str = "/api/v1/openapi.json";

/// Panics unless openapi-spec-validator (pinned in tests/requirements.txt, installed by
/// tools/install-test-deps) accepts `document` as OpenAPI 3.1.
fn valid_openapi(document: &Value) {
    let file = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(file.path(), document.to_string()).expect("the document is written");
    let output = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator", "--schema", "3.1", "--subschema-errors", "all"])
        .arg(file.path())
        .output()
        .expect("python3 runs (tools/install-test-deps installs openapi-spec-validator)");
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && said.contains("OK"), "openapi-spec-validator refuses the document:\n{said}");
}

/// Panics unless the OpenAPI document lists `status` for the operation that `method` and `path`
/// reach, with a JSON schema that `body` satisfies. Paths no operation serves (a 404 of an
/// unknown route, a 405) are not the document's to describe.
fn conforms(document: &Value, method: &str, path: &str, status: u16, body: &str) {
    let route = path.split(['?', '#']).next().unwrap_or(path);
    let segments: Vec<&str> = route.split('/').collect();
    let Some(operation) = document["paths"].as_object().and_then(|paths| {
        paths.iter().find_map(|(template, item)| {
            let parts: Vec<&str> = template.split('/').collect();
            let fits = parts.len() == segments.len()
                && parts.iter().zip(&segments).all(|(part, segment)| part.starts_with('{') || part == segment);
            fits.then(|| &item[method.to_ascii_lowercase()]).filter(|operation| operation.is_object())
        })
    }) else {
        return;
    };
    let response = &operation["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "{method} {path} answered {status}, which the OpenAPI document does not list: {body}"
    );
    let schema = &response["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "{method} {path} {status}: the document gives no JSON schema for the body {body}");
    // The schema's `$ref`s point into the document's components: validate against the document.
    let mut root = document.clone();
    root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    root["allOf"] = json!([schema]);
    let validator = jsonschema::validator_for(&root)
        .unwrap_or_else(|error| panic!("the schema of {method} {path} {status} compiles: {error}"));
    let instance: Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("{method} {path} answered JSON: {body}"));
    let errors: Vec<String> =
        validator.iter_errors(&instance).map(|error| format!("{error} at {}", error.instance_path())).collect();
    assert!(errors.is_empty(), "{method} {path} {status} does not match its documented schema: {errors:?}\n{body}");
}

impl Drop for Server {
    fn drop(&mut self) {
        self.child.kill();
    }
}

/// A workflow that fails with an HTML payload, and one whose third step is retried once.
pub fn populate(scratch: &Scratch, journal: &str) {
    let script = r#""<script>alert(1)</script>""#;
    let crash = host_command(
        scratch.path(),
        &[
            "run",
            artifacts::RETRY_DEMO,
            "--step",
            artifacts::FLAKY,
            "--invoke",
            "crash",
            script,
            "--id",
            "xss-1",
            "--max-attempts",
            "2",
            "--interval",
            "10ms",
            "--journal",
            journal,
        ],
    );
    assert!(crash.code == Some(0) && crash.stderr.contains("<script>"), "the crash ran:\n{}", crash.stderr);
    host_command(
        scratch.path(),
        &["run", artifacts::PIPELINE, "3", "10", "--id", "pipe-1", "--interval", "10ms", "--journal", journal],
    )
    .success();
}

fn api_and_pages(journal: &str) {
    let scratch = Scratch::new();
    populate(&scratch, journal);
    let server = Server::start(&scratch, journal, &[]);

    // Lists, newest first, a page at a time.
    let (status, all) = server.json("/api/v1/workflows");
    assert_eq!(status, 200, "{all}");
    let ids: Vec<&str> = all["workflows"].as_array().unwrap().iter().map(|w| w["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["pipe-1", "xss-1"]);
    assert_eq!(all["next"], Value::Null);
    let (_, first) = server.json("/api/v1/workflows?limit=1");
    assert_eq!(first["workflows"][0]["id"], "pipe-1");
    let next = first["next"].as_str().expect("a next cursor");
    let encoded: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
    let (_, second) = server.json(&format!("/api/v1/workflows?limit=1&after={encoded}"));
    assert_eq!((second["workflows"][0]["id"].as_str(), &second["next"]), (Some("xss-1"), &Value::Null));
    let (_, succeeded) = server.json("/api/v1/workflows?status=succeeded&name=pipeline");
    assert_eq!(succeeded["workflows"].as_array().unwrap().len(), 1);
    // A time range: both ends as durations ago or RFC 3339 times; pipe-1 started after xss-1.
    let pipe = server.json("/api/v1/workflows/pipe-1").1;
    let pipe_started = pipe["created_at"].as_str().expect("a time").to_string();
    let ids_of = |query: &str| {
        let (status, page) = server.json(&format!("/api/v1/workflows?{query}"));
        assert_eq!(status, 200, "{query}: {page}");
        page["workflows"].as_array().unwrap().iter().map(|w| w["id"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(ids_of(&format!("until={pipe_started}")), ["xss-1"]);
    assert_eq!(ids_of(&format!("since={pipe_started}&until=0s")), ["pipe-1"]);
    assert_eq!(ids_of("since=1h&until=2000-01-01T00:00:00Z"), Vec::<String>::new());
    let (status, refused) = server.json("/api/v1/workflows?until=yesterday");
    assert_eq!(status, 400);
    assert!(refused["error"].as_str().unwrap_or_default().contains("until"), "{refused}");
    let listed = host_command(scratch.path(), &["list", "--until", &pipe_started, "-o", "json", "--journal", journal]);
    assert_eq!(listed.code, Some(0), "{}", listed.stderr);
    assert!(listed.stdout.contains("xss-1") && !listed.stdout.contains("pipe-1"), "{}", listed.stdout);

    // One workflow: its calls and every attempt.
    let (status, pipe) = server.json("/api/v1/workflows/pipe-1");
    assert_eq!(status, 200);
    let calls = pipe["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 3);
    let third = calls[2]["attempts"].as_array().unwrap();
    assert_eq!(
        (third.len(), third[0]["outcome"].as_str(), third[0]["kind"].as_str()),
        (2, Some("failed"), Some("returned-error"))
    );
    assert_eq!(third[1]["outcome"], "ok");
    let (status, result) = server.json("/api/v1/workflows/pipe-1/result?wait=5s");
    assert_eq!((status, result["output"].as_i64(), result["status"].as_str()), (200, Some(12), Some("succeeded")));

    // Errors say what is wrong, as JSON.
    let (status, missing) = server.json("/api/v1/workflows/nope");
    assert_eq!(status, 404);
    assert!(missing["error"].as_str().unwrap().contains("nope"));
    let (status, bad) = server.json("/api/v1/workflows?status=bogus");
    assert_eq!(status, 400);
    assert!(bad["error"].as_str().unwrap().contains("bogus"), "{bad}");
    assert_eq!(server.json("/api/v1/workflows?limit=abc").0, 400);
    assert_eq!(server.json("/api/v1/workflows?limit=0").0, 400);
    assert_eq!(server.json("/api/v1/nothing-here").0, 404);
    let (status, document) = server.json("/api/v1/openapi.json");
    assert_eq!((status, document["openapi"].as_str()), (200, Some("3.1.0")));
    valid_openapi(&document);

    // Changing requests: JSON only, never from another site; a finished workflow cannot be cancelled.
    let json = ["Content-Type: application/json"];
    assert_eq!(server.request("POST", "/api/v1/workflows/pipe-1/cancel", &[], "").0, 415);
    assert_eq!(server.request("POST", "/api/v1/workflows/pipe-1/cancel", &json, "").0, 409);
    let evil = ["Content-Type: application/json", "Origin: https://evil.example"];
    assert_eq!(server.request("POST", "/api/v1/workflows/pipe-1/cancel", &evil, "").0, 403);
    assert_eq!(server.request("POST", "/api/v1/workflows/nope/cancel", &json, "").0, 404);

    // Pages: journal strings render as text.
    let (status, page) = server.get("/workflows/xss-1");
    assert_eq!(status, 200);
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "the message is shown escaped:\n{page}");
    assert!(!page.contains("<script>alert(1)"), "the message never becomes markup");
    let (status, list) = server.get("/?status=succeeded&name=pipeline");
    assert_eq!(status, 200);
    assert!(list.contains(r#"href="/workflows/pipe-1""#) && !list.contains("xss-1"), "{list}");
    let (status, fragment) = server.get("/workflows/pipe-1?fragment=1");
    assert!(status == 200 && !fragment.contains("<html") && fragment.contains("returned-error"), "{fragment}");
    assert_eq!(server.get("/queues").0, 200);
    assert_eq!(server.get("/workers").0, 200);
    assert_eq!(server.get("/nothing-here").0, 404);
    assert_eq!(server.get("/workflows/nope").0, 404);

    // Malformed requests get an answer, and the server goes on.
    let garbage = server.raw("GARBAGE\r\n\r\n");
    assert!(garbage.is_empty() || garbage.contains(" 400 "), "{garbage}");
    let huge = format!(
        "POST /api/v1/workflows/pipe-1/cancel HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: 200000\r\nConnection: close\r\n\r\n",
        server.address
    );
    assert!(server.raw(&huge).starts_with("HTTP/1.1 413"), "a body over the limit is refused before it is read");
    assert_eq!(server.get("/api/v1/workflows/%FF").0, 400, "not UTF-8");
    // Without a token, a request addressed to another name (DNS rebinding) is refused.
    let rebound = server.raw("GET /api/v1/workflows HTTP/1.1\r\nHost: evil.example:8080\r\nConnection: close\r\n\r\n");
    assert!(rebound.starts_with("HTTP/1.1 421"), "{rebound}");
    let local = server.raw("GET /api/v1/workflows HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert!(local.starts_with("HTTP/1.1 200"), "{local}");
    assert_eq!(server.json("/api/v1/workflows").0, 200, "still serving");

    // A fan-out's page draws its calls side by side; a sequential workflow's page does not.
    host_command(
        scratch.path(),
        &[
            "run",
            artifacts::FAN_OUT,
            "--step",
            artifacts::HOSTILE,
            "--invoke",
            "spread",
            "4",
            "100",
            "--id",
            "fan-1",
            "--journal",
            journal,
        ],
    )
    .success();
    let (status, fan) = server.get("/workflows/fan-1");
    assert_eq!(status, 200);
    assert!(fan.contains(r#"<svg class="calls""#) && fan.contains("4 step calls over"), "{fan}");
    assert_eq!(fan.matches("data-seq=").count(), 4, "one bar per call: {fan}");
    let (_, pipe) = server.get("/workflows/pipe-1");
    assert!(!pipe.contains(r#"<svg class="calls""#), "calls one after another get no overview");
}

#[test]
fn the_api_and_the_pages_on_sqlite() {
    let scratch = Scratch::new();
    api_and_pages(&scratch.journal());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_and_the_pages_on_postgres() {
    let db = PostgresDb::create().await;
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || api_and_pages(&url)).await.expect("the checks ran");
}

/// The page's cancel form stops a running workflow; a form without the page's secret is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_running_workflow_is_cancelled_from_its_page() {
    let db = PostgresDb::create().await;
    let scratch = Scratch::new();
    let mut run = Child::spawn(
        scratch.path(),
        &["run", artifacts::PIPELINE, "20", "500", "--id", "long-1", "--journal", &db.url],
    );
    let running =
        eventually(Duration::from_secs(30), || async { !rows(&db.url, "long-1").await.calls.is_empty() }).await;
    assert!(running, "the workflow started:\n{}", run.stderr());
    let server = Server::start(&scratch, &db.url, &[]);
    let (_, page) = server.get("/workflows/long-1");
    let csrf =
        page.split(r#"name="csrf" value=""#).nth(1).and_then(|rest| rest.split('"').next()).expect("a cancel form");
    let form = ["Content-Type: application/x-www-form-urlencoded"];
    assert_eq!(server.request("POST", "/workflows/long-1/cancel", &form, "csrf=forged").0, 403);
    let (status, head, _) = server.request("POST", "/workflows/long-1/cancel", &form, &format!("csrf={csrf}"));
    assert_eq!(status, 303, "{head}");
    assert!(head.contains("location: /workflows/long-1"), "{head}");
    assert_eq!(run.wait_for_exit(Duration::from_secs(10)), Some(1), "{}", run.stderr());
    let (_, workflow) = server.json("/api/v1/workflows/long-1");
    assert_eq!(workflow["status"], "cancelled");
    let (_, page) = server.get("/workflows/long-1");
    assert!(!page.contains("/workflows/long-1/cancel"), "a finished workflow has no cancel button");
}

/// The event stream says when a followed workflow changes.
#[tokio::test(flavor = "multi_thread")]
async fn the_event_stream_tells_a_page_its_workflow_changed() {
    let scratch = Scratch::new();
    let journal = scratch.journal();
    let mut run = Child::spawn(
        scratch.path(),
        &["run", artifacts::PIPELINE, "4", "2000", "--id", "live-1", "--journal", &journal],
    );
    assert!(eventually(Duration::from_secs(30), || async { !rows(&journal, "live-1").await.calls.is_empty() }).await);
    let server = Server::start(&scratch, &journal, &[]);
    let mut stream = TcpStream::connect(&server.address).unwrap();
    let request = format!(
        "GET /events?workflow=live-1 HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        server.address
    );
    stream.write_all(request.as_bytes()).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !seen.contains("data: changed") && Instant::now() < deadline {
        let mut buffer = [0u8; 4096];
        if let Ok(read) = stream.read(&mut buffer) {
            seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
    }
    assert!(seen.contains("text/event-stream"), "{seen}");
    assert!(seen.contains("data: changed"), "a change was announced while the workflow ran:\n{seen}");
    assert_eq!(run.wait_for_exit(Duration::from_secs(30)), Some(0));
}

/// On PostgreSQL the event stream is woken by the journal's notices: each
/// finished attempt is announced within moments of its commit, not at the
/// stream's next safety poll (every 2 s).
#[tokio::test(flavor = "multi_thread")]
async fn on_postgres_the_event_stream_is_woken_by_the_journals_notices() {
    let db = PostgresDb::create().await;
    let scratch = Scratch::new();
    // Four items of 1.5 s each: an attempt ends every 1.5 s.
    let mut run =
        Child::spawn(scratch.path(), &["run", artifacts::PIPELINE, "4", "1500", "--id", "n-1", "--journal", &db.url]);
    assert!(eventually(Duration::from_secs(30), || async { !rows(&db.url, "n-1").await.calls.is_empty() }).await);
    let server = Server::start(&scratch, &db.url, &[]);
    let mut stream = TcpStream::connect(&server.address).unwrap();
    let request =
        format!("GET /events?workflow=n-1 HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n", server.address);
    stream.write_all(request.as_bytes()).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let connected = now_millis();
    let mut announced = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(7);
    while Instant::now() < deadline {
        let mut buffer = [0u8; 4096];
        if let Ok(read) = stream.read(&mut buffer) {
            let text = String::from_utf8_lossy(&buffer[..read]);
            announced.extend(std::iter::repeat_n(now_millis(), text.matches("data: changed").count()));
        }
    }
    let stopped = now_millis();
    assert_eq!(run.wait_for_exit(Duration::from_secs(10)), Some(0), "{}", run.stderr());
    let finished: Vec<i64> = rows(&db.url, "n-1")
        .await
        .attempts
        .iter()
        .filter_map(|attempt| attempt.finished_at)
        .filter(|at| *at > connected + 300 && *at < stopped - 1200)
        .collect();
    assert!(finished.len() >= 2, "attempts ended while the stream was open: {finished:?}");
    for at in finished {
        // Well before the stream's 2 s safety poll, with room for a loaded host.
        assert!(
            announced.iter().any(|heard| (at..at + 1200).contains(heard)),
            "the attempt that ended at {at} was announced within 1200 ms; announcements: {announced:?}"
        );
    }
}

/// Milliseconds since the Unix epoch, as the journal's timestamps count them.
fn now_millis() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("a clock after 1970");
    i64::try_from(since.as_millis()).expect("a time in range")
}

/// Off loopback a token is required; with one, every request presents it.
#[test]
fn the_token_guards_every_request() {
    let scratch = Scratch::new();
    let journal = scratch.journal();
    host_command(scratch.path(), &["run", artifacts::PIPELINE, "1", "1", "--id", "t-1", "--journal", &journal])
        .success();
    let refused = host_command(scratch.path(), &["serve", "--bind", "0.0.0.0:0", "--journal", &journal]);
    assert!(refused.refused().contains("--token"), "{}", refused.stderr);

    let server = Server::start(&scratch, &journal, &["--token", "s3cret"]);
    assert_eq!(server.get("/api/v1/workflows").0, 401);
    assert_eq!(server.get("/").0, 401);
    let bearer = ["Authorization: Bearer s3cret"];
    assert_eq!(server.request("GET", "/api/v1/workflows", &bearer, "").0, 200);
    assert_eq!(server.request("GET", "/api/v1/workflows", &["Authorization: Bearer s3creT"], "").0, 401);
    let (status, head, _) = server.request("GET", "/?token=s3cret", &[], "");
    assert_eq!(status, 303, "{head}");
    assert!(head.lines().any(|line| line.trim().eq_ignore_ascii_case("location: /")), "{head}");
    assert!(head.to_lowercase().contains("set-cookie: stepbox_token=s3cret; httponly; samesite=strict"), "{head}");
    assert_eq!(server.request("GET", "/workflows/t-1", &["Cookie: stepbox_token=s3cret"], "").0, 200);
}

/// `host worker --serve` runs a worker and its dashboard in one process.
#[test]
fn a_worker_serves_its_dashboard() {
    let scratch = Scratch::new();
    let journal = scratch.journal();
    host_command(scratch.path(), &["queue", "set", "q", "--concurrency", "5", "--journal", &journal]);
    let server = Server::spawn(&scratch, &["worker", "--queue", "q", "--serve", "127.0.0.1:0", "--journal", &journal]);
    host_command(
        scratch.path(),
        &["submit", artifacts::PIPELINE, "2", "1", "--queue", "q", "--id", "w-1", "--journal", &journal],
    );
    let (status, result) = server.json("/api/v1/workflows/w-1/result?wait=30s");
    assert_eq!((status, result["output"].as_i64()), (200, Some(6)), "{result}");
    let (_, workers) = server.json("/api/v1/workers");
    assert_eq!(workers["workers"].as_array().map(Vec::len), Some(1), "{workers}");
    assert!(server.get("/workers").1.contains("live"));
    let (status, metrics) = server.get("/metrics");
    assert_eq!(status, 200);
    for line in [
        r#"stepbox_attempts_total{outcome="ok",kind=""} 2"#,
        r#"stepbox_queue_workflows{queue="q",state="ready"} 0"#,
        "stepbox_attempt_duration_seconds_bucket{step=\"example:pipeline/steps.process\",le=\"+Inf\"} 2",
        "stepbox_claimed_total 1",
        "stepbox_journal_commit_seconds_count",
    ] {
        assert!(metrics.contains(line), "/metrics has `{line}`:\n{metrics}");
    }
}

/// Uploads the pipeline component; its digest.
fn upload(server: &Server, path: &str) -> String {
    let bytes = std::fs::read(path).expect("the component was built");
    let wasm = ["Content-Type: application/wasm"];
    let (status, _, answer) = server.request_bytes("POST", "/api/v1/components?name=pipeline.wasm", &wasm, &bytes);
    assert_eq!(status, 201, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    let digest = answer["digest"].as_str().expect("a digest").to_string();
    assert_eq!(answer["size"].as_u64(), Some(bytes.len() as u64));
    let (again, _, answer) = server.request_bytes("POST", "/api/v1/components", &wasm, &bytes);
    assert!(again == 200 && answer.contains(&digest) && answer.contains(r#""stored":false"#), "{answer}");
    digest
}

fn submit_resume_fork(journal: &str) {
    let scratch = Scratch::new();
    let server = Server::start(&scratch, journal, &[]);

    // Uploads: a component once per digest; anything else is refused, saying why.
    let digest = upload(&server, artifacts::PIPELINE);
    let wasm = ["Content-Type: application/wasm"];
    let (status, _, answer) = server.request_bytes("POST", "/api/v1/components", &wasm, b"not a component");
    assert!(status == 400 && answer.contains("not a WebAssembly"), "{status} {answer}");
    let json_type = ["Content-Type: application/json"];
    assert_eq!(server.request_bytes("POST", "/api/v1/components", &json_type, b"{}").0, 415);

    // Submissions are checked before anything is written.
    let manifest = "[retry]\ninterval = \"10ms\"\n";
    let good = json!({ "workflow": digest, "args": ["3", "10"], "id": "api-1", "manifest": manifest });
    for (body, needle) in [
        (json!({ "workflow": "ab".repeat(32), "args": ["3", "10"] }), "upload it first"),
        (json!({ "workflow": "nope", "args": [] }), "not a component digest"),
        (json!({ "workflow": digest, "args": ["x", "10"] }), "items"),
        (json!({ "workflow": digest, "args": ["3"] }), "argument"),
        (
            json!({ "workflow": digest, "args": ["3", "10"], "manifest": "[grants]\ndirs = [{ host = \"/\", guest = \"/\" }]\n" }),
            "directories",
        ),
        (json!({ "workflow": digest, "args": ["3", "10"], "manifest": "retry = 3" }), "manifest"),
        (
            json!({ "workflow": digest, "args": ["3", "10"], "delay": "1s", "start_at": "2030-01-01T00:00:00Z" }),
            "not both",
        ),
        (json!({ "workflow": digest, "bogus": 1 }), "bogus"),
        (
            json!({ "workflow": digest, "args": ["3", "10"], "manifest": "[grants]\nhttp = [\"169.254.169.254\"]\n" }),
            "network",
        ),
    ] {
        let (status, answer) = server.post("/api/v1/workflows", &body);
        assert_eq!(status, 400, "{body} -> {answer}");
        assert!(answer["error"].as_str().unwrap_or_default().contains(needle), "{body} -> {answer}");
    }
    let (status, submitted) = server.post("/api/v1/workflows", &good);
    assert_eq!(
        (status, submitted["id"].as_str(), submitted["status"].as_str()),
        (201, Some("api-1"), Some("enqueued"))
    );
    let other_args = json!({ "workflow": digest, "args": ["4", "10"], "id": "api-1" });
    assert_eq!(server.post("/api/v1/workflows", &other_args).0, 409, "the id is taken");

    // A worker runs it, and the API's long-poll sees the result.
    let mut worker = Child::spawn(scratch.path(), &["worker", "--journal", journal]);
    let (status, result) = server.json("/api/v1/workflows/api-1/result?wait=30s");
    assert_eq!((status, result["output"].as_i64()), (200, Some(12)), "{result}\n{}", worker.stderr());

    // A fork from its third call copies the first two and runs the third again.
    let (status, forked) = server.post("/api/v1/workflows/api-1/fork", &json!({ "from_step": 3, "id": "api-fork" }));
    assert_eq!((status, forked["queue"].as_str()), (201, Some("default")), "{forked}");
    let (status, result) = server.json("/api/v1/workflows/api-fork/result?wait=30s");
    assert_eq!((status, result["output"].as_i64()), (200, Some(12)), "{result}");
    let (_, original) = server.json("/api/v1/workflows/api-1");
    let (_, fork) = server.json("/api/v1/workflows/api-fork");
    for seq in 0..2 {
        assert_eq!(fork["calls"][seq]["attempts"], original["calls"][seq]["attempts"], "call {seq} was copied");
    }
    assert_ne!(fork["calls"][2]["attempts"][0]["started_at"], original["calls"][2]["attempts"][0]["started_at"]);
    assert_eq!(server.post("/api/v1/workflows/api-1/fork", &json!({ "from_step": 3, "id": "api-fork" })).0, 409);
    assert_eq!(server.post("/api/v1/workflows/api-1/fork", &json!({ "from_step": 0 })).0, 400);
    assert_eq!(server.post("/api/v1/workflows/nope/fork", &json!({})).0, 404);

    // A `host run` that dies is resumed by the worker once handed back to a queue.
    let mut run = Child::spawn(
        scratch.path(),
        &["run", artifacts::PIPELINE, "6", "1000", "--id", "int-1", "--lease", "1s", "--journal", journal],
    );
    let started = || async { rows(journal, "int-1").await.calls.len() >= 2 };
    assert!(tokio_block_on(eventually(Duration::from_secs(30), started)), "{}", run.stderr());
    let (status, live) = server.post("/api/v1/workflows/int-1/resume", &json!({}));
    assert!(status == 409 && live["error"].as_str().unwrap().contains("holds its lease"), "{live}");
    run.kill();
    tokio_block_on(crate::support::until_lease_lapsed(journal, "int-1"));
    let (status, _, resumed) =
        server.request("POST", "/api/v1/workflows/int-1/resume", &["Content-Type: application/json"], "");
    let resumed: Value = serde_json::from_str(&resumed).expect("JSON");
    assert_eq!((status, resumed["queue"].as_str()), (200, Some("default")), "{resumed}");
    let (status, result) = server.json("/api/v1/workflows/int-1/result?wait=30s");
    assert_eq!((status, result["output"].as_i64()), (200, Some(42)), "{result}\n{}", worker.stderr());
    let resumed_rows = tokio_block_on(rows(journal, "int-1"));
    assert_eq!(resumed_rows.calls.len(), 6);
    for call in &resumed_rows.calls {
        let ok = resumed_rows.attempts.iter().filter(|a| a.seq == call.seq && a.outcome.as_deref() == Some("ok"));
        assert_eq!(ok.count(), 1, "call {} has exactly one ok attempt: {:?}", call.seq, resumed_rows.attempts);
    }
    let (status, ended) = server.post("/api/v1/workflows/int-1/resume", &json!({}));
    assert!(status == 409 && ended["error"].as_str().unwrap().contains("already ended"), "{ended}");
    assert_eq!(server.post("/api/v1/workflows/int-1/resume", &json!({ "queue": "no spaces" })).0, 400);

    // The page of a finished workflow offers a fork, not a resume.
    let (_, page) = server.get("/workflows/api-1");
    assert!(page.contains("/workflows/api-1/fork") && !page.contains("/workflows/api-1/resume"), "{page}");
    worker.kill();
}

/// Blocks on `future` from a plain test thread.
fn tokio_block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime").block_on(future)
}

#[test]
fn components_are_uploaded_and_workflows_submitted_resumed_and_forked_over_the_api_on_sqlite() {
    let scratch = Scratch::new();
    submit_resume_fork(&scratch.journal());
}

#[tokio::test(flavor = "multi_thread")]
async fn components_are_uploaded_and_workflows_submitted_resumed_and_forked_over_the_api_on_postgres() {
    let db = PostgresDb::create().await;
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || submit_resume_fork(&url)).await.expect("the checks ran");
}

/// Messages, events and schedules over the API, with the documents of
/// `host send`, `host event` and `host schedule`, and their refusals.
#[tokio::test(flavor = "multi_thread")]
async fn messages_events_and_schedules_over_the_api() {
    let scratch = Scratch::new();
    let journal = scratch.journal();
    let waiter = |entry: &[&str], id: &str| {
        let mut args = vec!["run", artifacts::WAITER, "--step", artifacts::FLAKY, "--invoke"];
        args.extend(entry);
        args.extend(["--id", id, "--journal", &journal]);
        Child::spawn(scratch.path(), &args)
    };
    let mut waiting = waiter(&["approval", "\"go\"", "60000"], "api-wait");
    let waits = eventually(Duration::from_secs(30), || async { !rows(&journal, "api-wait").await.calls.is_empty() });
    assert!(waits.await, "{}", waiting.stderr());
    let server = Server::start(&scratch, &journal, &[]);

    let message = json!({"topic": "go", "value": {"approved": true}, "idempotency_key": "k1"});
    let (status, receipt) = server.post("/api/v1/workflows/api-wait/messages", &message);
    assert_eq!((status, &receipt["duplicate"], &receipt["topic"]), (201, &json!(false), &json!("go")), "{receipt}");
    let (status, again) = server.post("/api/v1/workflows/api-wait/messages", &message);
    assert_eq!((status, &again["duplicate"], &again["message"]), (200, &json!(true), &receipt["message"]), "{again}");
    let (status, unknown) = server.post("/api/v1/workflows/nobody/messages", &json!({"topic": "go", "value": 1}));
    assert_eq!((status, &unknown["disposition"]), (404, &json!("not-found")), "{unknown}");
    let (status, bad) = server.post("/api/v1/workflows/api-wait/messages", &json!({"value": 1}));
    assert!(status == 400 && bad["error"].as_str().unwrap_or_default().contains("topic"), "{bad}");
    assert_eq!(waiting.wait_for_exit(Duration::from_secs(30)), Some(0), "{}", waiting.stderr());
    let (_, result) = server.json("/api/v1/workflows/api-wait/result");
    assert_eq!(result["output"], json!(r#"{"approved":true}"#), "the API's value arrives as its JSON text");
    let (status, ended) = server.post("/api/v1/workflows/api-wait/messages", &json!({"topic": "go", "value": 2}));
    assert_eq!((status, &ended["disposition"]), (409, &json!("conflict")), "{ended}");
    let (_, shown) = server.json("/api/v1/workflows/api-wait");
    assert_eq!(shown["messages"].as_array().map(Vec::len), Some(1), "{shown}");
    assert_eq!(shown["calls"][0]["step"], "stepbox:runtime/workflow-context.recv");

    let mut publisher = waiter(&["publish", "\"stage\"", "\"{\\\"n\\\": 7}\""], "api-pub");
    assert_eq!(publisher.wait_for_exit(Duration::from_secs(30)), Some(0), "{}", publisher.stderr());
    let (status, event) = server.json("/api/v1/workflows/api-pub/events/stage?wait=5s");
    assert_eq!(
        (status, &event["value"], &event["value_text"]),
        (200, &json!({"n": 7}), &json!("{\"n\": 7}")),
        "{event}"
    );
    let (status, missing) = server.json("/api/v1/workflows/api-pub/events/nothing");
    assert_eq!((status, &missing["disposition"]), (404, &json!("not-found")), "{missing}");
    let (status, _) = server.json("/api/v1/workflows/api-pub/events/stage?wait=soon");
    assert_eq!(status, 400);

    let (_, none) = server.json("/api/v1/schedules");
    assert_eq!(none, json!({"schedules": []}));
    let workflow = upload(&server, artifacts::WAITER);
    let step = upload(&server, artifacts::FLAKY);
    let schedule = json!({"name": "nightly", "cron": "0 3 * * *", "timezone": "Europe/Paris", "workflow": workflow,
                          "steps": [step], "invoke": "whoami", "queue": "reports"});
    let (status, set) = server.post("/api/v1/schedules", &schedule);
    assert_eq!(
        (status, &set["name"], &set["queue"], &set["paused"]),
        (201, &json!("nightly"), &json!("reports"), &json!(false)),
        "{set}"
    );
    let (status, page) = server.get("/schedules");
    assert!(status == 200 && page.contains("nightly") && page.contains("Europe/Paris"), "{page}");
    let (status, page) = server.get("/workflows/api-wait");
    assert!(status == 200 && page.contains("Messages") && page.contains("recv(&quot;go&quot;"), "{page}");
    let (status, bad) =
        server.post("/api/v1/schedules", &json!({"name": "x", "cron": "0 3 * *", "workflow": workflow}));
    assert!(status == 400 && bad["error"].as_str().unwrap_or_default().contains("field(s)"), "{bad}");
    let (status, paused) = server.post("/api/v1/schedules/nightly/pause", &json!({}));
    assert_eq!((status, &paused["schedules"][0]["paused"]), (200, &json!(true)), "{paused}");
    let (status, resumed) = server.post("/api/v1/schedules/nightly/resume", &json!({}));
    assert_eq!((status, &resumed["schedules"][0]["paused"]), (200, &json!(false)), "{resumed}");
    let (status, deleted) = server.post("/api/v1/schedules/nightly/delete", &json!({}));
    assert_eq!((status, deleted), (200, json!({"schedules": []})));
    let (status, gone) = server.post("/api/v1/schedules/nightly/delete", &json!({}));
    assert_eq!((status, &gone["disposition"]), (404, &json!("not-found")), "{gone}");
}

/// `host run waiter.wasm --invoke whoami --id ID`: a short workflow under any id.
fn whoami(scratch: &Scratch, journal: &str, id: &str) -> Run {
    host_command(
        scratch.path(),
        &["run", artifacts::WAITER, "--step", artifacts::FLAKY, "--invoke", "whoami", "--id", id, "--journal", journal],
    )
}

/// Runs one short workflow under each of [`odd_ids`]; the ids.
pub fn run_odd_ids(scratch: &Scratch, journal: &str) -> Vec<String> {
    let ids = odd_ids();
    for id in &ids {
        let run = whoami(scratch, journal, id);
        assert_eq!(run.code, Some(0), "{id}: {}", run.stderr);
    }
    ids
}

/// Ids as people and programs give them: markup, unicode, spaces, slashes,
/// dot segments inside, `?`, `#`, `+`, `%`, quotes, and 1,000 characters.
pub fn odd_ids() -> Vec<String> {
    let mut ids: Vec<String> = [
        r#"x"><img src=x onerror=alert(4)>"#,
        "ünï☃ a/../b?c=1#frag",
        "a b",
        "a+b",
        "a%20b",
        "100%",
        "slash/inside",
        "/leading",
        "trailing/",
        "a/./b",
        "../up",
        "...",
        ".hidden",
        "q?x=1",
        "#hash",
        "semi;colon",
        "amp&er=sand",
        "back\\slash",
        "tab-free 'quotes'",
        "<script>alert(5)</script>",
        "日本語のワークフロー",
        "emoji 🚀",
        "comma,and:colon@at",
        "~tilde~",
        "UPPER-lower_123",
        "equals=sign",
        "[brackets]{braces}",
        "a|pipe",
        "dollar$",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    ids.push("x".repeat(1000));
    ids
}

/// `text` percent-encoded as one path segment, as the pages write their links.
pub fn segment(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => (byte as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Every id the journal accepts opens from the list's link, from the API,
/// and can be forked, cancelled and resumed by its path; what it refuses
/// is refused when the workflow is created.
#[tokio::test(flavor = "multi_thread")]
async fn odd_ids_open_from_the_pages_and_the_api() {
    let scratch = Scratch::new();
    let journal = scratch.journal();
    let ids = run_odd_ids(&scratch, &journal);
    for bad in ["..", ".", ""] {
        let run = whoami(&scratch, &journal, bad);
        assert!(run.refused().contains("workflow id") || run.stderr.contains("cannot be a workflow id"), "{bad:?}");
    }
    let server = Server::start(&scratch, &journal, &[]);
    let (status, list) = server.get("/?limit=100");
    assert_eq!(status, 200);
    for id in &ids {
        let path = format!("/workflows/{}", segment(id));
        assert!(list.contains(&format!("href=\"{path}\"")), "the list links {id:?} as {path}");
        let (status, page) = server.get(&path);
        let escaped = id.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
        assert!(status == 200 && page.contains(&escaped), "{id:?} opens at {path}: {status}");
        let (status, shown) = server.json(&format!("/api/v1/workflows/{}", segment(id)));
        assert_eq!((status, shown["id"].as_str()), (200, Some(id.as_str())), "{id:?} over the API");
        let (status, _) = server.post(&format!("/api/v1/workflows/{}/cancel", segment(id)), &json!({}));
        assert_eq!(status, 409, "{id:?}: ended, nothing to cancel, but found");
        let (status, _) = server.post(&format!("/api/v1/workflows/{}/resume", segment(id)), &json!({}));
        assert_eq!(status, 409, "{id:?}: ended, nothing to resume, but found");
    }
    let fork = json!({"from_step": 1, "id": "ünï☃ fork/../b?#"});
    let (status, forked) = server.post(&format!("/api/v1/workflows/{}/fork", segment(&ids[1])), &fork);
    assert_eq!((status, &forked["id"]), (201, &json!("ünï☃ fork/../b?#")), "{forked}");
    let (status, refused) = server.post(&format!("/api/v1/workflows/{}/fork", segment(&ids[1])), &json!({"id": ".."}));
    assert_eq!((status, &refused["disposition"]), (400, &json!("refused")), "{refused}");
}

/// No other site can frame the pages or run script in them; a token given in
/// the address moves to a cookie and out of the address.
#[tokio::test(flavor = "multi_thread")]
async fn every_response_forbids_framing_and_the_token_leaves_the_address() {
    let scratch = Scratch::new();
    let journal = scratch.journal();
    let server = Server::start(&scratch, &journal, &["--token", "s3cret"]);
    let (status, head, _) = server.request("GET", "/?token=s3cret&status=running", &[], "");
    assert_eq!(status, 303, "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("location: /?status=running"), "{head}");
    assert!(lower.contains("set-cookie: stepbox_token=s3cret; httponly; samesite=strict"), "{head}");
    for (path, headers) in
        [("/", vec!["Cookie: stepbox_token=s3cret"]), ("/api/v1/workflows", vec![]), ("/nope", vec![])]
    {
        let (_, head, _) = server.request("GET", path, &headers, "");
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("x-frame-options: deny"), "{path}: {head}");
        assert!(
            lower.contains("content-security-policy: default-src 'none'") && lower.contains("frame-ancestors 'none'"),
            "{path}: {head}"
        );
        assert!(
            lower.contains("x-content-type-options: nosniff") && lower.contains("referrer-policy: same-origin"),
            "{path}"
        );
    }
}

/// A bare `host serve` exports every family the README lists, each with its
/// `# HELP`, in text Prometheus parses, with the journal's counts.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_of_a_bare_server_parse_and_list_the_readmes_families() {
    let scratch = Scratch::new();
    let journal = scratch.journal();
    populate(&scratch, &journal);
    let server = Server::start(&scratch, &journal, &[]);
    let (status, text) = server.get("/metrics");
    assert_eq!(status, 200);
    let lines = text.lines().map(|line| Ok(line.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    let readme = include_str!("../../README.md");
    let paragraph = readme.split("**Metrics.**").nth(1).and_then(|rest| rest.split("**Traces.**").next()).unwrap();
    let mut listed: Vec<&str> = paragraph
        .split('`')
        .filter(|word| word.starts_with("stepbox_"))
        .map(|word| word.split('{').next().unwrap_or(word))
        .collect();
    listed.sort_unstable();
    listed.dedup();
    assert!(listed.len() >= 11, "{listed:?}");
    // The one labeled by step appears once a step ran (none did in this process).
    for family in listed.iter().filter(|family| **family != "stepbox_attempt_duration_seconds") {
        assert!(scrape.docs.contains_key(*family), "{family} has a # HELP line:\n{text}");
        assert!(text.contains(&format!("# TYPE {family} ")), "{family} is exported:\n{text}");
    }
    let succeeded = scrape
        .samples
        .iter()
        .find(|sample| sample.metric == "stepbox_workflows" && sample.labels.get("status") == Some("succeeded"));
    let value = match succeeded.map(|sample| &sample.value) {
        Some(prometheus_parse::Value::Gauge(value)) => *value,
        other => panic!("stepbox_workflows{{status=succeeded}}: {other:?}"),
    };
    assert_eq!(value, 2.0, "the journal's two finished workflows");
}
