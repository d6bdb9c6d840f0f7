//! Runs workflows: a `Runner` holds one deployment (components linked, steps
//! bridged to the invoker) and runs any number of its workflows at once;
//! each run creates or takes over the workflow's row, holds its lease through
//! the process's `Executor`, calls the entry function, and records how it ended.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use tracing::Instrument as _;
use wasmtime::component::types::ComponentFunc;
use wasmtime::component::{ComponentExportIndex, InstancePre, Val};

use super::children::ChildPlan;
use super::clock::SystemClock;
use super::concurrent::{Calls, Steps};
use super::context::{Running, WorkflowContext, WorkflowInfo};
use super::deployment::{Deployment, PrepareError, Prepared, RecordedOptions, ReplaySeed, RunSpec};
use super::executor::Executor;
use super::invoker::{InvokeError, Invoker};
use super::linker::{self, LinkerError};
use super::linking::WORKFLOW;
use super::values::{self, ArgumentError};
use crate::Disposition;
use crate::journal::{
    Claim, Claimed, Finish, Journal, JournalError, Lease, NewWorkflow, Timestamp, Waited, Waiting, WorkflowRecord,
    WorkflowStatus,
};
use crate::wasm::{self, ComponentLoader, GuestState, Interrupt, Sandbox, StopReason, WorkflowClock};

/// Workflows one [`Runner`] runs at once; more wait for a slot. Each holds a
/// workflow instance and at most one step instance, so half the engine's
/// instance pool keeps steps from ever waiting on workflows for a slot.
pub const MAX_RUNNING_WORKFLOWS: usize = wasm::POOL_COMPONENT_INSTANCES as usize / 2;

/// One run of a workflow: its id (a new UUIDv7 if `None`) and its arguments,
/// one WAVE value per parameter of the entry function.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    pub id: Option<String>,
    pub arguments: Vec<String>,
}

/// A workflow that ran to the end (its own result may still be an `err`).
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    pub workflow_id: String,
    /// The entry function's result as WAVE.
    pub output: String,
    /// The result as JSON.
    pub output_json: Json,
    /// True when the output was read from the journal: nothing ran.
    pub recorded: bool,
    /// How long this run took, from its start (components were compiled before).
    pub elapsed: Duration,
}

/// Why a run did not produce an output.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error(transparent)]
    Linker(#[from] LinkerError),
    #[error(transparent)]
    Arguments(#[from] ArgumentError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
    #[error("{0}")]
    InvalidId(String),
    #[error("no workflow {id} in the journal {journal}")]
    UnknownWorkflow { id: String, journal: String },
    #[error(
        "workflow {id} was started with {field} {recorded}, not {given}; an id belongs to one workflow, which \
         resumes only with what it started with (use `host resume {id}`, or another --id for a new workflow)"
    )]
    Conflict { id: String, field: &'static str, recorded: String, given: String },
    #[error(
        "workflow {id} is being run by {executor} (its lease is live); two processes never run one workflow. \
         If that process is gone, resume after its lease expires"
    )]
    Owned { id: String, executor: String },
    #[error("workflow {id} is {status}{queue}: a worker runs it (`host worker`); `host cancel {id}` removes it")]
    Queued { id: String, status: WorkflowStatus, queue: String },
    #[error("the journal of workflow {id} has options this host cannot read: {message}")]
    UnreadableOptions { id: String, message: String },
    #[error("workflow {id} stopped and can be resumed with `host resume {id}`: {source}")]
    Interrupted { id: String, source: Box<InvokeError> },
    #[error("workflow {id} stopped{why}; resume it with `host resume {id}`")]
    Stopped { id: String, why: &'static str },
    #[error("workflow {id} stopped here: another executor took its lease over; nothing more was written. {now}")]
    LeaseLost { id: String, now: String },
    #[error(
        "workflow {id} stopped here: this process could not renew its lease within {} (the journal did not \
         answer), so it stopped the workflow before the lease could lapse and wrote nothing more for it. {now}",
        humantime::format_duration(*validity)
    )]
    LeaseExpired { id: String, validity: Duration, now: String },
    #[error("workflow {id} failed: {message}")]
    WorkflowFailed { id: String, message: String },
    #[error("workflow {id} {status}: {message}")]
    Ended { id: String, status: WorkflowStatus, message: String },
    #[error("workflow {id} waits until {until} for its next attempt; a worker continues it then")]
    Parked { id: String, until: Timestamp },
    #[error("workflow {id} waits {waiting}; its slot is free meanwhile and a worker continues it then")]
    Waiting { id: String, waiting: String },
    #[error("workflow {id} was woken as it parked (a message came); it runs on")]
    Woken { id: String },
}

