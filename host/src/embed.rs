//! stepbox inside another Rust program: one value that opens the journal,
//! starts the WebAssembly engine with its compile cache and the executor
//! that holds leases, and hands out what runs and submits workflows — the
//! same parts `host run`, `host submit` and `host worker` are made of.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::journal::{Journal, JournalError, JournalOptions};
use crate::run::{DEFAULT_LEASE, Executor, RunError, RunSpec, Runner};
use crate::wasm::{ComponentLoader, default_cache_dir, new_engine};
use crate::worker::{Client, Worker, WorkerOptions};

/// What [`Stepbox::open`] can fail on.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
}

impl OpenError {
    /// What the error means for whoever must act on it.
    pub fn disposition(&self) -> crate::Disposition {
        match self {
            Self::Journal(error) => error.disposition(),
            Self::Engine(_) => crate::Disposition::Bug,
        }
    }
}

/// How [`Stepbox::open_with`] opens: the defaults of the `host` command.
#[derive(Debug, Clone)]
pub struct Options {
    /// The journal's options (group commit, outage budget).
    pub journal: JournalOptions,
    /// How long this process owns a workflow without renewing it.
    pub lease: Duration,
    /// Where compiled components are cached (`None`: compile every time).
    pub cache_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self { journal: JournalOptions::default(), lease: DEFAULT_LEASE, cache_dir: default_cache_dir() }
    }
}

/// stepbox in this process: a journal, an engine and an executor, shared by
/// everything it hands out. Cheap to clone.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use stepbox::Stepbox;
/// use stepbox::run::{RunRequest, RunSpec};
///
/// let stepbox = Stepbox::open("stepbox.db").await?;
/// let spec = RunSpec { workflow: "provision.wasm".into(), ..RunSpec::default() };
/// let runner = stepbox.runner(&spec)?;
/// // Any number of runs, concurrently: they share the compiled components and the group commit.
/// let outcome = runner.run(RunRequest { id: Some("order-7".into()), arguments: vec![] }).await?;
/// println!("{}", outcome.output);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Stepbox {
    journal: Journal,
    loader: ComponentLoader,
    executor: Arc<Executor>,
}

impl Stepbox {
    /// Opens (creating if needed) the journal at `journal` — a SQLite file
    /// path, a `sqlite:` URL or a `postgres://` URL — with the defaults.
    /// Needs a tokio runtime (its heartbeat and journal writer are tasks).
    pub async fn open(journal: &str) -> Result<Self, OpenError> {
        Self::open_with(journal, Options::default()).await
    }

    /// As [`Stepbox::open`], with `options`.
    pub async fn open_with(journal: &str, options: Options) -> Result<Self, OpenError> {
        let journal = Journal::open_with(journal, options.journal).await?;
        let engine = new_engine().map_err(|error| OpenError::Engine(format!("{error:#}")))?;
        let loader = ComponentLoader::new(&engine, options.cache_dir);
        let executor = Executor::start(journal.clone(), options.lease);
        Ok(Self { journal, loader, executor })
    }

    /// Loads, checks and links `spec`'s components: a [`Runner`] that runs
    /// its workflows in this process (what `host run` does).
    pub fn runner(&self, spec: &RunSpec) -> Result<Runner, RunError> {
        Runner::open(spec, &self.loader, self.executor.clone())
    }

    /// A [`Client`] that hands workflows to queues for workers (what `host submit` does).
    pub fn client(&self) -> Client {
        Client::new(self.journal.clone(), self.loader.clone())
    }

    /// A [`Worker`] of this process that claims and runs queued workflows (what `host worker` does).
    pub fn worker(&self, options: WorkerOptions) -> Worker {
        Worker::new(self.executor.clone(), self.loader.clone(), options)
    }

    /// The journal: reads, cancels, forks, queues.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The executor holding this process's leases.
    pub fn executor(&self) -> &Arc<Executor> {
        &self.executor
    }

    /// The compile cache and engine.
    pub fn loader(&self) -> &ComponentLoader {
        &self.loader
    }
}
