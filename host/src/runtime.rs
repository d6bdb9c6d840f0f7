//! Runs a workflow: load and link the components, resolve policies, journal
//! the workflow, call its entry function, record and return its output.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use wasmtime::Engine;
use wasmtime::component::types::ComponentFunc;
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Linker, Val};

use crate::cache::{ComponentLoader, LoadError, LoadedComponent};
use crate::engine;
use crate::host_api;
use crate::invoker::{InvokeError, Invoker, StepTarget};
use crate::journal::{self, Journal, JournalError, WorkflowRecord, WorkflowStatus};
use crate::linking::{self, LinkError, Plan, WORKFLOW};
use crate::manifest::{Manifest, ManifestError};
use crate::sandbox::{self, GuestState, Sandbox};
use crate::settings::{SettingsError, SettingsLayer, SettingsLayers, StepSettings, StepSource};
use crate::step_name::StepName;
use crate::values::{self, ArgumentError};

/// Everything `host run` needs to know.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub workflow: PathBuf,
    pub steps: Vec<PathBuf>,
    /// A `postgres://` URL, a `sqlite:` URL or a SQLite file path.
    pub journal: String,
    pub workflow_id: Option<String>,
    pub invoke: Option<String>,
    /// One WAVE value per parameter of the entry function.
    pub arguments: Vec<String>,
    /// A manifest to use instead of the one beside the workflow.
    pub config: Option<PathBuf>,
    /// Settings given on the command line, the highest precedence.
    pub cli_settings: SettingsLayer,
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// How long this process owns the workflow without renewing; a crashed
    /// owner's workflow can be resumed once it lapses.
    pub lease: Duration,
}

/// Workflows one [`Runner`] runs at once; more wait for a slot. Each holds a
/// workflow instance and at most one step instance, so half the engine's
/// instance pool keeps steps from ever waiting on workflows for a slot.
pub const MAX_RUNNING_WORKFLOWS: usize = engine::POOL_COMPONENT_INSTANCES as usize / 2;

/// The default `--lease`.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// What the journal keeps of the options, to resume a workflow without its command line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RecordedOptions {
    workflow: PathBuf,
    steps: Vec<PathBuf>,
    invoke: Option<String>,
    arguments: Vec<String>,
    config: Option<PathBuf>,
    cli_settings: SettingsLayer,
}

/// A workflow that ran to the end (its own result may still be an `err`).
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    pub workflow_id: String,
    /// The entry function's result as WAVE.
    pub output: String,
    /// True when the output was read from the journal, nothing ran.
    pub recorded: bool,
}

/// Why a run did not produce an output.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Arguments(#[from] ArgumentError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot link {component}: {message}")]
    Instantiate { component: String, message: String },
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
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
    #[error("the journal of workflow {id} has options this host cannot read: {message}")]
    UnreadableOptions { id: String, message: String },
    #[error("workflow {id} stopped and can be resumed with `host resume {id}`: {source}")]
    Interrupted { id: String, source: InvokeError },
    #[error("workflow {id} stopped: this process lost its lease to another executor; nothing more was written")]
    LeaseLost { id: String },
    #[error("workflow {id} failed: {message}")]
    WorkflowFailed { id: String, message: String },
}

impl RunError {
    /// True when the workflow ran and stopped (failed or interrupted), as opposed to bad input.
    pub fn is_workflow_failure(&self) -> bool {
        matches!(self, Self::WorkflowFailed { .. } | Self::Interrupted { .. } | Self::LeaseLost { .. })
    }
}

/// Components, plan, policies and arguments: everything checked before the journal is touched.
struct Prepared {
    engine: Engine,
    components: Vec<LoadedComponent>,
    plan: Plan,
    settings: HashMap<StepName, StepSettings>,
}