impl RunError {
    /// What the error means for whoever must act on it.
    pub fn disposition(&self) -> Disposition {
        match self {
            Self::Prepare(error) => error.disposition(),
            Self::Journal(error) => error.disposition(),
            Self::Interrupted { source, .. } => match source.disposition() {
                // The run stopped; the journal, though unreachable now, holds it for a resume.
                Disposition::Outage | Disposition::Stopped => Disposition::Stopped,
                other => other,
            },
            Self::Linker(_) | Self::Arguments(_) | Self::UnreadableOptions { .. } | Self::InvalidId(_) => {
                Disposition::Refused
            }
            Self::Engine(_) => Disposition::Bug,
            Self::UnknownWorkflow { .. } => Disposition::NotFound,
            Self::Conflict { .. } | Self::Owned { .. } | Self::Queued { .. } => Disposition::Conflict,
            Self::Stopped { .. }
            | Self::LeaseLost { .. }
            | Self::LeaseExpired { .. }
            | Self::Parked { .. }
            | Self::Waiting { .. }
            | Self::Woken { .. } => Disposition::Stopped,
            Self::WorkflowFailed { .. } | Self::Ended { .. } => Disposition::WorkflowFailed,
        }
    }
}

/// A workflow ready to instantiate: its `InstancePre` with step imports bridged, and its entry.
struct Linked {
    sandbox: Sandbox,
    /// The step functions `start-call` reaches, and the invoker.
    steps: Arc<Steps>,
    workflow_pre: InstancePre<GuestState<WorkflowContext>>,
    entry: ComponentExportIndex,
}

/// One deployment (a workflow component with its steps and settings) linked
/// against a journal: runs any number of its workflows, concurrently, in one
/// process, sharing the compiled components, the sandbox pool and the
/// journal's group commit.
pub struct Runner {
    journal: Journal,
    executor: Arc<Executor>,
    linked: Linked,
    deployment: Deployment,
    component: String,
    entry_func: ComponentFunc,
    /// What its workflows' children are made from.
    children: Arc<ChildPlan>,
    /// Slots of [`MAX_RUNNING_WORKFLOWS`].
    running: tokio::sync::Semaphore,
}

impl Runner {
    /// Links `prepared` for running through `executor` (whose journal it writes).
    pub fn new(prepared: Prepared, executor: Arc<Executor>) -> Result<Self, RunError> {
        let Prepared { engine, loader, components, plan, deployment, .. } = prepared;
        let workflow = &components[WORKFLOW];
        let journal = executor.journal().clone();
        let sandbox = Sandbox::new(&engine);
        let targets = linker::step_targets(&engine, &components, &plan, &deployment.settings)?;
        let invoker = Arc::new(Invoker::new(journal.clone(), sandbox.clone(), SystemClock));
        let workflow_pre = linker::workflow_pre(&engine, workflow, &targets, invoker.clone())?;
        let steps = Arc::new(Steps { invoker, targets });
        let entry = linker::export_index(&workflow.component, plan.entry.interface.as_deref(), &plan.entry.function)
            .ok_or_else(|| LinkerError {
                component: workflow.path.display().to_string(),
                message: "the entry function is not exported".into(),
            })?;
        let component = workflow.path.display().to_string();
        let children = Arc::new(ChildPlan::new(deployment.clone(), plan.exports, component.clone(), loader));
        Ok(Self {
            journal,
            executor,
            linked: Linked { sandbox, steps, workflow_pre, entry },
            component,
            entry_func: plan.entry.func,
            children,
            deployment,
            running: tokio::sync::Semaphore::new(MAX_RUNNING_WORKFLOWS),
        })
    }

