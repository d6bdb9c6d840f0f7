//! The sandbox: hostile guests cost only their own attempts, grants open
//! exactly what they name, and nothing outside them is read or changed.

use std::fs;
use std::path::Path;

use stepbox::config::SettingsLayer;
use stepbox::journal::Journal;
use stepbox::run::{RunRequest, RunSpec};

use crate::support::{Run, Scratch, artifacts, rows, runner};

/// `host run hostile-caller.wasm --step hostile.wasm --invoke ENTRY ARGS...`, two attempts 1 ms apart.
fn hostile(scratch: &Scratch, id: &str, entry: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        artifacts::HOSTILE_CALLER,
        "--step",
        artifacts::HOSTILE,
        "--id",
        id,
        "--invoke",
        entry,
        "--interval",
        "1ms",
        "--max-attempts",
        "2",
    ];
    args.extend(extra);
    scratch.run(&args)
}

/// Asserts the workflow got `retries-exhausted` with every attempt of `kind`; returns the journaled messages.
async fn exhausted_with(scratch: &Scratch, run: &Run, id: &str, kind: &str) -> Vec<String> {
    let output = run.success();
    assert!(output.starts_with("err(retries-exhausted({step: \"guests:hostile/steps."), "{output}");
    let journal = rows(&scratch.journal(), id).await;
    let kinds: Vec<_> = journal.attempts.iter().map(|a| a.kind.clone().unwrap_or_default()).collect();
    assert_eq!(kinds, [kind, kind], "both attempts failed the same way");
    journal.attempts.iter().map(|a| a.message.clone().unwrap_or_default()).collect()
}

#[tokio::test]
async fn an_infinite_loop_times_out_by_epoch_interruption() {
    let scratch = Scratch::new();
    let run = hostile(&scratch, "spin", "spin", &["--timeout", "200ms"]);
    let messages = exhausted_with(&scratch, &run, "spin", "timed-out").await;
    assert!(messages[0].starts_with("the attempt did not finish within 200ms (interrupted)"), "{}", messages[0]);
    let journal = rows(&scratch.journal(), "spin").await;
    for attempt in &journal.attempts {
        let elapsed = attempt.finished_at.unwrap() - attempt.started_at;
        assert!((190..1500).contains(&elapsed), "stopped near its 200 ms limit, took {elapsed} ms");
    }
}

#[tokio::test]
async fn a_memory_bomb_is_out_of_memory() {
    let scratch = Scratch::new();
    let run = hostile(&scratch, "bomb", "hog-memory", &["--memory", "32MiB"]);
    let messages = exhausted_with(&scratch, &run, "bomb", "out-of-memory").await;
    assert!(messages[0].starts_with("the attempt tried to grow its memory past 32.0 MiB"), "{}", messages[0]);
    assert!(messages[0].contains("memory allocation of"), "the guest's own report is kept: {}", messages[0]);
}

#[tokio::test]
async fn a_stack_overflow_traps() {
    let scratch = Scratch::new();
    let run = hostile(&scratch, "deep", "recurse", &["100000000"]);
    let messages = exhausted_with(&scratch, &run, "deep", "trapped").await;
    assert!(messages[0].contains("wasm backtrace") && messages[0].contains("hostile.wasm!"), "{}", messages[0]);
}

#[tokio::test]
async fn a_huge_result_is_refused_before_the_journal() {
    let scratch = Scratch::new();
    let config = scratch.path().join("limits.toml");
    fs::write(&config, "[limits]\nresult = \"100KiB\"\n").unwrap();
    let run = hostile(&scratch, "huge", "huge-result", &["200000", "--config", config.to_str().unwrap()]);
    let messages = exhausted_with(&scratch, &run, "huge", "result-too-large").await;
    assert_eq!(messages[0], "the step returned a value longer than its result limit of 102400 bytes (as WAVE)");
    let fits = hostile(&scratch, "fits", "huge-result", &["1000", "--config", config.to_str().unwrap()]);
    assert_eq!(fits.success(), "ok(1000)");
}

#[tokio::test]
async fn printing_hundreds_of_megabytes_keeps_only_the_output_limit() {
    let scratch = Scratch::new();
    let run = hostile(&scratch, "loud", "shout", &["268435456"]);
    assert_eq!(run.success(), "ok(268435456)");
    let journal = rows(&scratch.journal(), "loud").await;
    let stdout = journal.attempts[0].stdout.clone().unwrap_or_default();
    assert_eq!(stdout.matches('!').count(), 64 << 10, "the first 64 KiB are kept");
    assert!(
        stdout.ends_with("[268369920 more bytes not kept: output limit 65536 bytes]"),
        "{}",
        &stdout[stdout.len() - 80..]
    );
    assert_eq!(journal.attempts[0].stderr.as_deref(), Some("shouted 268435456 bytes"));
    assert_eq!(run.count("(shout stderr) shouted 268435456 bytes"), 1, "captured output is logged");
}