fn prepare(options: &RunOptions) -> Result<Prepared, RunError> {
    let engine = engine::new_engine().map_err(|error| RunError::Engine(format!("{error:#}")))?;
    let loader = ComponentLoader::new(&engine, options.cache_dir.clone());
    let mut components = vec![loader.load(&options.workflow)?];
    for step in &options.steps {
        components.push(loader.load(step)?);
    }
    let plan = linking::plan(&engine, &components, options.invoke.as_deref())?;
    let settings = resolve_settings(options, &components, &plan)?;
    values::parse_arguments(&plan.entry.name, &plan.entry.func, &options.arguments)?;
    Ok(Prepared { engine, components, plan, settings })
}

/// Runs the workflow described by `options` to completion: a new one, or,
/// for an `--id` the journal has as interrupted, continues it by replay.
pub async fn run(options: RunOptions) -> Result<RunOutcome, RunError> {
    let runner = Runner::open(&options).await?;
    runner.run(options.workflow_id.clone(), &options.arguments).await
}

/// A workflow component loaded and linked against its steps and a journal:
/// runs any number of its workflows, concurrently, in one process, sharing
/// the compiled components, the sandbox pool and the journal's group commit.
pub struct Runner {
    options: RunOptions,
    journal: Journal,
    linked: Linked,
    /// Who writes: this process, recorded as each workflow's owner.
    executor: String,
    component: String,
    component_digest: String,
    entry_name: String,
    entry_func: ComponentFunc,
    /// Slots of [`MAX_RUNNING_WORKFLOWS`].
    running: tokio::sync::Semaphore,
}

impl Runner {
    /// Loads, checks and links `options`' components, then opens its journal.
    pub async fn open(options: &RunOptions) -> Result<Self, RunError> {
        let prepared = prepare(options)?;
        let journal = Journal::open(&options.journal).await?;
        Self::link(options, prepared, journal)
    }

    /// [`Runner::open`] on a journal the caller opened (and may share).
    pub async fn with_journal(options: &RunOptions, journal: Journal) -> Result<Self, RunError> {
        Self::link(options, prepare(options)?, journal)
    }

    fn link(options: &RunOptions, prepared: Prepared, journal: Journal) -> Result<Self, RunError> {
        let workflow = &prepared.components[WORKFLOW];
        let component = workflow.path.display().to_string();
        let component_digest = workflow.digest.clone();
        let entry_name = prepared.plan.entry.name.clone();
        let entry_func = prepared.plan.entry.func.clone();
        let executor = executor();
        // Link before the journal knows any workflow: a link error leaves no row behind.
        let linked = link(prepared, &journal, &executor)?;
        Ok(Self {
            options: options.clone(),
            journal,
            linked,
            executor,
            component,
            component_digest,
            entry_name,
            entry_func,
            running: tokio::sync::Semaphore::new(MAX_RUNNING_WORKFLOWS),
        })
    }