    /// Loads, checks and links `spec`'s components for `executor`.
    pub fn open(spec: &RunSpec, loader: &ComponentLoader, executor: Arc<Executor>) -> Result<Self, RunError> {
        Self::new(Prepared::from_spec(spec, loader)?, executor)
    }

    /// The journal this runner writes to.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// What it runs.
    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    /// Runs `request`: starts the workflow, continues it if the journal has it
    /// as interrupted, or returns its recorded output if it finished.
    pub async fn run(&self, request: RunRequest) -> Result<RunOutcome, RunError> {
        let entry = &self.deployment.entry;
        let values = values::parse_arguments(entry, &self.entry_func, &request.arguments)?;
        // Taken before the journal knows the workflow, so a waiting one holds no lease.
        let _slot = self.running.acquire().await.map_err(|_| RunError::Engine("the runner was closed".into()))?;
        let started = Instant::now();
        let id = request.id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        crate::config::check_workflow_id(&id).map_err(RunError::InvalidId)?;
        let workflow = new_workflow(id, &self.deployment, &values, &request.arguments);
        let journal = &self.journal;
        let (lease, seed, fresh) =
            match journal.create_workflow(&workflow, self.executor.id(), self.executor.lease()).await? {
                Some(lease) => {
                    tracing::info!(
                        source = "host",
                        "Workflow {} started: {} {}{} (journal {})",
                        workflow.id,
                        self.component,
                        workflow.entry,
                        workflow.input,
                        journal.location()
                    );
                    (lease, ReplaySeed { id: workflow.id.clone(), started_at: workflow.created_at }, true)
                }
                None => {
                    let existing = journal.workflow(&workflow.id).await?.ok_or_else(|| RunError::UnknownWorkflow {
                        id: workflow.id.clone(),
                        journal: journal.location().into(),
                    })?;
                    check_same(&existing, &workflow, &self.deployment)?;
                    if existing.status != WorkflowStatus::Running {
                        return recorded(existing);
                    }
                    let lease = self.take_over(&existing).await?;
                    (lease, resumed(&existing), false)
                }
            };
        let info = WorkflowInfo {
            id: workflow.id.clone(),
            name: workflow.name.clone(),
            queue: None,
            started_at: seed.started_at,
            scheduled: None,
        };
        let turn = Turn { seed, arguments: values, deadline: None, park_after: None, info };
        let outcome = self.execute(lease, &turn, fresh).await;
        outcome.map(|(output, output_json)| RunOutcome {
            workflow_id: workflow.id,
            output,
            output_json,
            recorded: false,
            elapsed: started.elapsed(),
        })
    }

    /// Continues `existing`, an interrupted workflow this process has just
    /// claimed under `lease` (one claim: nobody can take it in between), with
    /// its recorded `arguments`, replaying what it journaled.
    pub(super) async fn resume_claimed(
        &self,
        existing: &WorkflowRecord,
        lease: Lease,
        arguments: &[String],
    ) -> Result<RunOutcome, RunError> {
        let values = values::parse_arguments(&self.deployment.entry, &self.entry_func, arguments)?;
        let _slot = self.running.acquire().await.map_err(|_| RunError::Engine("the runner was closed".into()))?;
        let started = Instant::now();
        let seed = resumed(existing);
        let turn = Turn { info: info_of(existing, &seed), seed, arguments: values, deadline: None, park_after: None };
        let (output, output_json) = self.execute(lease, &turn, false).await?;
        Ok(RunOutcome {
            workflow_id: existing.id.clone(),
            output,
            output_json,
            recorded: false,
            elapsed: started.elapsed(),
        })
    }