/// A scratch directory with a granted folder, a secret beside it, a symlink
/// out of the grant, and a manifest granting the folder (and one env var).
struct Granted {
    scratch: Scratch,
    config: String,
}

impl Granted {
    fn new(write: bool) -> Self {
        let scratch = Scratch::new();
        let granted = scratch.path().join("granted");
        fs::create_dir(&granted).unwrap();
        fs::write(granted.join("hello.txt"), "hello from the host").unwrap();
        fs::write(scratch.path().join("secret.txt"), "TOP SECRET").unwrap();
        std::os::unix::fs::symlink(scratch.path().join("secret.txt"), granted.join("link.txt")).unwrap();
        let config = scratch.path().join("grants.toml");
        fs::write(
            &config,
            format!(
                "[grants]\ndirs = [{{ host = \"granted\", guest = \"/data\", write = {write} }}]\nenv = [\"STEPBOX_TEST_GRANTED\"]\n"
            ),
        )
        .unwrap();
        Self { config: config.display().to_string(), scratch }
    }

    fn run(&self, id: &str, entry: &str, args: &[&str]) -> Run {
        let mut all = args.to_vec();
        all.extend(["--config", &self.config]);
        hostile(&self.scratch, id, entry, &all)
    }

    /// Everything in the scratch directory outside the grant, with contents.
    fn outside(&self) -> Vec<(String, String)> {
        let mut files: Vec<_> = fs::read_dir(self.scratch.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.is_file() && !path.to_string_lossy().contains("journal.db"))
            .map(|path| (path.display().to_string(), fs::read_to_string(&path).unwrap_or_default()))
            .collect();
        files.sort();
        files
    }
}

#[tokio::test]
async fn nothing_outside_a_read_only_grant_can_be_read_or_changed() {
    let granted = Granted::new(false);
    let before = granted.outside();
    assert_eq!(granted.run("ok", "read-file", &["\"/data/hello.txt\""]).success(), "ok(\"hello from the host\")");

    for (id, path) in [("passwd", "/etc/passwd"), ("dotdot", "/data/../secret.txt"), ("symlink", "/data/link.txt")] {
        let run = granted.run(id, "read-file", &[&format!("{path:?}")]);
        let output = run.success();
        assert!(output.starts_with(&format!("err(permanent(\"read {path}: ")), "{id}: {output}");
        assert!(!run.stdout.contains("TOP SECRET") && !run.stderr.contains("TOP SECRET"), "{id} leaked the secret");
    }
    let write = granted.run("ro", "write-file", &["\"/data/new.txt\"", "\"x\""]);
    assert!(write.success().starts_with("err(permanent(\"write /data/new.txt: "), "{}", write.output());
    assert!(!granted.scratch.path().join("granted/new.txt").exists());
    assert_eq!(granted.outside(), before, "nothing outside the grant changed");
}

#[tokio::test]
async fn a_step_that_panics_while_writing_changes_only_its_granted_folder() {
    let granted = Granted::new(true);
    let before = granted.outside();
    let run = granted.run("half", "write-then-panic", &["\"/data/out.txt\""]);
    assert!(run.success().starts_with("err(retries-exhausted("), "{}", run.output());
    let journal = rows(&granted.scratch.journal(), "half").await;
    assert!(
        journal.attempts[0]
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("crashed halfway through writing /data/out.txt")
    );
    assert_eq!(fs::read_to_string(granted.scratch.path().join("granted/out.txt")).unwrap(), "first half;");
    let escape = granted.run("escape", "write-file", &["\"/data/../escaped.txt\"", "\"x\""]);
    assert!(escape.success().starts_with("err(permanent("), "{}", escape.output());
    assert_eq!(granted.outside(), before, "nothing outside the grant changed");
}

