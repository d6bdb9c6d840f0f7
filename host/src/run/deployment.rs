//! What a workflow runs with, pinned and recorded by value: its components
//! by digest, its entry function and every step's settings. A resume loads
//! exactly these (from the journal when stored there, else from the recorded
//! paths, checked against their digests), whatever the files and manifests
//! say by then.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wasmtime::Engine;

use super::linking::{self, LinkError, Plan};
use super::values::{self, ArgumentError};
use crate::config::{Manifest, ManifestError, SettingsError, SettingsLayer, SettingsLayers, StepSettings, StepSource};
use crate::journal::{Journal, JournalError, digest};
use crate::wasm::{ComponentLoader, LoadError, LoadedComponent};

/// A component a workflow runs, pinned by its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentRef {
    /// Where it was loaded from (absolute), or the name it is stored under in the journal.
    pub path: PathBuf,
    /// Hex SHA-256 of its bytes.
    pub digest: String,
}

/// What a workflow runs with, recorded by value in its journal row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub workflow: ComponentRef,
    pub steps: Vec<ComponentRef>,
    /// The entry function (`run`, or `iface.func`).
    pub entry: String,
    /// Each step's policy, limits and grants, by qualified step name.
    pub settings: BTreeMap<String, StepSettings>,
    /// Step calls the workflow may have running at once (recorded before this setting existed: 16).
    #[serde(default = "default_max_concurrent_calls")]
    pub max_concurrent_calls: u32,
}

fn default_max_concurrent_calls() -> u32 {
    crate::config::DEFAULT_MAX_CONCURRENT_CALLS
}

/// A workflow's recorded options: its deployment and its arguments (WAVE).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedOptions {
    #[serde(flatten)]
    pub deployment: Deployment,
    pub arguments: Vec<String>,
    /// Whose clocks and randomness the workflow replays with, when not its own
    /// (a fork replays its original's, so the copied calls match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_seed: Option<ReplaySeed>,
}

/// What a workflow's deterministic clocks and randomness derive from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplaySeed {
    /// The id its randomness is seeded from.
    pub id: String,
    /// Its frozen wall clock.
    pub started_at: crate::journal::Timestamp,
}

/// What `host run` is given: files and flags, before anything is loaded.
#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    pub workflow: PathBuf,
    pub steps: Vec<PathBuf>,
    /// The entry function, when the workflow exports several.
    pub invoke: Option<String>,
    /// A manifest to use instead of the one beside the workflow.
    pub config: Option<PathBuf>,
    /// Settings from the command line, the highest precedence.
    pub cli_settings: SettingsLayer,
}

/// What `POST /api/v1/workflows` is given: components already stored in the
/// journal, by digest, and settings in a manifest's form.
#[derive(Debug, Clone, Default)]
pub struct StoredSpec {
    pub workflow: String,
    pub steps: Vec<String>,
    /// The entry function, when the workflow exports several.
    pub invoke: Option<String>,
    /// Settings for the steps, as a manifest would give them.
    pub settings: Option<SettingsLayer>,
}

/// A step component whose file changed since the workflow started, run anyway on request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangedComponent {
    pub path: PathBuf,
    pub recorded: String,
    pub found: String,
}

/// Why a workflow's components and settings cannot be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(
        "the workflow component {path} changed since workflow {id} started (sha256 {recorded}, now {found}); a \
         workflow resumes only with the code it started with. Put the original file back, or start a new workflow"
    )]
    WorkflowChanged { id: String, path: PathBuf, recorded: String, found: String },
    #[error(
        "the step component {path} changed since workflow {id} started (sha256 {recorded}, now {found}). Put the \
         original file back, or resume with --allow-changed-steps to run the new code for the calls not yet \
         finished (the change is recorded in the journal)"
    )]
    StepChanged { id: String, path: PathBuf, recorded: String, found: String },
    #[error("the {what} component of workflow {id} is neither stored in the journal nor at {path}: {source}")]
    Missing { id: String, what: &'static str, path: PathBuf, source: std::io::Error },
    #[error(
        "no component with sha256 {digest} is stored in the journal; upload it first (POST /api/v1/components, or \
         host submit stores the components it is given)"
    )]
    NotStored { digest: String },
    #[error("workflow {id} recorded no settings for step `{step}` (its components changed too much to resume)")]
    NoSettings { id: String, step: String },
    #[error("compiling a component of workflow {id} stopped: {message}")]
    Compile { id: String, message: String },
}

