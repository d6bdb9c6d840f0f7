//! The service commands: `host submit` (hand a workflow to a queue and
//! return), `host worker` (claim and run until stopped; SIGTERM drains),
//! `host queue set|apply|list` and `host workers`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use stepbox::config::{QueueSpec, parse_duration, read_queue_file};
use stepbox::journal::{DEFAULT_QUEUE, Journal, Timestamp};
use stepbox::operate::SubmitReceipt;
use stepbox::worker::{
    Client, DEFAULT_CONCURRENCY, DEFAULT_CRASH_LOOP_CAP, DEFAULT_GRACE, DEFAULT_POLL_INTERVAL, SubmitRequest, Worker,
    WorkerOptions,
};
use tokio::signal::unix::{SignalKind, signal};

use crate::exit::{self, fail, refuse};
use crate::output::{self, Format};
use crate::{ExecArgs, PolicyArgs, report};

/// `host submit`'s arguments.
#[derive(Args)]
pub struct SubmitArgs {
    /// The workflow component (.wasm).
    workflow: PathBuf,
    /// Arguments of the entry function, one WAVE value each.
    #[arg(allow_negative_numbers = true)]
    args: Vec<String>,
    /// A component that exports step interfaces the workflow imports (repeatable).
    #[arg(long = "step", value_name = "FILE")]
    steps: Vec<PathBuf>,
    /// The queue.
    #[arg(long, default_value = DEFAULT_QUEUE)]
    queue: String,
    /// Workflow id [default: a new UUIDv7].
    #[arg(long, value_name = "ID")]
    id: Option<String>,
    /// Lower runs first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,
    /// At most one live workflow per queue and key: a second submit prints the first one's id.
    #[arg(long, value_name = "KEY")]
    dedup: Option<String>,
    /// Counts against the queue's per-partition concurrency.
    #[arg(long, value_name = "KEY")]
    partition: Option<String>,
    /// Start no sooner than this long from now.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "at")]
    delay: Option<Duration>,
    /// Start no sooner than this time (RFC 3339, e.g. 2026-12-01T09:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = Timestamp::parse_rfc3339)]
    at: Option<Timestamp>,
    /// End the workflow `timed-out` if it has not finished this long after submission
    /// (`--timeout` is each attempt's limit, as for host run).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    workflow_timeout: Option<Duration>,
    /// The exported function to call, when the workflow exports several.
    #[arg(long, value_name = "NAME")]
    invoke: Option<String>,
    /// Manifest to use instead of WORKFLOW's sibling `.toml`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Where compiled components are cached [default: ~/.cache/stepbox].
    #[arg(long, env = "STEPBOX_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

/// `host worker`'s arguments.
#[derive(Args)]
pub struct WorkerArgs {
    /// A queue to claim from (repeatable; in this order).
    #[arg(long = "queue", value_name = "NAME", default_value = DEFAULT_QUEUE)]
    queues: Vec<String>,
    /// Workflows this worker runs at once.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY as u16, value_parser = clap::value_parser!(u16).range(1..=500))]
    concurrency: u16,
    /// How often to look for work without being told (±20 %) [default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    poll_interval: Option<Duration>,
    /// Never LISTEN: poll only (for pgbouncer in transaction mode, engines without NOTIFY).
    #[arg(long)]
    poll_only: bool,
    /// How long running attempts may finish after SIGTERM before they are interrupted [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    grace: Option<Duration>,
    /// Lapsed leases in a row without progress before a workflow is marked dead.
    #[arg(long, default_value_t = DEFAULT_CRASH_LOOP_CAP, value_parser = clap::value_parser!(i32).range(1..=1000))]
    crash_loop_cap: i32,
    /// Backoffs longer than this give up the slot until the retry is due [default: the lease].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    park_after: Option<Duration>,
    /// Also serve the dashboard and the API on this address, as `host serve --bind` does.
    #[arg(long, value_name = "ADDRESS")]
    serve: Option<std::net::SocketAddr>,
    /// The server's token (needed off loopback), as `host serve --token`.
    #[arg(long, env = "STEPBOX_TOKEN", hide_env_values = true, requires = "serve")]
    token: Option<String>,
    #[command(flatten)]
    pub exec: ExecArgs,
}

/// `host queue`.
#[derive(Subcommand)]
pub enum QueueCommand {
    /// Set a queue's limits, across every worker (limits not given are lifted).
    Set {
        /// The queue.
        name: String,
        /// Most workflows of the queue running at once.
        #[arg(long, value_name = "N")]
        concurrency: Option<u32>,
        /// Most workflows of one partition key (host submit --partition) running at once.
        #[arg(long, value_name = "N")]
        partition_concurrency: Option<u32>,
        /// Most first starts per period, e.g. 100/1m.
        #[arg(long, value_name = "N/PERIOD")]
        rate: Option<String>,
    },
    /// Set the limits of every queue a TOML file declares ([queues.NAME] tables).
    Apply {
        /// The queue file.
        file: PathBuf,
    },
    /// List queues: limits, ready, delayed and running workflows.
    List,
}

/// `host submit`.
pub async fn submit(args: SubmitArgs, journal: &str, format: Format) -> u8 {
    let spec = crate::execution::spec(
        &args.workflow,
        &args.steps,
        args.invoke.as_deref(),
        args.config.as_deref(),
        &args.policy,
    );
    let spec = match spec {
        Ok(spec) => spec,
        Err(message) => return refuse(&message),
    };
    if let Err(message) = stepbox::config::check_queue_name(&args.queue) {
        return refuse(&message);
    }
    let engine = match stepbox::wasm::new_engine() {
        Ok(engine) => engine,
        Err(error) => return refuse(&format!("cannot start the WebAssembly engine: {error:#}")),
    };
    let loader =
        stepbox::wasm::ComponentLoader::new(&engine, args.cache_dir.clone().or_else(stepbox::wasm::default_cache_dir));
    let journal = match Journal::open(journal).await {
        Ok(journal) => journal,
        Err(error) => return fail(&error),
    };
    let client = Client::new(journal, loader);
    let submittable = match client.prepare(&spec).await {
        Ok(submittable) => submittable,
        Err(error) => return fail(&error),
    };
    let request = SubmitRequest {
        arguments: args.args.clone(),
        id: args.id.clone(),
        queue: Some(args.queue.clone()),
        priority: args.priority,
        partition_key: args.partition.clone(),
        dedup_key: args.dedup.clone(),
        start_at: args.at,
        delay: args.delay,
        timeout: args.workflow_timeout,
    };
    match client.submit(&submittable, &request).await {
        Ok(receipt) => {
            if receipt.deduplicated {
                let unused = match &args.id {
                    Some(id) if *id != receipt.id => format!(" (the --id {id} was not used)"),
                    _ => String::new(),
                };
                tracing::warn!(
                    source = "host",
                    "Workflow {} of queue {} holds the dedup key already; nothing was submitted{unused}",
                    receipt.id,
                    args.queue
                );
            }
            match format {
                Format::Json => match stepbox::operate::show(client.journal(), &receipt.id).await {
                    Ok(shown) => output::json(&SubmitReceipt {
                        id: receipt.id,
                        deduplicated: receipt.deduplicated,
                        status: shown.workflow.status,
                        queue: shown.workflow.queue,
                        run_at: shown.workflow.run_at,
                    }),
                    Err(error) => return fail(&error),
                },
                Format::Text => output::line(&receipt.id),
            }
            0
        }
        Err(error) => fail(&error),
    }
}

/// `host worker`: runs until SIGTERM/SIGINT (a second one interrupts running attempts, a third exits).
pub async fn worker(args: WorkerArgs, journal: &str) -> u8 {
    for queue in &args.queues {
        if let Err(message) = stepbox::config::check_queue_name(queue) {
            return refuse(&message);
        }
    }
    let Some(loader) = crate::execution::loader(&args.exec) else { return exit::USAGE };
    let executor = match crate::execution::executor(journal, &args.exec).await {
        Ok(executor) => executor,
        Err(error) => return fail(&error),
    };
    let mut options = WorkerOptions::new(args.queues.clone(), executor.lease());
    options.concurrency = usize::from(args.concurrency);
    options.poll_interval = args.poll_interval.unwrap_or(DEFAULT_POLL_INTERVAL);
    options.poll_only = args.poll_only;
    options.grace = args.grace.unwrap_or(DEFAULT_GRACE);
    options.crash_loop_cap = args.crash_loop_cap;
    if let Some(park_after) = args.park_after {
        options.park_after = park_after;
    }
    let server = match args.serve {
        Some(bind) => match crate::serve::spawn(executor.journal().clone(), bind, args.token.clone()).await {
            Ok(server) => Some(server),
            Err(message) => return refuse(&message),
        },
        None => None,
    };
    let worker = Worker::new(executor, loader, options);
    let (Ok(mut interrupt), Ok(mut terminate)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        return refuse("cannot watch for signals");
    };
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    let (second_tx, second_rx) = tokio::sync::oneshot::channel::<()>();
    let signals = tokio::spawn(async move {
        let mut senders = vec![second_tx, first_tx];
        loop {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            match senders.pop() {
                Some(sender) => {
                    let _ = sender.send(());
                }
                None => std::process::exit(i32::from(exit::SIGTERM)),
            }
        }
    });
    let shutdown = async {
        let _ = first_rx.await;
    };
    let hard_stop = async {
        let _ = second_rx.await;
    };
    let result = worker.run(shutdown, hard_stop).await;
    signals.abort();
    if let Some(server) = server {
        server.abort();
    }
    match result {
        Ok(_) => 0,
        Err(error) => {
            output::error(&error.to_string());
            exit::RESUMABLE
        }
    }
}

/// `host queue`.
pub async fn queue(command: &QueueCommand, journal: &str, format: Format) -> u8 {
    let limits = match command {
        QueueCommand::Set { name, concurrency, partition_concurrency, rate } => {
            let spec = QueueSpec {
                concurrency: *concurrency,
                partition_concurrency: *partition_concurrency,
                rate: rate.clone(),
            };
            match spec.limits(name) {
                Ok(limits) => vec![limits],
                Err(message) => return refuse(&message),
            }
        }
        QueueCommand::Apply { file } => match read_queue_file(file) {
            Ok(limits) => limits,
            Err(error) => return fail(&error),
        },
        QueueCommand::List => return list_queues(journal, format).await,
    };
    let journal = match Journal::open(journal).await {
        Ok(journal) => journal,
        Err(error) => return fail(&error),
    };
    for queue in &limits {
        if let Err(error) = journal.set_queue(queue).await {
            return fail(&error);
        }
        tracing::info!(source = "host", "Queue {} set", queue.name);
    }
    list_queues_of(&journal, format).await
}

async fn list_queues(journal: &str, format: Format) -> u8 {
    match Journal::open_existing(journal).await {
        Ok(journal) => list_queues_of(&journal, format).await,
        Err(error) => fail(&error),
    }
}

async fn list_queues_of(journal: &Journal, format: Format) -> u8 {
    match stepbox::operate::queues(journal).await {
        Ok(list) => {
            match format {
                Format::Json => output::json(&list),
                Format::Text => output::print(&report::queue_list(&list.queues)),
            }
            0
        }
        Err(error) => fail(&error),
    }
}

/// `host workers`.
pub async fn workers(journal: &str, format: Format) -> u8 {
    let journal = match Journal::open_existing(journal).await {
        Ok(journal) => journal,
        Err(error) => return fail(&error),
    };
    match stepbox::operate::workers(&journal).await {
        Ok(list) => {
            match format {
                Format::Json => output::json(&list),
                Format::Text => output::print(&report::worker_list(&list.workers, Timestamp::now())),
            }
            0
        }
        Err(error) => fail(&error),
    }
}