    /// The journal this runner writes to.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Runs workflow `id` (a new UUIDv7 if `None`) with `arguments` (one WAVE
    /// value per parameter): starts it, continues it if the journal has it as
    /// interrupted, or returns its recorded output if it finished.
    pub async fn run(&self, id: Option<String>, arguments: &[String]) -> Result<RunOutcome, RunError> {
        let values = values::parse_arguments(&self.entry_name, &self.entry_func, arguments)?;
        // Taken before the journal knows the workflow, so a waiting one holds no lease.
        let _slot = self.running.acquire().await.map_err(|_| RunError::Engine("the runner was closed".into()))?;
        let options = &self.options;
        let recorded_options = RecordedOptions {
            workflow: absolute(&options.workflow),
            steps: options.steps.iter().map(|step| absolute(step)).collect(),
            invoke: options.invoke.clone(),
            arguments: arguments.to_vec(),
            config: options.config.as_deref().map(absolute),
            cli_settings: options.cli_settings.clone(),
        };
        let mut record = WorkflowRecord {
            id: id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            component: self.component.clone(),
            component_digest: self.component_digest.clone(),
            entry: self.entry_name.clone(),
            input: values::to_wave_tuple(&values),
            status: WorkflowStatus::Running,
            output: None,
            error: None,
            options: serde_json::to_string(&recorded_options).unwrap_or_default(),
            executor: self.executor.clone(),
            created_at: journal::now_ms(),
            updated_at: journal::now_ms(),
        };
        let journal = &self.journal;
        let lease_ms = i64::try_from(options.lease.as_millis()).unwrap_or(i64::MAX);
        let fresh = journal.create_workflow(&record, journal::now_ms().saturating_add(lease_ms)).await?;
        if fresh {
            tracing::info!(
                source = "host",
                "Workflow {} started: {} {}{} (journal {})",
                record.id,
                options.workflow.display(),
                record.entry,
                record.input,
                journal.location()
            );
        } else {
            let existing = journal.workflow(&record.id).await?.ok_or_else(|| RunError::UnknownWorkflow {
                id: record.id.clone(),
                journal: journal.location().into(),
            })?;
            check_same(&existing, &record)?;
            if existing.status != WorkflowStatus::Running {
                return recorded(existing);
            }
            if !journal.claim_workflow(&record.id, &record.executor, journal::now_ms().saturating_add(lease_ms)).await?
            {
                return Err(RunError::Owned { id: record.id, executor: existing.executor });
            }
            tracing::info!(
                source = "host",
                "Workflow {} resumes from its journal (replaying finished steps)",
                record.id
            );
            record.created_at = existing.created_at;
        }
        let invoker = &self.linked.invoker;
        if let Err(error) = invoker.begin(&record.id, fresh).await {
            return Err(RunError::Interrupted { id: record.id, source: InvokeError::Journal(error) });
        }
        let id = record.id.clone();
        let result = execute(&self.linked, journal, record, values, options.lease).await;
        invoker.end(&id);
        result
    }
}

/// Continues workflow `id` with the options it was started with.
pub async fn resume(
    journal_url: &str,
    id: &str,
    cache_dir: Option<PathBuf>,
    lease: Duration,
) -> Result<RunOutcome, RunError> {
    let journal = Journal::open(journal_url).await?;
    let existing = journal
        .workflow(id)
        .await?
        .ok_or_else(|| RunError::UnknownWorkflow { id: id.into(), journal: journal.location().into() })?;
    if existing.status != WorkflowStatus::Running {
        return recorded(existing);
    }
    let recorded_options: RecordedOptions = serde_json::from_str(&existing.options)
        .map_err(|error| RunError::UnreadableOptions { id: id.into(), message: error.to_string() })?;
    run(RunOptions {
        workflow: recorded_options.workflow,
        steps: recorded_options.steps,
        journal: journal_url.to_string(),
        workflow_id: Some(id.to_string()),
        invoke: recorded_options.invoke,
        arguments: recorded_options.arguments,
        config: recorded_options.config,
        cli_settings: recorded_options.cli_settings,
        cache_dir,
        lease,
    })
    .await
}

/// Continues every interrupted workflow of the journal that no live process owns, one after another.
pub async fn recover(
    journal_url: &str,
    cache_dir: Option<PathBuf>,
    lease: Duration,
) -> Result<Vec<(String, Result<RunOutcome, RunError>)>, RunError> {
    let journal = Journal::open(journal_url).await?;
    let mut results = Vec::new();
    for id in journal.interrupted_workflows().await? {
        tracing::info!(source = "host", "Recovering workflow {id}");
        let result = resume(journal_url, &id, cache_dir.clone(), lease).await;
        results.push((id, result));
    }
    Ok(results)
}

/// Refuses to resume with another component, entry or input than the journal's.
fn check_same(existing: &WorkflowRecord, given: &WorkflowRecord) -> Result<(), RunError> {
    let fields = [
        ("component digest", &existing.component_digest, &given.component_digest),
        ("entry function", &existing.entry, &given.entry),
        ("input", &existing.input, &given.input),
    ];
    for (field, recorded, now) in fields {
        if recorded != now {
            let (recorded, given) = if field == "component digest" {
                (format!("{recorded} ({})", existing.component), format!("{now} ({})", given.component))
            } else {
                (recorded.clone(), now.clone())
            };
            return Err(RunError::Conflict { id: existing.id.clone(), field, recorded, given });
        }
    }
    Ok(())
}