    /// Runs a workflow a worker claimed from its queue, under the claim's
    /// lease: replays what it journaled, ends it `timed-out` at its deadline,
    /// and parks it (see [`InvokeError::Parked`]) when its next attempt is
    /// due more than `park_after` from now.
    pub async fn run_claimed(&self, claimed: &Claimed, park_after: Duration) -> Result<RunOutcome, RunError> {
        let workflow = &claimed.workflow;
        let id = workflow.id.clone();
        let options: RecordedOptions = serde_json::from_value(workflow.options.clone())
            .map_err(|error| RunError::UnreadableOptions { id: id.clone(), message: error.to_string() })?;
        let values = values::parse_arguments(&self.deployment.entry, &self.entry_func, &options.arguments)?;
        let _slot = self.running.acquire().await.map_err(|_| RunError::Engine("the runner was closed".into()))?;
        let started = Instant::now();
        let seed = options.replay_seed.unwrap_or(ReplaySeed { id: id.clone(), started_at: workflow.created_at });
        let lease = claimed.lease.clone();
        let turn = Turn {
            info: info_of(workflow, &seed),
            seed,
            arguments: values,
            deadline: workflow.deadline_at,
            park_after: Some(park_after),
        };
        let (output, output_json) = self.execute(lease, &turn, claimed.first_lease()).await?;
        Ok(RunOutcome { workflow_id: id, output, output_json, recorded: false, elapsed: started.elapsed() })
    }

    /// Claims a running workflow this process found in the journal.
    pub(super) async fn take_over(&self, existing: &WorkflowRecord) -> Result<Lease, RunError> {
        let id = &existing.id;
        match self.journal.claim_workflow(id, self.executor.id(), self.executor.lease()).await? {
            Claim::Claimed(lease) => Ok(lease),
            Claim::Owned { executor } => Err(RunError::Owned { id: id.clone(), executor }),
            Claim::NotRunning(status) => Err(RunError::Queued {
                id: id.clone(),
                status,
                queue: existing.queue.as_ref().map(|queue| format!(" on queue {queue}")).unwrap_or_default(),
            }),
            Claim::Unknown => {
                Err(RunError::UnknownWorkflow { id: id.clone(), journal: self.journal.location().into() })
            }
        }
    }

    /// Calls the workflow `lease` holds and records how it ended. A workflow
    /// stopped because its lease could not be renewed in time (an outage, a
    /// partition, this process frozen) is taken back once the journal answers,
    /// if nobody else took it meanwhile, and continues here from its journal.
    async fn execute(&self, lease: Lease, turn: &Turn, fresh: bool) -> Result<(String, Json), RunError> {
        let (mut lease, mut fresh) = (lease, fresh);
        loop {
            match self.execute_once(lease.clone(), turn, fresh).await {
                // A message it would have waited for came as it parked: it runs on, from its journal.
                Err(RunError::Woken { .. }) => fresh = false,
                Err(RunError::LeaseExpired { id, validity, .. }) => {
                    tracing::error!(
                        source = "host",
                        "Workflow {id}: its lease could not be renewed within {} (the journal did not answer); \
                         stopped here before the lease can lapse, nothing more is written for it",
                        humantime::format_duration(validity)
                    );
                    match self.take_back(&lease).await {
                        Ok(taken_back) => (lease, fresh) = (taken_back, false),
                        Err(now) => return Err(RunError::LeaseExpired { id, validity, now }),
                    }
                }
                result => return result,
            }
        }
    }

