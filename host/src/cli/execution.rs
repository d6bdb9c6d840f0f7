//! `host run`, `resume` and `recover`: load, link and run workflows, stop
//! them cleanly on SIGINT/SIGTERM (a second signal exits at once), and say
//! how each ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use serde_json::json;
use stepbox::Disposition;
use stepbox::config::SettingsLayer;
use stepbox::journal::{Journal, JournalError, JournalOptions};
use stepbox::run::{self, Executor, Prepared, ResumeOptions, RunError, RunOutcome, RunRequest, RunSpec, Runner};
use stepbox::wasm::{self, ComponentLoader, StopReason};
use tokio::signal::unix::{SignalKind, signal};

use crate::exit::{self, fail, refuse};
use crate::output::{self, Format};
use crate::{ExecArgs, PolicyArgs, RunArgs};

/// What `host run` and `host submit` run: the components, the entry and the policy flags.
pub fn spec(
    workflow: &std::path::Path,
    steps: &[std::path::PathBuf],
    invoke: Option<&str>,
    config: Option<&std::path::Path>,
    policy: &PolicyArgs,
) -> Result<RunSpec, String> {
    Ok(RunSpec {
        workflow: workflow.to_path_buf(),
        steps: steps.to_vec(),
        invoke: invoke.map(str::to_string),
        config: config.map(std::path::Path::to_path_buf),
        cli_settings: SettingsLayer {
            max_concurrent_calls: policy.max_concurrent_calls,
            ..SettingsLayer::from_flags(policy.settings())?
        },
    })
}

/// `host run`.
pub async fn run(args: RunArgs, journal: &str, format: Format) -> u8 {
    let spec = match spec(&args.workflow, &args.steps, args.invoke.as_deref(), args.config.as_deref(), &args.policy) {
        Ok(spec) => spec,
        Err(message) => return refuse(&message),
    };
    let Some(loader) = loader(&args.exec) else { return exit::USAGE };
    // Components, links and settings are checked before the journal is touched.
    let prepared = match Prepared::from_spec(&spec, &loader) {
        Ok(prepared) => prepared,
        Err(error) => return fail(&error),
    };
    if let Err(error) = prepared.check_arguments(&args.args) {
        return fail(&error);
    }
    let executor = match executor(journal, &args.exec).await {
        Ok(executor) => executor,
        Err(error) => return fail(&error),
    };
    let runner = match Runner::new(prepared, executor.clone()) {
        Ok(runner) => runner,
        Err(error) => return fail(&error),
    };
    let signals = Signals::watch(executor.clone());
    // A cancel from another process stops the running attempt at once (PostgreSQL).
    executor.listen(Vec::new(), Arc::default(), false).await;
    let request = RunRequest { id: args.id.clone(), arguments: args.args.clone() };
    let result = runner.run(request).await;
    report(result, &signals, args.exec.quiet, format, journal)
}

/// `host resume`.
pub async fn resume(
    id: &str,
    allow_changed_steps: bool,
    policy: &PolicyArgs,
    exec: &ExecArgs,
    journal: &str,
    format: Format,
) -> u8 {
    let overrides = match SettingsLayer::from_flags(policy.settings()) {
        Ok(layer) => SettingsLayer {
            origin: "the command line of host resume".into(),
            max_concurrent_calls: policy.max_concurrent_calls,
            ..layer
        },
        Err(message) => return refuse(&message),
    };
    let Some(loader) = loader(exec) else { return exit::USAGE };
    let executor = match executor(journal, exec).await {
        Ok(executor) => executor,
        Err(error) => return fail(&error),
    };
    let signals = Signals::watch(executor.clone());
    // A cancel from another process stops the running attempt at once (PostgreSQL).
    executor.listen(Vec::new(), Arc::default(), false).await;
    let options = ResumeOptions { allow_changed_steps, overrides };
    let result = run::resume(id, &loader, executor, &options).await;
    report(result, &signals, exec.quiet, format, journal)
}

/// `host fork`: creates the new workflow, then runs it here unless asked not to (or it is queued).
pub async fn fork(
    id: &str,
    from_step: i64,
    new_id: Option<String>,
    no_run: bool,
    exec: &ExecArgs,
    journal: &str,
    format: Format,
) -> u8 {
    let executor = match executor(journal, exec).await {
        Ok(executor) => executor,
        Err(error) => return fail(&error),
    };
    let receipt = match stepbox::operate::fork(executor.journal(), id, from_step, new_id, None).await {
        Ok(receipt) => receipt,
        Err(error) => return fail(&error),
    };
    if no_run || receipt.queue.is_some() {
        match format {
            Format::Json => output::json(&receipt),
            Format::Text => output::line(&receipt.id),
        }
        return 0;
    }
    let forked = receipt.id;
    let Some(loader) = loader(exec) else { return exit::USAGE };
    let signals = Signals::watch(executor.clone());
    // A cancel from another process stops the running attempt at once (PostgreSQL).
    executor.listen(Vec::new(), Arc::default(), false).await;
    let result = run::resume(&forked, &loader, executor, &ResumeOptions::default()).await;
    report(result, &signals, exec.quiet, format, journal)
}

