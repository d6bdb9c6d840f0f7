//! `host new`: each step template (Rust, Python, JavaScript, C) and each
//! workflow template (Rust, Python, JavaScript) are created, built with the
//! one command their README shows (run verbatim), and run end to end through
//! `host run` (the Python and JavaScript workflows through a kill and a resume).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::support::host_command;

/// The command between `<!-- MARKER -->` and `<!-- /MARKER -->` in a generated README.
fn readme_command(project: &Path, marker: &str) -> String {
    let readme = std::fs::read_to_string(project.join("README.md")).expect("the project has a README");
    let block = readme
        .split(&format!("<!-- {marker} -->"))
        .nth(1)
        .and_then(|rest| rest.split(&format!("<!-- /{marker} -->")).next())
        .unwrap_or_else(|| panic!("no {marker} block in {}", project.display()));
    block.lines().filter(|line| !line.starts_with("```") && !line.trim().is_empty()).collect::<Vec<_>>().join("\n")
}

/// The workspace's target folder.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target/tmp has a parent").to_path_buf()
}

/// A folder with `host` and `stepbox-c-component`, for the PATH of the documented commands.
fn tools() -> &'static Path {
    static TOOLS: OnceLock<PathBuf> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--locked", "-q", "-p", "stepbox-c-component", "--target-dir"])
            .arg(target_dir())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building stepbox-c-component failed");
        let tools = Path::new(env!("CARGO_TARGET_TMPDIR")).join("template-tools");
        std::fs::create_dir_all(&tools).unwrap();
        for (name, path) in [
            ("host", PathBuf::from(env!("CARGO_BIN_EXE_host"))),
            ("stepbox-c-component", target_dir().join("debug/stepbox-c-component")),
        ] {
            let link = tools.join(name);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(path, link).unwrap();
        }
        tools
    })
}

/// The toolchain `rust-toolchain.toml` pins (it has the wasm32-wasip2 target), for projects outside the repository.
fn toolchain() -> String {
    let pinned = include_str!("../../rust-toolchain.toml");
    pinned
        .lines()
        .find_map(|line| line.strip_prefix("channel = "))
        .map(|channel| channel.trim_matches('"').to_string())
        .expect("a pinned channel")
}

/// Runs a README command verbatim with bash in `project`.
fn run_documented(project: &Path, marker: &str) -> std::process::Output {
    let command = readme_command(project, marker);
    let path = format!("{}:{}", tools().display(), std::env::var("PATH").unwrap_or_default());
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &command])
        .current_dir(project)
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", target_dir().join("templates"))
        .env("RUSTUP_TOOLCHAIN", toolchain())
        .env("STEPBOX_CACHE_DIR", crate::support::shared_cache())
        .env_remove("STEPBOX_JOURNAL")
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "`{command}` failed in {}:\n{}\n{}",
        project.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Creates a step in `lang` and a workflow calling it, builds both, runs the workflow.
fn step_and_workflow(lang: &str, greeting: &str) {
    let scratch = tempfile::tempdir().unwrap();
    let step = format!("hello-{lang}");
    let created = host_command(scratch.path(), &["new", "step", &step, "--lang", lang]);
    assert_eq!(created.code, Some(0), "{}", created.stderr);
    assert!(created.stdout.contains("build it with"), "{}", created.stdout);
    run_documented(&scratch.path().join(&step), "build");
    assert!(scratch.path().join(&step).join(format!("{step}.wasm")).exists(), "the step component is built");

    let workflow = format!("greet-{lang}");
    let created = host_command(scratch.path(), &["new", "workflow", &workflow, "--step", &step]);
    assert_eq!(created.code, Some(0), "{}", created.stderr);
    let project = scratch.path().join(&workflow);
    run_documented(&project, "build");
    let ran = run_documented(&project, "run");
    let stdout = String::from_utf8_lossy(&ran.stdout);
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert_eq!(stdout.trim(), format!("Workflow output: ok(\"Hello, world (from {greeting})\")"), "{stderr}");
    assert!(stderr.contains("Step greet being automatically retried (attempt 1 of 3)"), "{stderr}");
    assert!(stderr.contains(&format!("greet ({}): attempt 2", greeting.to_lowercase())), "{stderr}");
}

#[test]
fn a_rust_step_and_a_workflow_from_templates_build_and_run() {
    step_and_workflow("rust", "Rust");
}

#[test]
fn a_python_step_from_its_template_builds_and_runs() {
    step_and_workflow("python", "Python");
}

#[test]
fn a_javascript_step_from_its_template_builds_and_runs() {
    step_and_workflow("js", "JavaScript");
}

#[test]
fn a_c_step_from_its_template_builds_and_runs() {
    step_and_workflow("c", "C");
}

/// Without --step, the workflow implements its step itself and runs alone.
#[test]
fn a_workflow_template_runs_on_its_own() {
    let scratch = tempfile::tempdir().unwrap();
    let created = host_command(scratch.path(), &["new", "workflow", "alone"]);
    assert_eq!(created.code, Some(0), "{}", created.stderr);
    let project = scratch.path().join("alone");
    run_documented(&project, "build");
    let ran = run_documented(&project, "run");
    assert_eq!(String::from_utf8_lossy(&ran.stdout).trim(), "Workflow output: ok(\"Hello, world (from Rust)\")");
    let again = host_command(scratch.path(), &["new", "workflow", "alone"]);
    assert!(again.refused().contains("exists and is not empty"));
    let bad = host_command(scratch.path(), &["new", "step", "Bad_Name", "--lang", "rust"]);
    assert!(bad.refused().contains("lower-case letters"));
    let alone = host_command(scratch.path(), &["new", "workflow", "py-alone", "--lang", "python"]);
    assert!(alone.refused().contains("pass it with --step"), "{}", alone.stderr);
}