/// A workflow ready to instantiate: its `InstancePre` with step imports bridged, and its entry.
struct Linked {
    sandbox: Sandbox,
    invoker: Arc<Invoker>,
    workflow_pre: InstancePre<GuestState>,
    entry: ComponentExportIndex,
}

/// Links the step components and the workflow (bridged to an invoker writing as `executor`).
fn link(prepared: Prepared, journal: &Journal, executor: &str) -> Result<Linked, RunError> {
    let Prepared { engine, components, plan, settings } = prepared;
    let sandbox = Sandbox::new(&engine);
    let targets = step_targets(&engine, &components, &plan, &settings)?;
    let invoker = Arc::new(Invoker::new(journal.clone(), sandbox.clone(), executor.to_string()));
    let workflow_pre = workflow_pre(&engine, &components[WORKFLOW], targets, invoker.clone())?;
    let entry = export_index(&components[WORKFLOW].component, plan.entry.interface.as_deref(), &plan.entry.function)
        .ok_or_else(|| instantiate_error(&components[WORKFLOW], "the entry function is not exported".into()))?;
    Ok(Linked { sandbox, invoker, workflow_pre, entry })
}

/// Calls the workflow this process now owns, renewing its lease meanwhile.
async fn execute(
    linked: &Linked,
    journal: &Journal,
    record: WorkflowRecord,
    arguments: Vec<Val>,
    lease: Duration,
) -> Result<RunOutcome, RunError> {
    let Linked { sandbox, workflow_pre, entry, .. } = linked;
    let id = record.id.clone();
    let mut store = sandbox.workflow_store(&id, record.created_at);
    let heartbeat = Heartbeat::start(journal.clone(), id.clone(), record.executor.clone(), lease);
    let call = async {
        let instance = sandbox::instantiate_when_free(workflow_pre, &mut store).await?;
        let func = instance
            .get_func(&mut store, *entry)
            .ok_or_else(|| wasmtime::format_err!("the entry function is not exported"))?;
        let mut results = vec![Val::Bool(false); func.ty(&store).results().len()];
        func.call_async(&mut store, &arguments, &mut results).await?;
        wasmtime::Result::<Vec<Val>>::Ok(results)
    };
    let result = tokio::select! {
        result = call => Some(result),
        () = heartbeat.lost() => None,
    };
    heartbeat.stop();
    let Some(result) = result else {
        return Err(RunError::LeaseLost { id });
    };
    let (status, output, error) = match result {
        Ok(results) => {
            let output = match results.as_slice() {
                [single] => values::to_wave(single),
                many => values::to_wave_tuple(many),
            };
            (WorkflowStatus::Succeeded, Some(output), None)
        }
        // The journal failed or replay diverged: the workflow is not failed,
        // it stays `running` (its lease lapses) to be resumed.
        Err(error) => match error.downcast::<InvokeError>() {
            Ok(source) => return Err(RunError::Interrupted { id, source }),
            Err(error) => (WorkflowStatus::Failed, None, Some(sandbox::describe_error(&error, store.data()))),
        },
    };
    match journal.finish_workflow(&id, &record.executor, status, output.as_deref(), error.as_deref()).await {
        Ok(true) => {}
        Ok(false) => return Err(RunError::LeaseLost { id }),
        Err(error) => return Err(RunError::Interrupted { id, source: InvokeError::Journal(error) }),
    }
    match (output, error) {
        (Some(output), _) => Ok(RunOutcome { workflow_id: id, output, recorded: false }),
        (None, message) => Err(RunError::WorkflowFailed { id, message: message.unwrap_or_default() }),
    }
}

/// A workflow already finished in the journal: its recorded output, without running anything.
fn recorded(existing: WorkflowRecord) -> Result<RunOutcome, RunError> {
    match existing.status {
        WorkflowStatus::Failed => Err(RunError::WorkflowFailed {
            id: existing.id,
            message: format!("(recorded) {}", existing.error.unwrap_or_default()),
        }),
        _ => Ok(RunOutcome { workflow_id: existing.id, output: existing.output.unwrap_or_default(), recorded: true }),
    }
}

