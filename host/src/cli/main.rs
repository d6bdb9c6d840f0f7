//! The `host` command line: runs workflows (`run`, `resume`, `recover`),
//! reads and operates the journal (`list`, `show`, `result`, `cancel`, ...),
//! talks to running workflows (`send`, `event`) and schedules them.
//! Exit codes (`exit`): 0 done; 1 the workflow failed, was cancelled or
//! timed out; 2 bad input; 3 not finished; 4 try again (the journal was
//! unreachable) or resume (the workflow stopped); 70 a bug; 130/143 stopped
//! by SIGINT/SIGTERM, resumable.

mod admin;
mod execution;
mod exit;
mod inspect;
mod logging;
mod messages;
mod output;
mod report;
mod schedules;
mod serve;
mod service;
mod templates;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use stepbox::config::{Setting, parse_duration};
use stepbox::journal::{DEFAULT_JOURNAL, WorkflowStatus};
use stepbox::run::DEFAULT_LEASE;
use stepbox::telemetry::Traces;
use stepbox::wasm::default_cache_dir;

use crate::logging::ColorChoice;
use crate::output::Format;

/// Durable step runtime for WebAssembly components.
#[derive(Parser)]
#[command(name = "host", version, about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The journal: a SQLite file path or sqlite: URL, or a postgres:// URL (several hosts allowed).
    #[arg(long, global = true, env = "STEPBOX_JOURNAL", default_value = DEFAULT_JOURNAL, value_name = "URL")]
    journal: String,
    /// How to print results: text for people, json for programs.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Text)]
    output: Format,
    /// When to colour log levels.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workflow component; every step attempt is journaled and retried.
    Run(Box<RunArgs>),
    /// Continue an interrupted workflow with exactly what it started with (policy flags override, journaled).
    Resume {
        /// The workflow id.
        id: String,
        /// Run step components whose files changed since the workflow started (recorded in the journal).
        #[arg(long)]
        allow_changed_steps: bool,
        #[command(flatten)]
        policy: PolicyArgs,
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// Start a new workflow from another's inputs, its step calls before --from-step copied (replayed, not re-run).
    Fork {
        /// The workflow to fork.
        id: String,
        /// The first step call to run again (1 runs everything again).
        #[arg(long, value_name = "N")]
        from_step: i64,
        /// The new workflow's id [default: a new UUIDv7].
        #[arg(long = "id", value_name = "NEW_ID")]
        new_id: Option<String>,
        /// Only create it; `host resume NEW_ID` (or a worker, for a queued one) runs it.
        #[arg(long)]
        no_run: bool,
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// Delete finished workflows and all their rows (running ones are refused).
    Delete {
        /// The workflow ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Delete every workflow that finished more than DURATION ago.
    Prune {
        /// How long finished workflows are kept (e.g. 7d, 12h).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        finished_before: Duration,
    },
    /// Manage the compile cache.
    #[command(subcommand)]
    Cache(admin::CacheCommand),
    /// Write the stepbox:runtime WIT package where WIT tools find it (DIR/deps/stepbox-runtime/).
    Wit {
        /// The WIT folder of your project.
        #[arg(long, default_value = "wit", value_name = "DIR")]
        out: PathBuf,
    },
    /// Create a step or workflow project that builds with one command and runs through `host run`.
    #[command(subcommand)]
    New(templates::NewCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion { shell: clap_complete::Shell },
    /// Hand a workflow to a queue and print its id; `host worker` processes run it.
    Submit(Box<service::SubmitArgs>),
    /// Claim and run the workflows of queues until stopped (SIGTERM: finish running attempts, hand the rest back).
    Worker(Box<service::WorkerArgs>),
    /// Set and list queue limits (they hold across every worker).
    #[command(subcommand)]
    Queue(service::QueueCommand),
    /// List worker processes: live, stopped or lost.
    Workers,
    /// Serve the dashboard and the JSON API (/api/v1) of the journal, on loopback unless given a token.
    Serve(serve::ServeArgs),
    /// Put back queued workflows of dead workers, then continue every interrupted workflow no live process owns.
    Recover {
        /// Lapsed leases in a row without progress before a queued workflow is marked dead.
        #[arg(long, default_value_t = stepbox::worker::DEFAULT_CRASH_LOOP_CAP, value_parser = clap::value_parser!(i32).range(1..=1000))]
        crash_loop_cap: i32,
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// List workflows, newest first.
    List(inspect::ListArgs),
    /// Show a workflow, its step calls and every attempt.
    Show {
        /// The workflow id.
        id: String,
        /// Keep printing new attempts until the workflow ends.
        #[arg(long)]
        follow: bool,
    },
    /// Print a finished workflow's output (the bare value).
    Result {
        /// The workflow id.
        id: String,
        /// Wait until the workflow finishes, for at most this long (default: forever).
        #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "0s", value_parser = parse_duration)]
        wait: Option<Duration>,
    },
    /// Stop a workflow, wherever it runs; it ends `cancelled`.
    Cancel {
        /// The workflow id.
        id: String,
        /// Wait until it has stopped, for at most this long.
        #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "30s", value_parser = parse_duration)]
        wait: Option<Duration>,
    },
    /// Send a message (JSON text) to a workflow; its `recv` on TOPIC takes it, once.
    Send {
        /// The workflow id.
        id: String,
        /// The topic its `recv` waits on.
        topic: String,
        /// The value, JSON text: '{"approved": true}', '"yes"', 42.
        value: String,
        /// A repeated send with the same key (per workflow) is accepted once.
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
        /// Who the workflow sees as the sender.
        #[arg(long, default_value = "host", value_name = "NAME")]
        sender: String,
    },
    /// Print the value a workflow published under KEY (`set-event`), while it runs or after it ended.
    Event {
        /// The workflow id.
        id: String,
        /// The key it published under.
        key: String,
        /// Wait until it is published, for at most this long (default: forever).
        #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "0s", value_parser = parse_duration)]
        wait: Option<Duration>,
    },
    /// Start workflows on a cron schedule; any worker fires each tick, once.
    #[command(subcommand)]
    Schedule(schedules::ScheduleCommand),
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
    /// Workflow id (generated when absent); a finished id returns its recorded output, an interrupted one resumes.
    #[arg(long, value_name = "ID")]
    id: Option<String>,
    /// The exported function to call, when the workflow exports several.
    #[arg(long, value_name = "NAME")]
    invoke: Option<String>,
    /// Manifest to use instead of WORKFLOW's sibling `.toml`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    policy: PolicyArgs,
    #[command(flatten)]
    exec: ExecArgs,
}

/// Retry-policy and limit flags: `VALUE` for every step, `STEP=VALUE` for one.
#[derive(Args)]
struct PolicyArgs {
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
    /// Step calls a workflow may have running at once (`start-call`) [default: 16].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(stepbox::config::MAX_CONCURRENT_CALLS_LIMIT)))]
    max_concurrent_calls: Option<u32>,
}

impl PolicyArgs {
    /// The flags given, each with the setting it sets.
    fn settings(&self) -> impl Iterator<Item = (Setting, &str)> {
        [
            (Setting::MaxAttempts, &self.max_attempts),
            (Setting::Interval, &self.interval),
            (Setting::BackoffRate, &self.backoff_rate),
            (Setting::MaxInterval, &self.max_interval),
            (Setting::Jitter, &self.jitter),
            (Setting::Timeout, &self.timeout),
            (Setting::Memory, &self.memory),
        ]
        .into_iter()
        .flat_map(|(setting, values)| values.iter().map(move |value| (setting, value.as_str())))
    }
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
    /// How long journal operations retry through a database outage [default: 60s].
    #[arg(long, env = "STEPBOX_DB_OUTAGE", value_name = "DURATION", value_parser = parse_duration)]
    db_outage: Option<Duration>,
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

/// A lease between 1 s (renewed every third of it, and given up a tenth
/// before it lapses: shorter would stop healthy workflows on a busy host) and a day.
fn parse_lease(text: &str) -> Result<Duration, String> {
    let lease = parse_duration(text)?;
    if (Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&lease) {
        Ok(lease)
    } else {
        Err(format!("the lease must be between 1s and 24h, got {text}"))
    }
}

/// Reads a workflow status as the journal spells it.
fn parse_status(text: &str) -> Result<WorkflowStatus, String> {
    text.parse()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = match &cli.command {
        Command::Run(args) => args.exec.quiet,
        Command::Resume { exec, .. } | Command::Recover { exec, .. } | Command::Fork { exec, .. } => exec.quiet,
        Command::Worker(args) => args.exec.quiet,
        _ => false,
    };
    // Traces go out over OTLP when the standard OpenTelemetry variables ask for it.
    let traces = Traces::from_env();
    logging::init(quiet, cli.color, traces.as_ref().ok().and_then(Option::as_ref));
    if let Err(message) = &traces {
        tracing::warn!(source = "host", "{message}; running without traces");
    }
    // One workflow's commands run on one thread: its steps run one after the
    // other, and handing each journal write to a writer task on another
    // thread and its reply back cost more than a second thread saves (a
    // durable no-op step 15–30 % faster, BENCHMARKS.md). Commands that run
    // many workflows (workers, `serve`, `recover`) use every core.
    let one_workflow = matches!(cli.command, Command::Run(_) | Command::Resume { .. } | Command::Fork { .. });
    let runtime = if one_workflow {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Runtime::new()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            output::error(&format!("cannot start the async runtime: {error}"));
            return ExitCode::from(exit::USAGE);
        }
    };
    let code = runtime.block_on(dispatch(cli));
    // Background tasks (the journal writer, heartbeats) end with the runtime, without waiting.
    runtime.shutdown_timeout(Duration::from_millis(100));
    if let Ok(Some(traces)) = traces
        && let Err(message) = traces.shutdown()
    {
        output::error(&message);
    }
    ExitCode::from(code)
}

async fn dispatch(cli: Cli) -> u8 {
    let Cli { command, journal, output, .. } = cli;
    match command {
        Command::Run(args) => execution::run(*args, &journal, output).await,
        Command::Resume { id, allow_changed_steps, policy, exec } => {
            execution::resume(&id, allow_changed_steps, &policy, &exec, &journal, output).await
        }
        Command::Fork { id, from_step, new_id, no_run, exec } => {
            execution::fork(&id, from_step, new_id, no_run, &exec, &journal, output).await
        }
        Command::Delete { ids } => admin::delete(&ids, &journal, output).await,
        Command::Prune { finished_before } => admin::prune_journal(finished_before, &journal, output).await,
        Command::Cache(command) => admin::cache(&command, output),
        Command::Wit { out } => templates::wit(&out),
        Command::New(command) => templates::new(&command),
        Command::Completion { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "host", &mut script);
            output::print(&String::from_utf8_lossy(&script));
            0
        }
        Command::Recover { crash_loop_cap, exec } => execution::recover(crash_loop_cap, &exec, &journal, output).await,
        Command::Submit(args) => service::submit(*args, &journal, output).await,
        Command::Worker(args) => service::worker(*args, &journal).await,
        Command::Queue(command) => service::queue(&command, &journal, output).await,
        Command::Workers => service::workers(&journal, output).await,
        Command::Serve(args) => serve::serve(args, &journal).await,
        Command::List(args) => inspect::list(&args, &journal, output).await,
        Command::Show { id, follow } => inspect::show(&id, follow, &journal, output).await,
        Command::Result { id, wait } => inspect::result(&id, wait, &journal, output).await,
        Command::Cancel { id, wait } => inspect::cancel(&id, wait, &journal, output).await,
        Command::Send { id, topic, value, idempotency_key, sender } => {
            messages::send(&id, &topic, &value, &sender, idempotency_key, &journal, output).await
        }
        Command::Event { id, key, wait } => messages::event(&id, &key, wait, &journal, output).await,
        Command::Schedule(command) => schedules::schedule(command, &journal, output).await,
    }
}