    /// One turn of [`Runner::execute`], under one lease.
    async fn execute_once(&self, lease: Lease, turn: &Turn, fresh: bool) -> Result<(String, Json), RunError> {
        let id = lease.workflow_id.clone();
        let holding = self.executor.hold(lease.clone(), turn.deadline).await;
        let interrupt = holding.interrupt().clone();
        // What it journaled, read once: replaying needs no further reads.
        let history = match fresh {
            true => Vec::new(),
            false => match self.journal.step_calls(&id).await {
                Ok(history) => history,
                Err(error) => return Err(RunError::Interrupted { id, source: Box::new(InvokeError::Journal(error)) }),
            },
        };
        let clock = WorkflowClock::starting_at(turn.seed.started_at.millis());
        let running = Running {
            lease: lease.clone(),
            interrupt: interrupt.clone(),
            park_after: turn.park_after,
            journal: self.journal.clone(),
            info: turn.info.clone(),
            clock: clock.clone(),
            mail: holding.mail().clone(),
            calls: Calls::new(self.linked.steps.clone(), self.deployment.max_concurrent_calls),
            children: self.children.clone(),
        };
        let context = WorkflowContext::new(running, history);
        let component = self.deployment.workflow.path.file_stem().map(|stem| stem.to_string_lossy().into_owned());
        let span = crate::telemetry::workflow_span(&id, component.as_deref().unwrap_or("?"), &self.deployment.entry);
        let result = self
            .call(&id, &turn.seed, clock, &turn.arguments, interrupt.clone(), context)
            .instrument(span.clone())
            .await;
        if let Err(Failure::Trapped(message)) = &result {
            span.record("otel.status_description", message.as_str());
        }
        let (finish, outcome) = match result {
            Ok(results) => {
                let output = match results.as_slice() {
                    [single] => values::to_wave(single),
                    many => values::to_wave_tuple(many),
                };
                let output_json = match results.as_slice() {
                    [single] => values::to_json(single),
                    many => values::to_json_tuple(many),
                };
                let finish = Finish {
                    status: WorkflowStatus::Succeeded,
                    output: Some(output.clone()),
                    output_json: Some(output_json.clone()),
                    error: None,
                };
                (finish, Ok((output, output_json)))
            }
            Err(Failure::Stopped(reason)) => return self.stopped(&lease, reason).await,
            Err(Failure::Parked(until)) => {
                drop(holding);
                return match self.journal.park_workflow(&lease, until).await? {
                    true => Err(RunError::Parked { id, until }),
                    false => Err(self.lease_lost(&lease).await),
                };
            }
            Err(Failure::Waiting(waiting)) => {
                drop(holding);
                return match self.journal.wait_workflow(&lease, &waiting).await {
                    Ok(Waited::Parked) => Err(RunError::Waiting { id, waiting: describe_wait(&waiting) }),
                    Ok(Waited::MessageWaiting) => Err(RunError::Woken { id }),
                    Err(JournalError::NotOwner { .. }) => Err(self.lease_lost(&lease).await),
                    Err(error) => Err(error.into()),
                };
            }
            // A write refused by the fence: the lease is gone, whatever the interrupt says yet.
            Err(Failure::Invoke(InvokeError::Journal(JournalError::NotOwner { .. }))) => {
                let reason = interrupt.reason().filter(|reason| reason.lease_gone()).unwrap_or(StopReason::LeaseLost);
                return self.stopped(&lease, reason).await;
            }
            Err(Failure::Invoke(_)) if interrupt.reason().is_some_and(StopReason::lease_gone) => {
                return self.stopped(&lease, interrupt.reason().unwrap_or(StopReason::LeaseExpired)).await;
            }
            Err(Failure::Invoke(source)) => {
                // The journal failed or replay diverged: the workflow is not failed,
                // it stays running, its lease released so it can be resumed at once.
                self.journal.release(&lease).await.ok();
                return Err(RunError::Interrupted { id, source: Box::new(source) });
            }
            Err(Failure::Trapped(message)) => {
                let finish = Finish {
                    status: WorkflowStatus::Failed,
                    output: None,
                    output_json: None,
                    error: Some(message.clone()),
                };
                (finish, Err(RunError::WorkflowFailed { id: id.clone(), message }))
            }
        };
        drop(holding);
        match self.journal.finish_workflow(&lease, &finish).await {
            Ok(true) => outcome,
            Ok(false) if interrupt.lease_lapsed() => self.stopped(&lease, StopReason::LeaseExpired).await,
            Ok(false) => Err(self.lease_lost(&lease).await),
            Err(error) => Err(RunError::Interrupted { id, source: Box::new(InvokeError::Journal(error)) }),
        }
    }