/// `host recover`.
pub async fn recover(crash_loop_cap: i32, exec: &ExecArgs, journal: &str, format: Format) -> u8 {
    let Some(loader) = loader(exec) else { return exit::USAGE };
    let executor = match executor(journal, exec).await {
        Ok(executor) => executor,
        Err(error) => return fail(&error),
    };
    let signals = Signals::watch(executor.clone());
    // A cancel from another process stops the running attempt at once (PostgreSQL).
    executor.listen(Vec::new(), Arc::default(), false).await;
    // Queued workflows of workers that died go back to their queue (the reaper of `host worker`, once).
    match executor.journal().reap_workflows(crash_loop_cap).await {
        Ok(reaped) => {
            for id in &reaped.requeued {
                tracing::info!(source = "host", "Workflow {id}: its worker's lease lapsed; back in its queue");
            }
            for id in &reaped.dead {
                tracing::warn!(source = "host", "Workflow {id} is dead: its workers kept stopping without progress");
            }
            for id in &reaped.timed_out {
                tracing::warn!(source = "host", "Workflow {id} timed out before a worker started it");
            }
        }
        Err(error) => return fail(&error),
    }
    let results = match run::recover(&loader, executor).await {
        Ok(results) => results,
        Err(error) => return fail(&error),
    };
    if results.is_empty() {
        tracing::info!(source = "host", "No interrupted workflow to recover");
    }
    let mut code = 0;
    let mut documents = Vec::new();
    for (id, result) in results {
        match result {
            Ok(outcome) => {
                if format == Format::Json {
                    documents.push(outcome_json(&outcome));
                } else {
                    output::line(&format!("{id}: Workflow output: {}", outcome.output));
                }
            }
            Err(error) => {
                output::error(&error.to_string());
                code = code.max(exit_code(&error, &signals));
            }
        }
    }
    if format == Format::Json {
        output::json(&documents);
    }
    code
}

/// The compile cache and engine for this process; `None` (with the error printed) if the engine cannot start.
pub fn loader(exec: &ExecArgs) -> Option<ComponentLoader> {
    match wasm::new_engine() {
        Ok(engine) => Some(ComponentLoader::new(&engine, exec.cache_dir())),
        Err(error) => {
            output::error(&format!("cannot start the WebAssembly engine: {error:#}"));
            None
        }
    }
}

pub async fn executor(journal: &str, exec: &ExecArgs) -> Result<Arc<Executor>, JournalError> {
    let mut options = JournalOptions::default();
    if let Some(budget) = exec.db_outage {
        options.outage_budget = budget;
    }
    let journal = Journal::open_with(journal, options).await?;
    Ok(Executor::start(journal, exec.lease()))
}

/// Prints a run's output or its error; the exit code says which kind.
fn report(result: Result<RunOutcome, RunError>, signals: &Signals, quiet: bool, format: Format, journal: &str) -> u8 {
    match result {
        Ok(outcome) => {
            if outcome.recorded {
                tracing::info!(
                    source = "host",
                    "Workflow {} had already finished; this is its recorded output",
                    outcome.workflow_id
                );
            } else {
                tracing::info!(source = "host", "Workflow {} finished in {:.1?}", outcome.workflow_id, outcome.elapsed);
            }
            match format {
                Format::Json => output::json(&outcome_json(&outcome)),
                Format::Text if quiet => output::line(&outcome.output),
                Format::Text => output::line(&format!("Workflow output: {}", outcome.output)),
            }
            0
        }
        Err(error) => {
            output::error(&error.to_string());
            if error.disposition() == Disposition::Stopped && journal != stepbox::journal::DEFAULT_JOURNAL {
                let _ = std::io::Write::write_all(
                    &mut std::io::stderr(),
                    format!("(pass the same --journal {} to host resume)\n", stepbox::journal::redact(journal))
                        .as_bytes(),
                );
            }
            exit_code(&error, signals)
        }
    }
}

fn outcome_json(outcome: &RunOutcome) -> serde_json::Value {
    json!({
        "id": outcome.workflow_id,
        "status": "succeeded",
        "output": outcome.output_json,
        "output_wave": outcome.output,
    })
}

/// The exit code of a run's error: its disposition's, or the signal's that stopped it.
fn exit_code(error: &RunError, signals: &Signals) -> u8 {
    match (error.disposition(), signals.received()) {
        (Disposition::Stopped, Some(2)) => exit::SIGINT,
        (Disposition::Stopped, Some(_)) => exit::SIGTERM,
        (disposition, _) => exit::code(disposition),
    }
}

/// SIGINT and SIGTERM: the first stops every workflow of the process (the
/// running attempt is interrupted at the next epoch tick and journaled, the
/// lease released); a second exits at once.
struct Signals {
    received: Arc<AtomicU8>,
    task: tokio::task::JoinHandle<()>,
}

impl Signals {
    fn watch(executor: Arc<Executor>) -> Self {
        let received = Arc::new(AtomicU8::new(0));
        let seen = received.clone();
        let task = tokio::spawn(async move {
            let (Ok(mut interrupt), Ok(mut terminate)) =
                (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
            else {
                return;
            };
            loop {
                let number: u8 = tokio::select! {
                    _ = interrupt.recv() => 2,
                    _ = terminate.recv() => 15,
                };
                if seen.swap(number, Ordering::AcqRel) != 0 || executor.running() == 0 {
                    std::process::exit(128 + i32::from(number));
                }
                tracing::warn!(
                    source = "host",
                    "Stopping: the running attempt is interrupted and journaled, the lease released \
                     (signal again to exit at once)"
                );
                executor.stop_all(StopReason::Shutdown);
            }
        });
        Self { received, task }
    }

    fn received(&self) -> Option<u8> {
        Some(self.received.load(Ordering::Acquire)).filter(|&number| number != 0)
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        self.task.abort();
    }
}