/// `path` made absolute, so a recorded workflow can be resumed from any directory.
fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Each step's settings, from the manifest (or `--config`), then the command line.
fn resolve_settings(
    options: &RunOptions,
    components: &[LoadedComponent],
    plan: &Plan,
) -> Result<HashMap<StepName, StepSettings>, RunError> {
    let mut layers = SettingsLayers::default();
    let beside = Manifest::beside(&options.workflow);
    let manifest = options.config.clone().or_else(|| beside.exists().then_some(beside));
    if let Some(path) = manifest {
        layers.push(Manifest::load(&path)?.settings_layer(&path));
    }
    layers.push(options.cli_settings.clone());
    let sources: Vec<StepSource> = plan
        .interfaces
        .iter()
        .flat_map(|interface| {
            let path = &components[interface.provider].path;
            let component =
                path.file_name().map_or_else(|| path.display().to_string(), |name| name.to_string_lossy().into_owned());
            interface
                .functions
                .iter()
                .map(move |function| StepSource { step: function.name.clone(), component: component.clone() })
        })
        .collect();
    layers.check_names(&sources)?;
    let mut settings = HashMap::new();
    for source in sources {
        let resolved = layers.resolve(&source)?;
        settings.insert(source.step, resolved);
    }
    Ok(settings)
}

fn instantiate_error(component: &LoadedComponent, message: String) -> RunError {
    RunError::Instantiate { component: component.path.display().to_string(), message }
}

fn export_index(component: &Component, interface: Option<&str>, function: &str) -> Option<ComponentExportIndex> {
    let parent = match interface {
        Some(interface) => Some(component.get_export_index(None, interface)?),
        None => None,
    };
    component.get_export_index(parent.as_ref(), function)
}

/// A linker with WASI (nothing granted until a store grants it) and `stepbox:runtime`.
fn base_linker(engine: &Engine) -> wasmtime::Result<Linker<GuestState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    host_api::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// The linker step components are instantiated with: WASI, `stepbox:runtime`
/// and `wasi:http` (each attempt's hooks allow just its granted hosts).
pub fn step_linker(engine: &Engine) -> wasmtime::Result<Linker<GuestState>> {
    let mut linker = base_linker(engine)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    Ok(linker)
}

/// One `InstancePre` per providing component, and a target per step function.
fn step_targets(
    engine: &Engine,
    components: &[LoadedComponent],
    plan: &Plan,
    settings: &HashMap<StepName, StepSettings>,
) -> Result<Vec<(StepName, Arc<StepTarget>)>, RunError> {
    let mut linker = step_linker(engine).map_err(|e| instantiate_error(&components[WORKFLOW], format!("{e:#}")))?;
    // A step that imports steps (the one-file case) gets stubs: nested steps are not supported.
    for interface in &plan.interfaces {
        let mut instance = linker
            .instance(&interface.name)
            .map_err(|e| instantiate_error(&components[interface.provider], format!("{e:#}")))?;
        for function in &interface.functions {
            let name = function.name.to_string();
            instance
                .func_new(&function.name.function, move |store, _, _, _| {
                    let caller = store.data().source().to_string();
                    Err(wasmtime::format_err!(
                        "a step cannot call a step: step `{caller}` called `{name}`; call it from the workflow instead"
                    ))
                })
                .map_err(|e| instantiate_error(&components[interface.provider], format!("{e:#}")))?;
        }
    }
    let mut pres: HashMap<usize, InstancePre<GuestState>> = HashMap::new();
    let mut targets = Vec::new();
    for interface in &plan.interfaces {
        let provider = &components[interface.provider];
        let pre = match pres.get(&interface.provider) {
            Some(pre) => pre.clone(),
            None => {
                let pre = linker
                    .instantiate_pre(&provider.component)
                    .map_err(|e| instantiate_error(provider, format!("{e:#}")))?;
                pres.insert(interface.provider, pre.clone());
                pre
            }
        };
        for function in &interface.functions {
            let export = export_index(&provider.component, Some(&interface.name), &function.name.function)
                .ok_or_else(|| instantiate_error(provider, format!("`{}` is not exported", function.name)))?;
            let step_settings = settings.get(&function.name).cloned().ok_or_else(|| {
                instantiate_error(provider, format!("no settings were resolved for `{}`", function.name))
            })?;
            tracing::debug!(
                source = "host",
                "step {} from {}: {step_settings:?}",
                function.name,
                provider.path.display()
            );
            let result_type = function
                .func
                .results()
                .next()
                .ok_or_else(|| instantiate_error(provider, format!("`{}` returns nothing", function.name)))?;
            let target = StepTarget {
                name: function.name.clone(),
                pre: pre.clone(),
                export,
                result_type,
                settings: step_settings,
            };
            targets.push((function.name.clone(), Arc::new(target)));
        }
    }
    Ok(targets)
}