    /// Instantiates the workflow, its `context` in its store, and calls its entry function.
    async fn call(
        &self,
        id: &str,
        seed: &ReplaySeed,
        clock: WorkflowClock,
        arguments: &[Val],
        interrupt: Interrupt,
        context: WorkflowContext,
    ) -> Result<Vec<Val>, Failure> {
        let Linked { sandbox, workflow_pre, entry, .. } = &self.linked;
        let mut store = sandbox.workflow_store(id, &seed.id, clock, interrupt.clone(), context);
        let call = async {
            let instance = wasm::instantiate_when_free(workflow_pre, &mut store).await?;
            let func = instance
                .get_func(&mut store, *entry)
                .ok_or_else(|| wasmtime::format_err!("the entry function is not exported"))?;
            let mut results = vec![Val::Bool(false); func.ty(&store).results().len()];
            func.call_async(&mut store, arguments, &mut results).await?;
            wasmtime::Result::<Vec<Val>>::Ok(results)
        };
        let result = call.await;
        // However it ended, it ends when the calls it started do: their ends are journaled exactly.
        let result = match (result, store.data_mut().context.calls.drain().await) {
            (Ok(_), Some(unawaited)) => Err(wasmtime::Error::new(unawaited)),
            (result, _) => result,
        };
        match result {
            Ok(results) => Ok(results),
            Err(error) => match error.downcast::<InvokeError>() {
                Ok(InvokeError::Stopped(reason)) => Err(Failure::Stopped(reason)),
                Ok(InvokeError::Parked(until)) => Err(Failure::Parked(until)),
                Ok(InvokeError::Waiting(waiting)) => Err(Failure::Waiting(waiting)),
                Ok(source) => Err(Failure::Invoke(source)),
                // Stopped while running its own code: the epoch callback trapped it.
                Err(_) if interrupt.reason().is_some() => {
                    Err(Failure::Stopped(interrupt.reason().unwrap_or(StopReason::Shutdown)))
                }
                Err(error) => Err(Failure::Trapped(wasm::describe_error(&error, store.data()))),
            },
        }
    }

    /// Ends (cancel, deadline) or leaves resumable (shutdown, lost journal) a workflow that had to stop.
    async fn stopped(&self, lease: &Lease, reason: StopReason) -> Result<(String, Json), RunError> {
        let id = lease.workflow_id.clone();
        let (status, message) = match reason {
            StopReason::Cancelled => (WorkflowStatus::Cancelled, "cancelled on request"),
            StopReason::Deadline => (WorkflowStatus::TimedOut, "its deadline passed"),
            StopReason::LeaseLost => return Err(self.lease_lost(lease).await),
            // Where it stands is said (or it is taken back) by `execute`, once the journal answers.
            StopReason::LeaseExpired => {
                return Err(RunError::LeaseExpired { id, validity: self.executor.validity(), now: String::new() });
            }
            StopReason::Shutdown => {
                let why = match self.journal.release(lease).await.unwrap_or(false) {
                    true => " on a signal (its lease is released)",
                    false => " on a signal",
                };
                return Err(RunError::Stopped { id, why });
            }
        };
        let finish = Finish { status, output: None, output_json: None, error: Some(message.to_string()) };
        match self.journal.finish_workflow(lease, &finish).await? {
            true => Err(RunError::Ended { id, status, message: message.to_string() }),
            false => Err(self.lease_lost(lease).await),
        }
    }

    /// The workflow `lease` held was taken over: says by whom, and where it stands now.
    async fn lease_lost(&self, lease: &Lease) -> RunError {
        let now = match self.read_back(lease).await {
            Ok(row) => whereabouts(&row, lease),
            Err(now) => now,
        };
        RunError::LeaseLost { id: lease.workflow_id.clone(), now }
    }