impl PrepareError {
    /// What the error means for whoever must act on it.
    pub fn disposition(&self) -> crate::Disposition {
        match self {
            Self::Journal(error) => error.disposition(),
            // A request naming a component nobody uploaded is a bad request, not a missing page.
            Self::Compile { .. } => crate::Disposition::Stopped,
            _ => crate::Disposition::Refused,
        }
    }
}

/// Components loaded and planned, with each step's settings: everything
/// checked before the journal is touched.
pub struct Prepared {
    pub engine: Engine,
    /// What loaded the components: it loads those of the workflow's children too.
    pub loader: ComponentLoader,
    pub components: Vec<LoadedComponent>,
    pub plan: Plan,
    pub deployment: Deployment,
    /// Step components run although they changed (`--allow-changed-steps`).
    pub changed: Vec<ChangedComponent>,
}

impl Prepared {
    /// Loads `spec`'s files, plans the run and resolves each step's settings.
    pub fn from_spec(spec: &RunSpec, loader: &ComponentLoader) -> Result<Self, PrepareError> {
        let mut components = vec![loader.load(&spec.workflow)?];
        for step in &spec.steps {
            components.push(loader.load(step)?);
        }
        let mut layers = SettingsLayers::default();
        if let Some(manifest) = Manifest::find(&spec.workflow, spec.config.as_deref())? {
            layers.push(manifest);
        }
        layers.push(spec.cli_settings.clone());
        Self::plan(loader, components, spec.invoke.as_deref(), &layers, absolute)
    }

    /// Loads `spec`'s components from the journal, plans the run and
    /// resolves each step's settings.
    pub async fn from_stored(
        spec: &StoredSpec,
        loader: &ComponentLoader,
        journal: &Journal,
    ) -> Result<Self, PrepareError> {
        let mut components = Vec::new();
        for digest in std::iter::once(&spec.workflow).chain(&spec.steps) {
            let (name, bytes) =
                journal.component(digest).await?.ok_or_else(|| PrepareError::NotStored { digest: digest.clone() })?;
            let loader = loader.clone();
            let path = PathBuf::from(name);
            // Compiling a large component takes seconds: off the async threads.
            let loaded = tokio::task::spawn_blocking(move || loader.load_bytes(&path, &bytes))
                .await
                .map_err(|error| LoadError::Invalid { path: PathBuf::from(digest), message: error.to_string() })??;
            components.push(loaded);
        }
        let mut layers = SettingsLayers::default();
        if let Some(settings) = &spec.settings {
            layers.push(settings.clone());
        }
        Self::plan(loader, components, spec.invoke.as_deref(), &layers, Path::to_path_buf)
    }

    /// Plans `components` (the workflow first) and resolves each step's
    /// settings from `layers`; `pin_path` says where each component is recorded as coming from.
    fn plan(
        loader: &ComponentLoader,
        components: Vec<LoadedComponent>,
        invoke: Option<&str>,
        layers: &SettingsLayers,
        pin_path: fn(&Path) -> PathBuf,
    ) -> Result<Self, PrepareError> {
        let engine = loader.engine().clone();
        let plan = linking::plan(&engine, &components, invoke)?;
        let sources = step_sources(&components, &plan);
        layers.check_names(&sources)?;
        let mut settings = BTreeMap::new();
        for source in sources {
            let resolved = layers.resolve(&source)?;
            settings.insert(source.step.to_string(), resolved);
        }
        let pin = |component: &LoadedComponent| ComponentRef {
            path: pin_path(&component.path),
            digest: component.digest.clone(),
        };
        let deployment = Deployment {
            workflow: pin(&components[linking::WORKFLOW]),
            steps: components[1..].iter().map(pin).collect(),
            entry: plan.entry.name.clone(),
            settings,
            max_concurrent_calls: layers.max_concurrent_calls(),
        };
        Ok(Self { engine, loader: loader.clone(), components, plan, deployment, changed: Vec::new() })
    }

