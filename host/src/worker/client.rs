//! Handing work to the queue: a workflow's components are loaded, linked
//! and checked here (a bad submission is refused before anything is
//! written), stored in the journal once per SHA-256 digest (so a worker on
//! any machine needs no files), and each submission is one row.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use wasmtime::component::types::ComponentFunc;

use crate::config::CronSchedule;
use crate::journal::{
    CatchUp, DEFAULT_QUEUE, Journal, JournalError, NewSchedule, NewSubmission, ScheduleRecord, ScheduleTemplate,
    Submitted, Timestamp, digest,
};
use crate::operate::{EventValue, OperateError, SendReceipt, Sender};
use crate::run::{ArgumentError, ComponentRef, Deployment, PrepareError, Prepared, RunSpec, StoredSpec, new_workflow};
use crate::wasm::{ComponentLoader, LoadError};

/// A workflow ready to be submitted any number of times: its deployment
/// (components pinned by digest and stored, settings resolved) and entry.
pub struct Submittable {
    deployment: Deployment,
    entry_func: ComponentFunc,
}

impl Submittable {
    /// What each submission runs with.
    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }
}

/// Where and how one submission runs.
#[derive(Debug, Clone, Default)]
pub struct SubmitRequest {
    /// One WAVE value per parameter of the entry function.
    pub arguments: Vec<String>,
    /// The workflow id (a new UUIDv7 if `None`).
    pub id: Option<String>,
    /// The queue ([`DEFAULT_QUEUE`] if `None`).
    pub queue: Option<String>,
    /// Lower runs first (default 0).
    pub priority: i32,
    /// Workflows with one key count against the queue's per-partition concurrency.
    pub partition_key: Option<String>,
    /// At most one live workflow per (queue, key): a second submit returns the first's id.
    pub dedup_key: Option<String>,
    /// When it may start (now if `None`, and no `delay`).
    pub start_at: Option<Timestamp>,
    /// How long after its submission it may start: counted from the instant
    /// recorded as its creation (`created_at`), so the two agree to the millisecond.
    pub delay: Option<Duration>,
    /// How long it may take from submission before it ends `timed-out`.
    pub timeout: Option<Duration>,
}

/// A schedule: a workflow started on every tick of a cron expression.
#[derive(Debug, Clone)]
pub struct ScheduleRequest {
    /// The schedule's name (its ticks' workflows are `NAME@TICK`).
    pub name: String,
    /// 5 fields, or 6 with seconds first.
    pub cron: String,
    /// The IANA time zone the expression is read in (`UTC`).
    pub timezone: String,
    /// Ticks missed while no worker ran: skip them, fire the latest, or fire all.
    pub catch_up: CatchUp,
    /// One WAVE value per parameter of the entry function, for every tick.
    pub arguments: Vec<String>,
    /// The queue ([`DEFAULT_QUEUE`] if `None`).
    pub queue: Option<String>,
    pub priority: i32,
    /// Each tick's workflow times out this long after its tick.
    pub timeout: Option<Duration>,
}

/// What a submit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The workflow's id: the new one, or the live one holding the dedup key.
    pub id: String,
    /// True when the dedup key returned an existing workflow.
    pub deduplicated: bool,
}

/// A component checked and stored by [`Client::upload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// Hex SHA-256 of its bytes: how submissions name it.
    pub digest: String,
    pub size: usize,
    /// False when it was stored already.
    pub stored: bool,
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error(transparent)]
    Arguments(#[from] ArgumentError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot read {path} to store it in the journal: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} changed while it was being submitted; submit again")]
    Changed { path: String },
    #[error("a workflow {0} exists already with other inputs; pick another --id")]
    IdTaken(String),
    /// A queue name or a workflow id that breaks its rule.
    #[error("{0}")]
    QueueName(String),
    #[error("{0}")]
    Schedule(String),
}

