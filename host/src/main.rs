//! The `host` command line: `host run WORKFLOW.wasm [--step STEP.wasm]... [ARGS]`,
//! and `resume`, `recover`, `list`, `show`, `result` over the journal.

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use stepbox::cache::default_cache_dir;
use stepbox::journal::{DEFAULT_JOURNAL, Journal, JournalError, WorkflowStatus};
use stepbox::runtime::{self, DEFAULT_LEASE, RunError, RunOptions, RunOutcome};
use stepbox::settings::{Scope, SettingsLayer};
use stepbox::units::{parse_duration, parse_size};

/// Durable step runtime for WebAssembly components.
#[derive(Parser)]
#[command(name = "host", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workflow component; every step attempt is journaled and retried.
    Run(Box<RunArgs>),
    /// Continue an interrupted workflow with the options it was started with.
    Resume {
        /// The workflow id.
        id: String,
        #[command(flatten)]
        journal: JournalArg,
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// Continue every interrupted workflow of the journal that no live process owns.
    Recover {
        #[command(flatten)]
        journal: JournalArg,
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// List workflows, newest first.
    List {
        /// Only workflows with this status: running, succeeded or failed.
        #[arg(long, value_parser = parse_status)]
        status: Option<WorkflowStatus>,
        /// At most this many.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
        #[command(flatten)]
        journal: JournalArg,
    },
    /// Show a workflow, its step calls and every attempt.
    Show {
        /// The workflow id.
        id: String,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        journal: JournalArg,
    },
    /// Print a finished workflow's output.
    Result {
        /// The workflow id.
        id: String,
        #[command(flatten)]
        journal: JournalArg,
    },
}

#[derive(Args)]
struct JournalArg {
    /// Journal: a SQLite file path or sqlite: URL, or a postgres:// URL.
    #[arg(long, env = "STEPBOX_JOURNAL", default_value = DEFAULT_JOURNAL, value_name = "URL")]
    journal: String,
}

/// How this process runs workflows.
#[derive(Args)]
struct ExecArgs {
    /// Where compiled components are cached [default: ~/.cache/stepbox].
    #[arg(long, env = "STEPBOX_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile every component, ignoring the cache.
    #[arg(long)]
    no_cache: bool,
    /// How long a workflow stays owned by this process without a renewal [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_lease)]
    lease: Option<Duration>,
    /// Print only the workflow output (and errors).
    #[arg(long, short)]
    quiet: bool,
}

impl ExecArgs {
    fn cache_dir(&self) -> Option<PathBuf> {
        if self.no_cache { None } else { self.cache_dir.clone().or_else(default_cache_dir) }
    }

    fn lease(&self) -> Duration {
        self.lease.unwrap_or(DEFAULT_LEASE)
    }
}

#[derive(Args)]
struct RunArgs {
    /// The workflow component (.wasm).
    workflow: PathBuf,
    /// Arguments of the entry function, one WAVE value each: 3, "us-east-1", [1, 2], {a: true}.
    #[arg(allow_negative_numbers = true)]
    args: Vec<String>,
    /// A component that exports step interfaces the workflow imports (repeatable).
    #[arg(long = "step", value_name = "FILE")]
    steps: Vec<PathBuf>,
    #[command(flatten)]
    journal: JournalArg,
    /// Workflow id (generated when absent); a finished id returns its recorded output, an interrupted one resumes.
    #[arg(long, value_name = "ID")]
    id: Option<String>,
    /// The exported function to call, when the workflow exports several.
    #[arg(long, value_name = "NAME")]
    invoke: Option<String>,
    /// Manifest to use instead of WORKFLOW's sibling `.toml`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Total attempts per step call, first included [default: 3].
    #[arg(long, value_name = "[STEP=]N")]
    max_attempts: Vec<String>,
    /// Delay before the second attempt [default: 1s].
    #[arg(long, value_name = "[STEP=]DURATION")]
    interval: Vec<String>,
    /// Multiplier of each further delay [default: 2.0].
    #[arg(long, value_name = "[STEP=]RATE")]
    backoff_rate: Vec<String>,
    /// Upper bound of any delay [default: 1h].
    #[arg(long, value_name = "[STEP=]DURATION")]
    max_interval: Vec<String>,
    /// Fraction (0..=1) of each delay that may be randomly shaved off [default: 0].
    #[arg(long, value_name = "[STEP=]FRACTION")]
    jitter: Vec<String>,
    /// Time limit of each attempt [default: 5m].
    #[arg(long, value_name = "[STEP=]DURATION")]
    timeout: Vec<String>,
    /// Memory limit of each attempt [default: 256MiB].
    #[arg(long, value_name = "[STEP=]SIZE")]
    memory: Vec<String>,
    #[command(flatten)]
    exec: ExecArgs,
}

/// A lease between 100 ms (renewals every third of it must keep up) and a day.
fn parse_lease(text: &str) -> Result<Duration, String> {
    let lease = parse_duration(text)?;
    if (Duration::from_millis(100)..=Duration::from_secs(86_400)).contains(&lease) {
        Ok(lease)
    } else {
        Err(format!("the lease must be between 100ms and 24h, got {text}"))
    }
}

fn parse_status(text: &str) -> Result<WorkflowStatus, String> {
    WorkflowStatus::parse(text).ok_or_else(|| format!("unknown status {text:?}; use running, succeeded or failed"))
}

fn main() -> ExitCode {
    let command = Cli::parse().command;
    let quiet = match &command {
        Command::Run(args) => args.exec.quiet,
        Command::Resume { exec, .. } | Command::Recover { exec, .. } => exec.quiet,
        Command::List { .. } | Command::Show { .. } | Command::Result { .. } => false,
    };
    stepbox::logging::init(quiet);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(dispatch(command))
}

async fn dispatch(command: Command) -> ExitCode {
    match command {
        Command::Run(args) => run(*args).await,
        Command::Resume { id, journal, exec } => {
            let started = Instant::now();
            report(runtime::resume(&journal.journal, &id, exec.cache_dir(), exec.lease()).await, started)
        }
        Command::Recover { journal, exec } => recover(&journal.journal, &exec).await,
        Command::List { status, limit, journal } => {
            inspect(&journal.journal, |journal| async move {
                let workflows = journal.list_workflows(status, i64::from(limit)).await?;
                print!("{}", stepbox::report::workflow_list(&workflows));
                Ok(ExitCode::SUCCESS)
            })
            .await
        }
        Command::Show { id, json, journal } => {
            inspect(&journal.journal, |journal| async move {
                let Some(workflow) = journal.workflow(&id).await? else {
                    eprintln!("error: no workflow {id} in the journal {}", journal.location());
                    return Ok(ExitCode::from(2));
                };
                let calls = journal.step_calls(&id).await?;
                let attempts = journal.attempts(&id).await?;
                if json {
                    println!("{:#}", stepbox::report::workflow_json(&workflow, &calls, &attempts));
                } else {
                    print!("{}", stepbox::report::workflow_detail(&workflow, &calls, &attempts));
                }
                Ok(ExitCode::SUCCESS)
            })
            .await
        }
        Command::Result { id, journal } => inspect(&journal.journal, |journal| async move {
            let Some(workflow) = journal.workflow(&id).await? else {
                eprintln!("error: no workflow {id} in the journal {}", journal.location());
                return Ok(ExitCode::from(2));
            };
            Ok(match workflow.status {
                WorkflowStatus::Succeeded => {
                    println!("Workflow output: {}", workflow.output.unwrap_or_default());
                    ExitCode::SUCCESS
                }
                WorkflowStatus::Failed => {
                    eprintln!("error: workflow {id} failed: {}", workflow.error.unwrap_or_default());
                    ExitCode::from(1)
                }
                WorkflowStatus::Running => {
                    eprintln!(
                        "error: workflow {id} has not finished; `host resume {id}` continues it if it was interrupted"
                    );
                    ExitCode::from(3)
                }
            })
        })
        .await,
    }
}

/// Opens the journal and runs a read-only command on it.
async fn inspect<F, Fut>(target: &str, command: F) -> ExitCode
where
    F: FnOnce(Journal) -> Fut,
    Fut: Future<Output = Result<ExitCode, JournalError>>,
{
    let result = match Journal::open(target).await {
        Ok(journal) => command(journal).await,
        Err(error) => Err(error),
    };
    result.unwrap_or_else(|error| {
        eprintln!("error: {error}");
        ExitCode::from(2)
    })
}

async fn run(args: RunArgs) -> ExitCode {
    let cli_settings = match cli_settings(&args) {
        Ok(layer) => layer,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let options = RunOptions {
        cache_dir: args.exec.cache_dir(),
        lease: args.exec.lease(),
        workflow: args.workflow,
        steps: args.steps,
        journal: args.journal.journal,
        workflow_id: args.id,
        invoke: args.invoke,
        arguments: args.args,
        config: args.config,
        cli_settings,
    };
    let started = Instant::now();
    report(runtime::run(options).await, started)
}

async fn recover(journal: &str, exec: &ExecArgs) -> ExitCode {
    match runtime::recover(journal, exec.cache_dir(), exec.lease()).await {
        Ok(results) => {
            if results.is_empty() {
                tracing::info!("No interrupted workflow to recover");
            }
            let mut code = ExitCode::SUCCESS;
            for (id, result) in results {
                match result {
                    Ok(outcome) => println!("{id}: Workflow output: {}", outcome.output),
                    Err(error) => {
                        eprintln!("error: {error}");
                        code = ExitCode::from(1);
                    }
                }
            }
            code
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

/// Prints a run's output or its error; the exit code says which kind.
fn report(result: Result<RunOutcome, RunError>, started: Instant) -> ExitCode {
    match result {
        Ok(outcome) => {
            if outcome.recorded {
                tracing::info!("Workflow {} had already finished; this is its recorded output", outcome.workflow_id);
            } else {
                tracing::info!("Workflow {} finished in {:.1?}", outcome.workflow_id, started.elapsed());
            }
            println!("Workflow output: {}", outcome.output);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(if error.is_workflow_failure() { 1 } else { 2 })
        }
    }
}

/// The policy and limit flags as a settings source: `VALUE` applies to every step, `STEP=VALUE` to one.
fn cli_settings(args: &RunArgs) -> Result<SettingsLayer, String> {
    let mut layer = SettingsLayer { origin: "the command line".into(), ..SettingsLayer::default() };
    for (flags, setter) in [
        (&args.max_attempts, Setter::MaxAttempts),
        (&args.interval, Setter::Interval),
        (&args.backoff_rate, Setter::BackoffRate),
        (&args.max_interval, Setter::MaxInterval),
        (&args.jitter, Setter::Jitter),
        (&args.timeout, Setter::Timeout),
        (&args.memory, Setter::Memory),
    ] {
        for flag in flags {
            let (step, value) = match flag.split_once('=') {
                Some((step, value)) => (Some(step.trim().to_string()), value),
                None => (None, flag.as_str()),
            };
            let scope = match &step {
                Some(step) => layer.steps.entry(step.clone()).or_default(),
                None => &mut layer.all,
            };
            setter.apply(scope, value)?;
        }
    }
    Ok(layer)
}

/// Which setting a flag sets.
#[derive(Clone, Copy)]
enum Setter {
    MaxAttempts,
    Interval,
    BackoffRate,
    MaxInterval,
    Jitter,
    Timeout,
    Memory,
}

impl Setter {
    fn apply(self, scope: &mut Scope, value: &str) -> Result<(), String> {
        let number =
            |flag: &str| f64::from_str(value.trim()).map_err(|_| format!("--{flag} needs a number, got {value:?}"));
        let duration = |flag: &str| parse_duration(value).map_err(|error| format!("--{flag}: {error}"));
        let retry = &mut scope.retry;
        match self {
            Self::MaxAttempts => {
                let attempts = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("--max-attempts needs a whole number >= 1, got {value:?}"))?;
                retry.max_attempts = Some(attempts);
            }
            Self::Interval => retry.interval = Some(duration("interval")?),
            Self::MaxInterval => retry.max_interval = Some(duration("max-interval")?),
            Self::BackoffRate => retry.backoff_rate = Some(number("backoff-rate")?),
            Self::Jitter => retry.jitter = Some(number("jitter")?),
            Self::Timeout => scope.limits.timeout = Some(duration("timeout")?),
            Self::Memory => {
                scope.limits.memory = Some(parse_size(value).map_err(|error| format!("--memory: {error}"))?)
            }
        }
        Ok(())
    }
}
