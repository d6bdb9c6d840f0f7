//! The `host` command line: `host run WORKFLOW.wasm [--step STEP.wasm]... [ARGS]`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use stepbox::cache::default_cache_dir;
use stepbox::journal::DEFAULT_JOURNAL;
use stepbox::policy::{PolicyLayer, PolicyOverrides, parse_duration};
use stepbox::runtime::{self, RunOptions};

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
    Run(RunArgs),
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
    /// Journal: a SQLite file path or sqlite: URL, or a postgres:// URL.
    #[arg(long, env = "STEPBOX_JOURNAL", default_value = DEFAULT_JOURNAL, value_name = "URL")]
    journal: String,
    /// Workflow id (generated when absent); a finished id returns its recorded output.
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
    /// Where compiled components are cached [default: ~/.cache/stepbox].
    #[arg(long, env = "STEPBOX_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile every component, ignoring the cache.
    #[arg(long)]
    no_cache: bool,
    /// Print only the workflow output (and errors).
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    let Command::Run(args) = Cli::parse().command;
    stepbox::logging::init(args.quiet);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: RunArgs) -> ExitCode {
    let cli_policy = match cli_policy(&args) {
        Ok(layer) => layer,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let options = RunOptions {
        workflow: args.workflow,
        steps: args.steps,
        journal: args.journal,
        workflow_id: args.id,
        invoke: args.invoke,
        arguments: args.args,
        config: args.config,
        cli_policy,
        cache_dir: if args.no_cache { None } else { args.cache_dir.or_else(default_cache_dir) },
    };
    let started = Instant::now();
    match runtime::run(options).await {
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

/// The policy flags as a policy source: `VALUE` applies to every step, `STEP=VALUE` to one.
fn cli_policy(args: &RunArgs) -> Result<PolicyLayer, String> {
    let mut layer = PolicyLayer { origin: "the command line".into(), ..PolicyLayer::default() };
    let number = |flag: &'static str| {
        move |text: &str| f64::from_str(text.trim()).map_err(|_| format!("--{flag} needs a number, got {text:?}"))
    };
    for (flags, set) in [
        (&args.max_attempts, Setter::MaxAttempts),
        (&args.interval, Setter::Interval),
        (&args.backoff_rate, Setter::BackoffRate),
        (&args.max_interval, Setter::MaxInterval),
        (&args.jitter, Setter::Jitter),
    ] {
        for flag in flags {
            let (step, value) = match flag.split_once('=') {
                Some((step, value)) => (Some(step.trim().to_string()), value),
                None => (None, flag.as_str()),
            };
            let overrides = match &step {
                Some(step) => layer.steps.entry(step.clone()).or_default(),
                None => &mut layer.all,
            };
            set.apply(overrides, value, &number)?;
        }
    }
    Ok(layer)
}

/// Which policy field a flag sets.
#[derive(Clone, Copy)]
enum Setter {
    MaxAttempts,
    Interval,
    BackoffRate,
    MaxInterval,
    Jitter,
}

impl Setter {
    fn apply<F, G>(self, overrides: &mut PolicyOverrides, value: &str, number: &F) -> Result<(), String>
    where
        F: Fn(&'static str) -> G,
        G: Fn(&str) -> Result<f64, String>,
    {
        match self {
            Self::MaxAttempts => {
                let attempts = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("--max-attempts needs a whole number >= 1, got {value:?}"))?;
                overrides.max_attempts = Some(attempts);
            }
            Self::Interval => overrides.interval = Some(parse_duration(value).map_err(|e| format!("--interval: {e}"))?),
            Self::MaxInterval => {
                overrides.max_interval = Some(parse_duration(value).map_err(|e| format!("--max-interval: {e}"))?);
            }
            Self::BackoffRate => overrides.backoff_rate = Some(number("backoff-rate")(value)?),
            Self::Jitter => overrides.jitter = Some(number("jitter")(value)?),
        }
        Ok(())
    }
}