impl SubmitError {
    /// What the error means for whoever must act on it.
    pub fn disposition(&self) -> crate::Disposition {
        match self {
            Self::Prepare(error) => error.disposition(),
            Self::Journal(error) => error.disposition(),
            Self::IdTaken(_) => crate::Disposition::Conflict,
            Self::Arguments(_) | Self::Read { .. } | Self::Changed { .. } | Self::QueueName(_) | Self::Schedule(_) => {
                crate::Disposition::Refused
            }
        }
    }
}

/// Submits workflows to the queues of one journal.
pub struct Client {
    journal: Journal,
    loader: ComponentLoader,
    /// Digests known to be stored in the journal.
    stored: Mutex<HashSet<String>>,
}

impl Client {
    /// A client of `journal`, loading components through `loader`.
    pub fn new(journal: Journal, loader: ComponentLoader) -> Self {
        Self { journal, loader, stored: Mutex::default() }
    }

    /// The journal it submits to.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Loads, links and checks `spec`, and stores its components in the journal.
    pub async fn prepare(&self, spec: &RunSpec) -> Result<Submittable, SubmitError> {
        let prepared = Prepared::from_spec(spec, &self.loader)?;
        let deployment = prepared.deployment.clone();
        for component in std::iter::once(&deployment.workflow).chain(&deployment.steps) {
            self.store(component).await?;
        }
        Ok(Submittable { deployment, entry_func: prepared.plan.entry.func })
    }

    /// As [`Client::prepare`], for components stored in the journal already (the HTTP API).
    pub async fn prepare_stored(&self, spec: &StoredSpec) -> Result<Submittable, SubmitError> {
        let prepared = Prepared::from_stored(spec, &self.loader, &self.journal).await?;
        Ok(Submittable { deployment: prepared.deployment, entry_func: prepared.plan.entry.func })
    }

    /// Checks that `bytes` are a component this host can run, and stores
    /// them in the journal under their digest (once) as `name`.
    pub async fn upload(&self, name: &str, bytes: Vec<u8>) -> Result<Uploaded, SubmitError> {
        let digest = digest(&bytes);
        let size = bytes.len();
        if self.journal.has_component(&digest).await? {
            return Ok(Uploaded { digest, size, stored: false });
        }
        let loader = self.loader.clone();
        let path = std::path::PathBuf::from(name);
        // Compiling a large component takes seconds (and fills the compile cache): off the async threads.
        let bytes = tokio::task::spawn_blocking(move || loader.load_bytes(&path, &bytes).map(|_| bytes))
            .await
            .map_err(|error| LoadError::Invalid { path: name.into(), message: error.to_string() })
            .and_then(|loaded| loaded)
            .map_err(PrepareError::from)?;
        self.journal.store_component(&digest, name, &bytes).await?;
        self.remember(&digest);
        Ok(Uploaded { digest, size, stored: true })
    }

    /// Submits one workflow of `what`; returns at once with its id.
    pub async fn submit(&self, what: &Submittable, request: &SubmitRequest) -> Result<Receipt, SubmitError> {
        let deployment = &what.deployment;
        let values = crate::run::parse_arguments(&deployment.entry, &what.entry_func, &request.arguments)?;
        let queue = request.queue.clone().unwrap_or_else(|| DEFAULT_QUEUE.to_string());
        crate::config::check_queue_name(&queue).map_err(SubmitError::QueueName)?;
        let id = request.id.clone().unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        crate::config::check_workflow_id(&id).map_err(SubmitError::QueueName)?;
        let workflow = new_workflow(id.clone(), deployment, &values, &request.arguments);
        let now = workflow.created_at;
        let submission = NewSubmission {
            workflow,
            queue,
            priority: request.priority,
            partition_key: request.partition_key.clone(),
            dedup_key: request.dedup_key.clone(),
            run_at: request.start_at.or_else(|| request.delay.map(|delay| now.plus(delay))).unwrap_or(now),
            deadline_at: request.timeout.map(|timeout| now.plus(timeout)),
        };
        match self.journal.submit_workflow(&submission).await? {
            Submitted::New => Ok(Receipt { id, deduplicated: false }),
            Submitted::Deduplicated(existing) => Ok(Receipt { id: existing, deduplicated: true }),
            Submitted::IdTaken => Err(SubmitError::IdTaken(id)),
        }
    }