    /// After this process let `lease` lapse: once the journal answers, takes
    /// the workflow back under a new epoch if nobody else took it meanwhile
    /// (nothing queued under the old epoch ever lands), else says where it
    /// stands now: who took it over, how it ended, when it can be resumed.
    async fn take_back(&self, lease: &Lease) -> Result<Lease, String> {
        let row = self.read_back(lease).await?;
        let ours = row.lease_epoch == lease.epoch && row.executor.as_deref() == Some(lease.executor.as_str());
        if ours && row.status == WorkflowStatus::Running {
            match self.journal.take_back(lease, self.executor.lease()).await {
                Ok(Some(taken_back)) => {
                    tracing::info!(
                        source = "host",
                        "Workflow {}: the journal answers again and nobody took it over; it continues here from \
                         its journal",
                        lease.workflow_id
                    );
                    return Ok(taken_back);
                }
                Ok(None) => return Err(whereabouts(&self.read_back(lease).await?, lease)),
                Err(error) => return Err(format!("Taking it back failed ({error}). {}", whereabouts(&row, lease))),
            }
        }
        Err(whereabouts(&row, lease))
    }

    /// The workflow's row once the journal answers (its reads ride through an
    /// outage for the journal's budget), unless this process stops first;
    /// else what to tell about it.
    async fn read_back(&self, lease: &Lease) -> Result<WorkflowRecord, String> {
        let read = tokio::select! {
            read = self.journal.workflow(&lease.workflow_id) => read,
            () = self.executor.closing() => {
                return Err("This process is stopping; `host show` tells where the workflow stands.".into());
            }
        };
        match read {
            Ok(Some(row)) => Ok(row),
            Ok(None) => Err("It is no longer in the journal.".into()),
            Err(error) => Err(format!(
                "The journal is still unreachable ({error}); once it answers, whoever takes the workflow's lease \
                 continues it."
            )),
        }
    }
}

/// Where a workflow this process had to stop stands now, from its row: who
/// took it over, how it ended, or when it can be resumed.
fn whereabouts(row: &WorkflowRecord, lease: &Lease) -> String {
    let id = &lease.workflow_id;
    let owner = row.executor.clone().unwrap_or_default();
    let ours = row.lease_epoch == lease.epoch && owner == lease.executor;
    match row.status {
        status if status.is_final() && ours => format!("It has since ended {status}."),
        status if status.is_final() => format!("It was taken over by {owner}, and has since ended {status}."),
        WorkflowStatus::Running if owner == lease.executor && !ours => {
            "This process has since taken it up again under a new lease.".into()
        }
        WorkflowStatus::Running if !ours => format!("It was taken over by {owner}, which runs it now."),
        WorkflowStatus::Running => {
            let lapses = row.lease_expires_at.map_or_else(|| "now".to_string(), |at| format!("at {at}"));
            match row.queue {
                Some(_) => format!("Its lease lapses {lapses}; a worker takes it over then."),
                None => format!("Its lease lapses {lapses}; then `host resume {id}` continues it."),
            }
        }
        status => format!("It was handed back to its queue ({status}); a worker takes it from there."),
    }
}

/// Why the workflow's call did not return.
enum Failure {
    Stopped(StopReason),
    Parked(Timestamp),
    Waiting(Waiting),
    Invoke(InvokeError),
    Trapped(String),
}

/// One workflow's turn under a lease: what it runs with.
struct Turn {
    /// What its clocks and randomness derive from.
    seed: ReplaySeed,
    arguments: Vec<Val>,
    /// When it times out.
    deadline: Option<Timestamp>,
    /// Waits longer than this park it (workers only).
    park_after: Option<Duration>,
    info: WorkflowInfo,
}

/// Who `workflow` is, for `workflow-context.info`.
fn info_of(workflow: &WorkflowRecord, seed: &ReplaySeed) -> WorkflowInfo {
    WorkflowInfo {
        id: workflow.id.clone(),
        name: workflow.name.clone(),
        queue: workflow.queue.clone(),
        started_at: seed.started_at,
        scheduled: workflow.schedule.clone().zip(workflow.scheduled_at),
    }
}

/// What a parked workflow waits for, in words.
fn describe_wait(waiting: &Waiting) -> String {
    let until = waiting.until.map(|until| format!(" until {until}")).unwrap_or_default();
    format!("for {}{until}", waiting.kind.describe(waiting.topic.as_deref()))
}