/// The workflow's `InstancePre`, its step imports bridged to the invoker.
fn workflow_pre(
    engine: &Engine,
    workflow: &LoadedComponent,
    targets: Vec<(StepName, Arc<StepTarget>)>,
    invoker: Arc<Invoker>,
) -> Result<InstancePre<GuestState>, RunError> {
    let fail = |e: wasmtime::Error| instantiate_error(workflow, format!("{e:#}"));
    let mut linker = base_linker(engine).map_err(fail)?;
    let mut by_interface: BTreeMap<String, Vec<(StepName, Arc<StepTarget>)>> = BTreeMap::new();
    for (name, target) in targets {
        by_interface.entry(name.interface.clone()).or_default().push((name, target));
    }
    for (interface, functions) in by_interface {
        let mut instance = linker.instance(&interface).map_err(fail)?;
        for (name, target) in functions {
            let invoker = invoker.clone();
            instance
                .func_new_async(&name.function, move |mut store, _, params, results| {
                    let invoker = invoker.clone();
                    let target = target.clone();
                    Box::new(async move {
                        let (workflow_id, seq) = store
                            .data_mut()
                            .next_step_call()
                            .ok_or_else(|| wasmtime::format_err!("only a workflow can call a step"))?;
                        let value =
                            invoker.call(&workflow_id, seq, &target, params).await.map_err(wasmtime::Error::new)?;
                        if let Some(slot) = results.first_mut() {
                            *slot = value;
                        }
                        Ok(())
                    })
                })
                .map_err(fail)?;
        }
    }
    linker.instantiate_pre(&workflow.component).map_err(fail)
}

/// Renews this process's lease on a workflow while it runs, and says when it was lost.
struct Heartbeat {
    task: tokio::task::JoinHandle<()>,
    lost: watch::Receiver<bool>,
}

impl Heartbeat {
    fn start(journal: Journal, id: String, executor: String, lease: Duration) -> Self {
        let (lost_tx, lost) = watch::channel(false);
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let task = tokio::spawn(async move {
            let mut renewed = Instant::now();
            loop {
                tokio::time::sleep(lease / 3).await;
                match journal.renew_lease(&id, &executor, journal::now_ms().saturating_add(lease_ms)).await {
                    Ok(true) => renewed = Instant::now(),
                    Ok(false) => {
                        tracing::error!(source = "host", "workflow {id}: another executor took over the lease");
                        let _ = lost_tx.send(true);
                        return;
                    }
                    // Past the lease without a renewal, another process may own it now: stop.
                    Err(error) if renewed.elapsed() >= lease => {
                        tracing::error!(source = "host", "workflow {id}: lease expired unrenewed ({error})");
                        let _ = lost_tx.send(true);
                        return;
                    }
                    Err(error) => tracing::warn!(source = "host", "cannot renew the lease of workflow {id}: {error}"),
                }
            }
        });
        Self { task, lost }
    }

    /// Completes when the lease is lost; never otherwise.
    async fn lost(&self) {
        let mut lost = self.lost.clone();
        if lost.wait_for(|lost| *lost).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    fn stop(self) {
        self.task.abort();
    }
}

/// Who runs the workflow, recorded in the journal.
fn executor() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into());
    // The random part keeps two hosts with one name and pid (containers) apart.
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &nonce[..8])
}