    /// Sets schedule `request.name` (created, or replaced) to start `what`
    /// on every tick of its cron expression, from the next one after now.
    pub async fn schedule(&self, what: &Submittable, request: &ScheduleRequest) -> Result<ScheduleRecord, SubmitError> {
        let deployment = &what.deployment;
        check_schedule_name(&request.name).map_err(SubmitError::Schedule)?;
        let cron = CronSchedule::parse(&request.cron, &request.timezone).map_err(SubmitError::Schedule)?;
        let values = crate::run::parse_arguments(&deployment.entry, &what.entry_func, &request.arguments)?;
        let queue = request.queue.clone().unwrap_or_else(|| DEFAULT_QUEUE.to_string());
        crate::config::check_queue_name(&queue).map_err(SubmitError::QueueName)?;
        let workflow = new_workflow(String::new(), deployment, &values, &request.arguments);
        let next_tick_at = cron
            .next_after(Timestamp::now())
            .ok_or_else(|| SubmitError::Schedule(format!("the cron expression {:?} never matches", request.cron)))?;
        let schedule = NewSchedule {
            name: request.name.clone(),
            cron: request.cron.clone(),
            timezone: request.timezone.clone(),
            catch_up: request.catch_up,
            queue,
            priority: request.priority,
            timeout_ms: request.timeout.map(|timeout| i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX)),
            template: ScheduleTemplate {
                name: workflow.name,
                component: workflow.component,
                component_digest: workflow.component_digest,
                entry: workflow.entry,
                input: workflow.input,
                input_json: workflow.input_json,
                options: workflow.options,
            },
            next_tick_at,
        };
        self.journal.set_schedule(&schedule).await?;
        let set = self.journal.schedule(&request.name).await?;
        set.ok_or_else(|| SubmitError::Schedule(format!("schedule {} was set but cannot be read back", request.name)))
    }

    /// Sends `value` (JSON text) to workflow `id` on `topic` (what `host send` does).
    pub async fn send(&self, id: &str, topic: &str, value: &str, sender: &Sender) -> Result<SendReceipt, OperateError> {
        crate::operate::send(&self.journal, id, topic, value, sender).await
    }

    /// The value workflow `id` published under `key`, waiting up to `wait`
    /// (what `host event` does); `None` if not yet.
    pub async fn event(&self, id: &str, key: &str, wait: Duration) -> Result<Option<EventValue>, OperateError> {
        crate::operate::event(&self.journal, id, key, wait).await
    }

    /// Stores a component's bytes in the journal unless they are there already.
    async fn store(&self, component: &ComponentRef) -> Result<(), SubmitError> {
        let known =
            |digest: &str| self.stored.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(digest);
        if known(&component.digest) || self.journal.has_component(&component.digest).await? {
            self.remember(&component.digest);
            return Ok(());
        }
        let path = component.path.display().to_string();
        let bytes =
            std::fs::read(&component.path).map_err(|source| SubmitError::Read { path: path.clone(), source })?;
        if digest(&bytes) != component.digest {
            return Err(SubmitError::Changed { path });
        }
        let name = component.path.file_name().map_or_else(|| path.clone(), |name| name.to_string_lossy().into_owned());
        self.journal.store_component(&component.digest, &name, &bytes).await?;
        self.remember(&component.digest);
        Ok(())
    }

    fn remember(&self, digest: &str) {
        self.stored.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(digest.to_string());
    }
}

/// A schedule's name: what its ticks' workflow ids start with.
pub fn check_schedule_name(name: &str) -> Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if (1..=100).contains(&name.len()) && name.chars().all(plain) {
        Ok(())
    } else {
        Err(format!("invalid schedule name {name:?}: use 1 to 100 letters, digits, '-', '_' or '.'"))
    }
}