/// `host wit` writes the runtime package where WIT tools look for it.
#[test]
fn host_wit_writes_the_runtime_package() {
    let scratch = tempfile::tempdir().unwrap();
    let wrote = host_command(scratch.path(), &["wit", "--out", "wit"]);
    assert_eq!(wrote.code, Some(0), "{}", wrote.stderr);
    let written = std::fs::read_to_string(scratch.path().join("wit/deps/stepbox-runtime/runtime.wit")).unwrap();
    assert_eq!(written, include_str!("../../wit/runtime.wit"));
    // Again: the copy in deps is replaced, not refused.
    assert_eq!(host_command(scratch.path(), &["wit", "--out", "wit"]).code, Some(0));
    // A folder that defines the package itself (stepbox's own wit/) is refused, and left as it is.
    std::fs::write(scratch.path().join("wit/runtime.wit"), include_str!("../../wit/runtime.wit")).unwrap();
    std::fs::remove_dir_all(scratch.path().join("wit/deps")).unwrap();
    let refused = host_command(scratch.path(), &["wit", "--out", "wit"]);
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(refused.stderr.contains("already defines package stepbox:runtime"), "{}", refused.stderr);
    assert!(!scratch.path().join("wit/deps").exists(), "nothing was written");
}

/// A workflow from the Python or JavaScript template (sleep, recv, a step
/// call), calling a step of the same language: SIGKILLed during its sleep,
/// sent a greeting while down, resumed — it sleeps what is left, receives
/// the greeting once and greets with it.
fn workflow_killed_and_resumed(lang: &str, greeting: &str) {
    let scratch = tempfile::tempdir().unwrap();
    let step = format!("hi-{lang}");
    let created = host_command(scratch.path(), &["new", "step", &step, "--lang", lang]);
    assert_eq!(created.code, Some(0), "{}", created.stderr);
    run_documented(&scratch.path().join(&step), "build");
    let workflow = format!("wait-{lang}");
    let created = host_command(scratch.path(), &["new", "workflow", &workflow, "--lang", lang, "--step", &step]);
    assert_eq!(created.code, Some(0), "{}", created.stderr);
    assert!(created.stdout.starts_with(&format!("created the {greeting} workflow {workflow}")), "{}", created.stdout);
    let project = scratch.path().join(&workflow);
    run_documented(&project, "build");
    let wasm = format!("{workflow}.wasm");
    let step_wasm = format!("../{step}/{step}.wasm");
    let journal = project.join("stepbox.db").display().to_string();
    let mut first = crate::support::Child::spawn(
        &project,
        &["run", &wasm, "\"world\"", "--step", &step_wasm, "--id", "w1", "--lease", "1s", "--journal", &journal],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // The first run compiles both components (a JavaScript one takes minutes on a loaded
    // 2-core machine): wait for the sleep generously, and stop waiting if the host exits.
    let asleep = runtime.block_on(crate::support::eventually(std::time::Duration::from_secs(600), || {
        let exited = first.process.try_wait().expect("child status").is_some();
        let journal = &journal;
        async move {
            exited || crate::support::rows(journal, "w1").await.calls.iter().any(|call| call.step.ends_with(".sleep"))
        }
    }));
    let running = first.process.try_wait().expect("child status").is_none();
    assert!(asleep && running, "the workflow never slept (host running: {running}):\n{}", first.stderr());
    first.kill();
    runtime.block_on(crate::support::until_lease_lapsed(&journal, "w1"));
    let stage = host_command(&project, &["event", "w1", "stage", "--journal", &journal]);
    assert_eq!(stage.stdout.trim(), "\"sleeping\"", "{}", stage.stderr);
    let sent = host_command(&project, &["send", "w1", "greeting", "\"Bonjour\"", "--journal", &journal]);
    assert_eq!(sent.code, Some(0), "{}", sent.stderr);
    let resumed = host_command(&project, &["resume", "w1", "--journal", &journal]);
    assert_eq!(resumed.code, Some(0), "{}\n{}", resumed.stdout, resumed.stderr);
    assert_eq!(resumed.output(), format!("ok(\"Bonjour, world (from {greeting})\")"), "{}", resumed.stderr);
    let rows = runtime.block_on(crate::support::rows(&journal, "w1"));
    let steps: Vec<&str> = rows.calls.iter().map(|call| call.step.rsplit('.').next().unwrap_or_default()).collect();
    let expected = ["set-event", "sleep", "set-event", "recv", "set-event", "greet", "greet", "greet", "greet"];
    assert_eq!(steps, expected, "{:?}", rows.calls);
    assert!(resumed.stderr.contains("greeted the team at once: 3 of 3 answered"), "{}", resumed.stderr);
    let stage = host_command(&project, &["event", "w1", "stage", "--journal", &journal]);
    assert_eq!(stage.stdout.trim(), "\"greeting\"");
}

#[test]
fn a_python_workflow_from_its_template_sleeps_receives_and_resumes() {
    workflow_killed_and_resumed("python", "Python");
}

#[test]
fn a_javascript_workflow_from_its_template_sleeps_receives_and_resumes() {
    workflow_killed_and_resumed("js", "JavaScript");
}