#[tokio::test]
async fn only_granted_environment_variables_are_visible() {
    let granted = Granted::new(false);
    let env = [("STEPBOX_TEST_GRANTED", "yes"), ("STEPBOX_TEST_SECRET", "hunter2")];
    let mut args = vec![
        artifacts::HOSTILE_CALLER,
        "--step",
        artifacts::HOSTILE,
        "--invoke",
        "list-env",
        "--config",
        &granted.config,
    ];
    let journal = granted.scratch.journal();
    args.extend(["--journal", &journal]);
    let run = crate::support::host_with_env(granted.scratch.path(), &args, &env);
    assert_eq!(run.success(), r#"ok(["STEPBOX_TEST_GRANTED=yes"])"#);
    let ungranted = hostile(&Scratch::new(), "bare", "list-env", &[]);
    assert_eq!(ungranted.success(), "ok([])");
}

#[tokio::test]
async fn sockets_are_denied() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let scratch = Scratch::new();
    let run = hostile(&scratch, "socket", "connect", &[&format!("{address:?}")]);
    assert!(run.success().starts_with(&format!("err(permanent(\"connect {address}: ")), "{}", run.output());
    assert!(listener.accept().is_err(), "no connection reached the listener");
}

fn spec(workflow: &Path, steps: &[&str], invoke: &str, timeout: std::time::Duration) -> RunSpec {
    let mut cli = SettingsLayer { origin: "test".into(), ..Default::default() };
    cli.all.retry.interval = Some(std::time::Duration::from_millis(1));
    cli.all.retry.max_attempts = Some(2);
    cli.all.limits.timeout = Some(timeout);
    RunSpec {
        workflow: workflow.to_path_buf(),
        steps: steps.iter().map(Into::into).collect(),
        invoke: Some(invoke.into()),
        config: None,
        cli_settings: cli,
    }
}

/// A hostile workflow and a normal one in the same process: the normal one finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_workflow_in_the_same_process_finishes_normally() {
    let scratch = Scratch::new();
    let journal = Journal::open(&scratch.journal()).await.expect("opens");
    let short = std::time::Duration::from_millis(300);
    let hostile = runner(&journal, &spec(Path::new(artifacts::HOSTILE_CALLER), &[artifacts::HOSTILE], "spin", short));
    // The normal workflow's attempts get 5 s: a loaded host must not time them out.
    let normal = runner(
        &journal,
        &spec(
            Path::new(artifacts::RETRY_DEMO),
            &[artifacts::FLAKY],
            "retry-then-succeed",
            std::time::Duration::from_secs(5),
        ),
    );
    let hostile_run = hostile.run(RunRequest { id: Some("h".into()), arguments: vec![] });
    let normal_run = normal.run(RunRequest { id: Some("n".into()), arguments: vec!["1".into()] });
    let (hostile_outcome, normal_outcome) = tokio::join!(hostile_run, normal_run);
    assert!(hostile_outcome.unwrap().output.starts_with("err(retries-exhausted({step: \"guests:hostile/steps.spin\""));
    assert_eq!(normal_outcome.unwrap().output, "ok(2)");
}

/// A one-response-per-connection HTTP server on 127.0.0.1 that counts connections.
fn http_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read as _, Write as _};
    use std::sync::atomic::{AtomicUsize, Ordering};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let connections = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
        }
    });
    (address, connections)
}