    /// Loads what workflow `id` recorded: each component from the journal if
    /// stored there, else from its recorded path, checked against its digest.
    pub async fn from_deployment(
        id: &str,
        deployment: Deployment,
        loader: &ComponentLoader,
        journal: &Journal,
        allow_changed_steps: bool,
    ) -> Result<Self, PrepareError> {
        let mut components = Vec::new();
        let mut changed = Vec::new();
        let mut deployment = deployment;
        let refs = std::iter::once(&mut deployment.workflow).chain(deployment.steps.iter_mut());
        for (index, reference) in refs.enumerate() {
            let what = if index == 0 { "workflow" } else { "step" };
            let bytes = match journal.component(&reference.digest).await? {
                Some((_, bytes)) => bytes,
                None => tokio::fs::read(&reference.path).await.map_err(|source| PrepareError::Missing {
                    id: id.into(),
                    what,
                    path: reference.path.clone(),
                    source,
                })?,
            };
            let found = digest(&bytes);
            if found != reference.digest {
                let (path, recorded) = (reference.path.clone(), reference.digest.clone());
                if index == 0 {
                    return Err(PrepareError::WorkflowChanged { id: id.into(), path, recorded, found });
                }
                if !allow_changed_steps {
                    return Err(PrepareError::StepChanged { id: id.into(), path, recorded, found });
                }
                changed.push(ChangedComponent { path, recorded, found: found.clone() });
                reference.digest = found;
            }
            // Compiling takes seconds for a Python or JavaScript component: off the async threads.
            let (compiler, path) = (loader.clone(), reference.path.clone());
            let loaded = tokio::task::spawn_blocking(move || compiler.load_bytes(&path, &bytes))
                .await
                .map_err(|error| PrepareError::Compile { id: id.into(), message: error.to_string() })??;
            components.push(loaded);
        }
        let engine = loader.engine().clone();
        let mut plan = linking::plan(&engine, &components, Some(&deployment.entry))?;
        for interface in &plan.interfaces {
            for function in interface.functions.iter().filter(|function| function.imported) {
                let step = function.name.to_string();
                if !deployment.settings.contains_key(&step) {
                    return Err(PrepareError::NoSettings { id: id.into(), step });
                }
            }
        }
        // A step only `start-call` reaches that it recorded no settings for was not reachable when it started.
        for interface in &mut plan.interfaces {
            interface.functions.retain(|function| deployment.settings.contains_key(&function.name.to_string()));
        }
        plan.interfaces.retain(|interface| !interface.functions.is_empty());
        Ok(Self { engine, loader: loader.clone(), components, plan, deployment, changed })
    }
}

impl Prepared {
    /// Applies `overrides` (`host resume` with policy flags) on top of the
    /// recorded settings; returns the steps whose settings changed (and
    /// `max-concurrent-calls`, when that did).
    pub fn override_settings(&mut self, overrides: &SettingsLayer) -> Result<Vec<String>, PrepareError> {
        if overrides.is_empty() {
            return Ok(Vec::new());
        }
        let mut layers = SettingsLayers::default();
        layers.push(overrides.clone());
        let sources = step_sources(&self.components, &self.plan);
        layers.check_names(&sources)?;
        let mut changed = Vec::new();
        if let Some(limit) =
            overrides.max_concurrent_calls.filter(|&limit| limit != self.deployment.max_concurrent_calls)
        {
            self.deployment.max_concurrent_calls = limit;
            changed.push("max-concurrent-calls".to_string());
        }
        for source in sources {
            let step = source.step.to_string();
            let Some(recorded) = self.deployment.settings.get(&step).cloned() else { continue };
            let updated = layers.resolve_from(recorded.clone(), "the settings recorded at its start", &source)?;
            if updated != recorded {
                self.deployment.settings.insert(step.clone(), updated);
                changed.push(step);
            }
        }
        Ok(changed)
    }

    /// Refuses arguments that do not fit the entry function, before anything is journaled.
    pub fn check_arguments(&self, arguments: &[String]) -> Result<(), ArgumentError> {
        values::parse_arguments(&self.plan.entry.name, &self.plan.entry.func, arguments).map(drop)
    }
}

/// Every step of the plan with the file name of the component providing it.
fn step_sources(components: &[LoadedComponent], plan: &Plan) -> Vec<StepSource> {
    plan.interfaces
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
        .collect()
}

/// `path` made absolute, so a recorded workflow can be resumed from any directory.
fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}