/// What the clocks and randomness of `existing` derive from as it resumes
/// (its own id and start, or its original's for a fork); says it resumes.
fn resumed(existing: &WorkflowRecord) -> ReplaySeed {
    tracing::info!(source = "host", "Workflow {} resumes from its journal (replaying finished steps)", existing.id);
    let recorded: Option<RecordedOptions> = serde_json::from_value(existing.options.clone()).ok();
    recorded
        .and_then(|options| options.replay_seed)
        .unwrap_or(ReplaySeed { id: existing.id.clone(), started_at: existing.created_at })
}

/// Refuses to resume with another component, entry, input or settings than the journal's.
fn check_same(existing: &WorkflowRecord, given: &NewWorkflow, deployment: &Deployment) -> Result<(), RunError> {
    let conflict = |field, recorded: String, given: String| {
        Err(RunError::Conflict { id: existing.id.clone(), field, recorded, given })
    };
    if existing.component_digest != given.component_digest {
        return conflict(
            "component digest",
            format!("{} ({})", existing.component_digest, existing.component),
            format!("{} ({})", given.component_digest, given.component),
        );
    }
    if existing.entry != given.entry {
        return conflict("entry function", existing.entry.clone(), given.entry.clone());
    }
    if existing.input != given.input {
        return conflict("input", existing.input.clone(), given.input.clone());
    }
    if existing.status == WorkflowStatus::Running {
        let recorded: Option<RecordedOptions> = serde_json::from_value(existing.options.clone()).ok();
        if let Some(recorded) = recorded {
            let digests =
                |refs: &[super::deployment::ComponentRef]| refs.iter().map(|r| r.digest.clone()).collect::<Vec<_>>();
            if digests(&recorded.deployment.steps) != digests(&deployment.steps) {
                return conflict(
                    "step components",
                    digests(&recorded.deployment.steps).join(", "),
                    digests(&deployment.steps).join(", "),
                );
            }
            if recorded.deployment.settings != deployment.settings {
                return conflict("step settings", "recorded at its start".into(), "other ones now".into());
            }
        }
    }
    Ok(())
}

/// A workflow already finished in the journal: its recorded output, without running anything.
pub(super) fn recorded(existing: WorkflowRecord) -> Result<RunOutcome, RunError> {
    match existing.status {
        WorkflowStatus::Succeeded => Ok(RunOutcome {
            workflow_id: existing.id,
            output: existing.output.unwrap_or_default(),
            output_json: existing.output_json.unwrap_or(Json::Null),
            recorded: true,
            elapsed: Duration::ZERO,
        }),
        WorkflowStatus::Failed => Err(RunError::WorkflowFailed {
            id: existing.id,
            message: format!("(recorded) {}", existing.error.unwrap_or_default()),
        }),
        status => Err(RunError::Ended {
            id: existing.id,
            status,
            message: format!("(recorded) {}", existing.error.unwrap_or_default()),
        }),
    }
}

/// The journal row of a new workflow of `deployment` called with `values`
/// (read from `arguments`), recording both so it can be resumed anywhere.
pub(crate) fn new_workflow(id: String, deployment: &Deployment, values: &[Val], arguments: &[String]) -> NewWorkflow {
    let options = RecordedOptions { deployment: deployment.clone(), arguments: arguments.to_vec(), replay_seed: None };
    NewWorkflow {
        id,
        name: workflow_name(&deployment.workflow.path),
        component: deployment.workflow.path.display().to_string(),
        component_digest: deployment.workflow.digest.clone(),
        entry: deployment.entry.clone(),
        input: values::to_wave_tuple(values),
        input_json: values::to_json_tuple(values),
        options: serde_json::to_value(&options).unwrap_or(Json::Null),
        created_at: Timestamp::now(),
    }
}

/// The name lists filter by: the workflow component's file name without `.wasm`.
pub fn workflow_name(path: &std::path::Path) -> String {
    path.file_stem().map_or_else(|| path.display().to_string(), |stem| stem.to_string_lossy().into_owned())
}