#[tokio::test]
async fn http_reaches_only_granted_hosts() {
    use std::sync::atomic::Ordering;

    let (address, connections) = http_server();
    let port = address.rsplit_once(':').unwrap().1;
    let scratch = Scratch::new();
    let config = scratch.path().join("http.toml");
    fs::write(&config, format!("[steps.fetch.grants]\nhttp = [\"{address}\"]\n")).unwrap();
    let config = config.to_str().unwrap();

    let url = format!("\"http://{address}/hello\"");
    let allowed = hostile(&scratch, "granted", "fetch", &[&url, "--config", config]);
    assert_eq!(allowed.success(), r#"ok("200 hello")"#);
    assert_eq!(connections.load(Ordering::SeqCst), 1);

    let ungranted = hostile(&scratch, "ungranted", "fetch", &[&url]);
    assert_eq!(
        ungranted.success(),
        format!(r#"err(permanent("fetch http://{address}/hello: ErrorCode::HttpRequestDenied"))"#)
    );
    let other_name = format!("\"http://localhost:{port}/hello\"");
    let renamed = hostile(&scratch, "renamed", "fetch", &[&other_name, "--config", config]);
    assert!(renamed.success().contains("HttpRequestDenied"), "{}", renamed.output());
    assert_eq!(connections.load(Ordering::SeqCst), 1, "denied requests never reached the server");
    let journal = rows(&scratch.journal(), "ungranted").await;
    assert_eq!(journal.attempts[0].outcome.as_deref(), Some("rejected"));
    assert!(journal.attempts[0].message.as_deref().unwrap_or_default().contains("HttpRequestDenied"));
}

#[test]
fn a_step_sees_its_limits_and_may_inherit_stdout() {
    let scratch = Scratch::new();
    let journal = scratch.journal();
    let seen = crate::support::host_in(
        scratch.path(),
        &[
            artifacts::RETRY_DEMO,
            "--step",
            artifacts::FLAKY,
            "--invoke",
            "retry-then-succeed",
            "0",
            "--timeout",
            "flaky=7s",
            "--journal",
            &journal,
        ],
    );
    seen.success();
    assert_eq!(seen.count("flaky: attempt 1 (timeout 7000 ms)"), 1, "{}", seen.stderr);

    let config = scratch.path().join("inherit.toml");
    fs::write(&config, "[steps.shout.grants]\nstdout = \"inherit\"\n").unwrap();
    let inherited = hostile(&scratch, "inherit", "shout", &["12", "--config", config.to_str().unwrap()]);
    assert_eq!(inherited.success(), "ok(12)");
    assert!(
        inherited.stdout.starts_with("!!!!!!!!!!!!"),
        "the guest wrote to the host's stdout: {:?}",
        inherited.stdout
    );
}

/// A `list<u8>` over the result limit is `result-too-large` (not a trap with
/// wasmtime's hostcall-fuel message), and measuring it stops at the limit.
#[tokio::test]
async fn a_huge_byte_list_is_too_large_and_refused_quickly() {
    let scratch = Scratch::new();
    let started = std::time::Instant::now();
    // 64 MiB of bytes: more than wasmtime copies to the host in one call by default.
    let run = hostile(&scratch, "bytes", "huge-bytes", &["67108864"]);
    let messages = exhausted_with(&scratch, &run, "bytes", "result-too-large").await;
    assert!(messages[0].contains("result limit of 1048576 bytes"), "{}", messages[0]);
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "two attempts took {:?}", started.elapsed());
    let config = scratch.path().join("limits.toml");
    fs::write(&config, "[limits]\nresult = \"100KiB\"\n").unwrap();
    let run = hostile(&scratch, "bytes-small", "huge-bytes", &["200000", "--config", config.to_str().unwrap()]);
    let messages = exhausted_with(&scratch, &run, "bytes-small", "result-too-large").await;
    assert!(messages[0].contains("result limit of 102400 bytes"), "{}", messages[0]);
    assert_eq!(hostile(&scratch, "bytes-fit", "huge-bytes", &["1000"]).success(), "ok(1000)");
}

/// `stepbox:runtime/log` is capped per attempt like stdout: one 100 MiB line
/// does not reach the host's stderr; what was dropped is counted and journaled.
#[tokio::test]
async fn a_log_flood_is_capped_and_counted() {
    let scratch = Scratch::new();
    let run = hostile(&scratch, "flood", "log-flood", &["104857600", "1"]);
    assert_eq!(run.success(), "ok(104857600)");
    assert!(run.stderr.len() < 1 << 20, "the host's stderr got {} bytes", run.stderr.len());
    let note = "[104857600 more bytes of log messages not shown: output limit 65536 bytes]";
    assert_eq!(run.count(note), 1, "{}", &run.stderr[..run.stderr.len().min(2000)]);
    let journal = rows(&scratch.journal(), "flood").await;
    assert_eq!(journal.attempts[0].stderr.as_deref(), Some(note), "the note is journaled with the attempt");

    // Many small messages: the first 64 KiB are shown, the rest counted.
    let run = hostile(&scratch, "chatty", "log-flood", &["1000", "200"]);
    assert_eq!(run.success(), "ok(200000)");
    assert_eq!(run.stderr.matches(&"#".repeat(1000)).count(), 65, "{} bytes of log shown", 65 * 1000);
    assert_eq!(run.count("[135000 more bytes of log messages not shown: output limit 65536 bytes]"), 1);
}

/// A step with a writable grant cannot leave a link behind that points out of it.
#[tokio::test]
async fn links_that_leave_a_granted_folder_are_refused() {
    let granted = Granted::new(true);
    let folder = granted.scratch.path().join("granted");
    for (id, target) in [("dotdot", "../secret.txt"), ("deep", "sub/../../secret.txt"), ("absolute", "/etc/passwd")] {
        let run = granted.run(id, "make-link", &[&format!("{target:?}"), "\"/data/out\""]);
        let output = run.success();
        assert!(
            output.starts_with("err(permanent(\"symlink /data/out: ") && output.contains("not-permitted"),
            "{id}: {output}"
        );
        assert!(fs::symlink_metadata(folder.join("out")).is_err(), "{id}: no link was created");
    }
    let fine = granted.run("inside", "make-link", &["\"hello.txt\"", "\"/data/alias\""]);
    assert_eq!(fine.success(), "ok(1)");
    assert_eq!(fs::read_link(folder.join("alias")).unwrap(), std::path::PathBuf::from("hello.txt"));
}
