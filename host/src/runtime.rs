//! Runs a workflow: load and link the components, resolve policies, journal
//! the workflow, call its entry function, record and return its output.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::Engine;
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Linker, Val};

use crate::cache::{ComponentLoader, LoadError, LoadedComponent};
use crate::engine;
use crate::host_api;
use crate::invoker::{Invoker, StepTarget};
use crate::journal::{Journal, JournalError, WorkflowRecord, WorkflowStatus};
use crate::linking::{self, LinkError, Plan, WORKFLOW};
use crate::manifest::{Manifest, ManifestError};
use crate::policy::{PolicyLayer, PolicyLayers, PolicyResolveError};
use crate::retry::RetryPolicy;
use crate::sandbox::{self, AttemptLimits, GuestState, Identity, Sandbox};
use crate::step_name::StepName;
use crate::values::{self, ArgumentError};

/// Everything `host run` needs to know.
#[derive(Debug, Clone, Default)]
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
    /// Policy given on the command line, the highest precedence.
    pub cli_policy: PolicyLayer,
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
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
    Policy(#[from] PolicyResolveError),
    #[error(transparent)]
    Arguments(#[from] ArgumentError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot link {component}: {message}")]
    Instantiate { component: String, message: String },
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
    #[error(
        "workflow {id} is already in the journal with status `running` (another process runs it, or it \
         was interrupted); resuming interrupted workflows is not supported yet, so pick another --id"
    )]
    AlreadyRunning { id: String },
    #[error("workflow {id} failed: {message}")]
    WorkflowFailed { id: String, message: String },
}

impl RunError {
    /// True when the workflow itself ran and failed, as opposed to bad input.
    pub fn is_workflow_failure(&self) -> bool {
        matches!(self, Self::WorkflowFailed { .. })
    }
}

/// Runs the workflow described by `options` to completion.
pub async fn run(options: RunOptions) -> Result<RunOutcome, RunError> {
    let engine = engine::new_engine().map_err(|error| RunError::Engine(format!("{error:#}")))?;
    let loader = ComponentLoader::new(&engine, options.cache_dir.clone());
    let mut components = vec![loader.load(&options.workflow)?];
    for step in &options.steps {
        components.push(loader.load(step)?);
    }
    let plan = linking::plan(&engine, &components, options.invoke.as_deref())?;
    let policies = resolve_policies(&options, &plan)?;
    let arguments = values::parse_arguments(&plan.entry.name, &plan.entry.func, &options.arguments)?;

    let journal = Journal::open(&options.journal).await?;
    let workflow_id = options.workflow_id.clone().unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    if let Some(existing) = journal.workflow(&workflow_id).await? {
        return recorded(existing);
    }

    let sandbox = Sandbox::new(&engine, AttemptLimits::default());
    let targets = step_targets(&engine, &components, &plan, &policies)?;
    let invoker = Arc::new(Invoker::new(journal.clone(), sandbox.clone()));
    let workflow_pre = workflow_pre(&engine, &components[WORKFLOW], targets, invoker)?;
    let entry = export_index(&components[WORKFLOW].component, plan.entry.interface.as_deref(), &plan.entry.function)
        .ok_or_else(|| instantiate_error(&components[WORKFLOW], "the entry function is not exported".into()))?;

    let workflow = &components[WORKFLOW];
    let record = WorkflowRecord {
        id: workflow_id.clone(),
        component: workflow.path.display().to_string(),
        component_digest: workflow.digest.clone(),
        entry: plan.entry.name.clone(),
        input: values::to_wave_tuple(&arguments),
        status: WorkflowStatus::Running,
        output: None,
        error: None,
    };
    journal.create_workflow(&record, &executor()).await?;
    tracing::info!(
        source = "host",
        "Workflow {workflow_id} started: {} {}{} (journal {})",
        workflow.path.display(),
        record.entry,
        record.input,
        journal.location()
    );

    let mut store = sandbox.store(Identity::Workflow { workflow_id: workflow_id.clone(), next_seq: 1 });
    let result: wasmtime::Result<Vec<Val>> = async {
        let instance = workflow_pre.instantiate_async(&mut store).await?;
        let func = instance
            .get_func(&mut store, entry)
            .ok_or_else(|| wasmtime::format_err!("the entry function is not exported"))?;
        let mut results = vec![Val::Bool(false); func.ty(&store).results().len()];
        func.call_async(&mut store, &arguments, &mut results).await?;
        Ok(results)
    }
    .await;
    match result {
        Ok(results) => {
            let output = match results.as_slice() {
                [single] => values::to_wave(single),
                many => values::to_wave_tuple(many),
            };
            journal.finish_workflow(&workflow_id, WorkflowStatus::Succeeded, Some(&output), None).await?;
            Ok(RunOutcome { workflow_id, output, recorded: false })
        }
        Err(error) => {
            let message = sandbox::describe_error(&error, store.data());
            journal.finish_workflow(&workflow_id, WorkflowStatus::Failed, None, Some(&message)).await?;
            Err(RunError::WorkflowFailed { id: workflow_id, message })
        }
    }
}

/// A workflow already in the journal: its recorded output, without running anything.
fn recorded(existing: WorkflowRecord) -> Result<RunOutcome, RunError> {
    match existing.status {
        WorkflowStatus::Succeeded => {
            Ok(RunOutcome { workflow_id: existing.id, output: existing.output.unwrap_or_default(), recorded: true })
        }
        WorkflowStatus::Failed => Err(RunError::WorkflowFailed {
            id: existing.id,
            message: format!("(recorded) {}", existing.error.unwrap_or_default()),
        }),
        WorkflowStatus::Running => Err(RunError::AlreadyRunning { id: existing.id }),
    }
}

/// Each step's policy, from the manifest (or `--config`), then the command line.
fn resolve_policies(options: &RunOptions, plan: &Plan) -> Result<HashMap<StepName, RetryPolicy>, RunError> {
    let mut layers = PolicyLayers::default();
    let beside = Manifest::beside(&options.workflow);
    let manifest = options.config.clone().or_else(|| beside.exists().then_some(beside));
    if let Some(path) = manifest {
        layers.push(Manifest::load(&path)?.policy_layer(&path));
    }
    layers.push(options.cli_policy.clone());
    let steps: Vec<StepName> = plan.steps().map(|step| step.name.clone()).collect();
    layers.check_names(&steps)?;
    let mut policies = HashMap::new();
    for step in steps {
        let policy = layers.resolve(&step)?;
        policies.insert(step, policy);
    }
    Ok(policies)
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

/// One `InstancePre` per providing component, and a target per step function.
fn step_targets(
    engine: &Engine,
    components: &[LoadedComponent],
    plan: &Plan,
    policies: &HashMap<StepName, RetryPolicy>,
) -> Result<Vec<(StepName, Arc<StepTarget>)>, RunError> {
    let mut linker = base_linker(engine).map_err(|e| instantiate_error(&components[WORKFLOW], format!("{e:#}")))?;
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
            let policy = policies.get(&function.name).copied().unwrap_or_default();
            tracing::debug!(source = "host", "step {} from {}: {policy:?}", function.name, provider.path.display());
            let target = StepTarget { name: function.name.clone(), pre: pre.clone(), export, policy };
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
                        let value = invoker.call(&workflow_id, seq, &target, params).await?;
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

/// Who runs the workflow, recorded in the journal.
fn executor() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}
