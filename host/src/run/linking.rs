//! Decides, from component types alone, what runs where: which component
//! provides each step interface the workflow imports, that each step follows
//! the convention, which other exported steps `start-call` can reach, and
//! which export is the workflow's entry function.

use std::path::Path;

use wasmtime::Engine;
use wasmtime::component::types::{ComponentFunc, ComponentItem};

use super::contract::{self, ConventionError};
use crate::config::StepName;
use crate::wasm::LoadedComponent;

/// Index of the workflow in the component list; `--step` components follow it.
pub const WORKFLOW: usize = 0;

/// Imports the host satisfies itself.
pub fn is_host_provided(interface: &str) -> bool {
    interface.starts_with("wasi:") || interface.starts_with("stepbox:runtime/")
}

/// One step function of a step interface.
#[derive(Clone)]
pub struct StepFunction {
    pub name: StepName,
    /// Its type as the workflow imports it (or as its provider exports it).
    pub func: ComponentFunc,
    /// Whether the workflow imports it; if not, only `start-call` reaches it.
    pub imported: bool,
}

/// A step interface the workflow imports, and the component that exports it.
#[derive(Clone)]
pub struct StepInterface {
    pub name: String,
    /// Index into the component list.
    pub provider: usize,
    pub functions: Vec<StepFunction>,
}

/// The workflow export to call.
#[derive(Clone)]
pub struct Entry {
    /// `run`, or `iface.func` for a function inside an exported interface.
    pub name: String,
    pub interface: Option<String>,
    pub function: String,
    pub func: ComponentFunc,
}

/// What the host links and calls.
#[derive(Clone)]
pub struct Plan {
    pub interfaces: Vec<StepInterface>,
    pub entry: Entry,
    /// Every function the workflow exports: what its child workflows may start.
    pub exports: Vec<Entry>,
}

/// The components cannot be linked as given.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(
        "{workflow} imports `{interface}`, but neither it nor any --step component exports it. \
         Pass the component that implements it with `--step FILE`{others}"
    )]
    MissingProvider { workflow: String, interface: String, others: String },
    #[error("`{interface}` exported by {provider} does not match what {workflow} imports: {problem}")]
    Mismatch { interface: String, provider: String, workflow: String, problem: String },
    #[error(transparent)]
    Convention(#[from] ConventionError),
    #[error(
        "{component} imports `{name}`, which stepbox does not provide: a component may import WASI, \
         `stepbox:runtime` and step interfaces exported by the workflow or a --step component"
    )]
    UnsupportedImport { component: String, name: String },
    #[error(
        "{workflow} imports `{interface}`, but a workflow gets no grants (no HTTP, files, environment or sockets): \
         its code must replay the same way after a crash. Make the HTTP call in a step, a function of a \
         component passed with --step (with `http = [\"host\"]` in its manifest grants), and call that step \
         from the workflow"
    )]
    WorkflowHttp { workflow: String, interface: String },
    #[error("{workflow} exports no function to call as the workflow; export one such as `run: func() -> bool`")]
    NoEntry { workflow: String },
    #[error("{workflow} exports several functions ({candidates}); choose one with `--invoke NAME`")]
    AmbiguousEntry { workflow: String, candidates: String },
    #[error("{workflow} exports no function named `{name}`; it exports: {candidates}")]
    UnknownEntry { workflow: String, name: String, candidates: String },
}

/// Plans the run of `components[WORKFLOW]` with the others as `--step` components.
pub fn plan(engine: &Engine, components: &[LoadedComponent], invoke: Option<&str>) -> Result<Plan, LinkError> {
    let workflow = &components[WORKFLOW];
    let imports = imported_interfaces(engine, workflow)?;
    if let Some((interface, _)) = imports.iter().find(|(name, _)| name.starts_with("wasi:http/")) {
        return Err(LinkError::WorkflowHttp { workflow: display(&workflow.path), interface: interface.clone() });
    }
    let step_interfaces: Vec<(String, Vec<(String, ComponentFunc)>)> =
        imports.into_iter().filter(|(name, _)| !is_host_provided(name)).collect();

    let mut interfaces = Vec::new();
    for (name, functions) in &step_interfaces {
        let provider = find_provider(engine, components, name).ok_or_else(|| LinkError::MissingProvider {
            workflow: display(&workflow.path),
            interface: name.clone(),
            others: describe_steps(components),
        })?;
        let exported = exported_functions(engine, &components[provider], name);
        let mut step_functions = Vec::new();
        for (function, func) in functions {
            let mismatch = |problem: String| LinkError::Mismatch {
                interface: name.clone(),
                provider: display(&components[provider].path),
                workflow: display(&workflow.path),
                problem,
            };
            let export = exported
                .iter()
                .find(|(exported_name, _)| exported_name == function)
                .ok_or_else(|| mismatch(format!("it has no function `{function}`")))?;
            if !same_signature(func, &export.1) {
                return Err(mismatch(format!(
                    "function `{function}` is `{}` there but `{}` in the import; were they built from the same WIT?",
                    signature(&export.1),
                    signature(func)
                )));
            }
            let step = StepName::new(name.clone(), function.clone());
            contract::check_step(&step, func)?;
            step_functions.push(StepFunction { name: step, func: func.clone(), imported: true });
        }
        interfaces.push(StepInterface { name: name.clone(), provider, functions: step_functions });
    }

    add_startable(engine, components, &mut interfaces);
    for (index, component) in components.iter().enumerate().skip(1) {
        if !interfaces.iter().any(|interface| interface.provider == index) {
            tracing::warn!("{} provides no step function; it is not used", component.path.display());
        }
    }
    let step_names: Vec<&str> = step_interfaces.iter().map(|(name, _)| name.as_str()).collect();
    for component in components {
        check_imports(engine, component, &step_names)?;
    }
    let exports = workflow_exports(engine, workflow, &step_names);
    let entry = choose_entry(&exports, &display(&workflow.path), invoke)?;
    Ok(Plan { interfaces, entry, exports })
}

/// Adds every other step function the `--step` components export (and the
/// workflow, of the interfaces it imports) that follows the convention: the
/// workflow can start it with `start-call` though its code never calls it
/// directly (a compiler keeps only the imports the code calls). The first
/// component exporting an interface provides it, as for imports.
fn add_startable(engine: &Engine, components: &[LoadedComponent], interfaces: &mut Vec<StepInterface>) {
    for index in (1..components.len()).chain([WORKFLOW]) {
        for (name, exported) in exported_interfaces(engine, &components[index]) {
            let known = interfaces.iter().position(|interface| interface.name == name);
            let position = match known {
                Some(position) if interfaces[position].provider == index => position,
                // Another component provides it, or it is the workflow's own and not a step it calls.
                Some(_) => continue,
                None if index == WORKFLOW || is_host_provided(&name) => continue,
                None => {
                    interfaces.push(StepInterface { name: name.clone(), provider: index, functions: Vec::new() });
                    interfaces.len() - 1
                }
            };
            let functions = &mut interfaces[position].functions;
            for (function, func) in exported {
                let step = StepName::new(name.clone(), function.clone());
                if !functions.iter().any(|known| known.name == step) && contract::check_step(&step, &func).is_ok() {
                    functions.push(StepFunction { name: step, func, imported: false });
                }
            }
        }
    }
    interfaces.retain(|interface| !interface.functions.is_empty());
}

/// The instances a component exports, with their functions.
fn exported_interfaces(engine: &Engine, component: &LoadedComponent) -> Vec<(String, Vec<(String, ComponentFunc)>)> {
    let ty = component.component.component_type();
    ty.exports(engine)
        .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentInstance(_)))
        .map(|(name, _)| (name.to_string(), exported_functions(engine, component, name)))
        .collect()
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

fn describe_steps(components: &[LoadedComponent]) -> String {
    if components.len() == 1 {
        String::new()
    } else {
        let files: Vec<String> = components[1..].iter().map(|c| display(&c.path)).collect();
        format!(" (the --step components given were: {})", files.join(", "))
    }
}

/// An instance a component imports: its name and its functions.
type ImportedInterface = (String, Vec<(String, ComponentFunc)>);

/// Instances a component imports, with their functions.
fn imported_interfaces(engine: &Engine, component: &LoadedComponent) -> Result<Vec<ImportedInterface>, LinkError> {
    let ty = component.component.component_type();
    let mut interfaces = Vec::new();
    for (name, item) in ty.imports(engine) {
        match item.ty {
            ComponentItem::ComponentInstance(instance) => {
                let functions = instance
                    .exports(engine)
                    .filter_map(|(function, item)| match item.ty {
                        ComponentItem::ComponentFunc(func) => Some((function.to_string(), func)),
                        _ => None,
                    })
                    .collect();
                interfaces.push((name.to_string(), functions));
            }
            ComponentItem::Type(_) => {}
            _ => {
                return Err(LinkError::UnsupportedImport {
                    component: display(&component.path),
                    name: name.to_string(),
                });
            }
        }
    }
    Ok(interfaces)
}

/// The functions `component` exports inside the instance `interface`.
fn exported_functions(engine: &Engine, component: &LoadedComponent, interface: &str) -> Vec<(String, ComponentFunc)> {
    let ty = component.component.component_type();
    let Some(export) = ty.get_export(engine, interface) else { return Vec::new() };
    let ComponentItem::ComponentInstance(instance) = export.ty else { return Vec::new() };
    instance
        .exports(engine)
        .filter_map(|(name, item)| match item.ty {
            ComponentItem::ComponentFunc(func) => Some((name.to_string(), func)),
            _ => None,
        })
        .collect()
}

/// `--step` components first, in command-line order, then the workflow itself.
fn find_provider(engine: &Engine, components: &[LoadedComponent], interface: &str) -> Option<usize> {
    let exports = |index: usize| {
        let ty = components[index].component.component_type();
        matches!(ty.get_export(engine, interface).map(|e| e.ty), Some(ComponentItem::ComponentInstance(_)))
    };
    (1..components.len()).chain([WORKFLOW]).find(|&index| exports(index))
}

/// `func(name: type, ...) -> type`, for error messages.
fn signature(func: &ComponentFunc) -> String {
    let params: Vec<String> = func.params().map(|(name, ty)| format!("{name}: {}", contract::describe(&ty))).collect();
    let results: Vec<String> = func.results().map(|ty| contract::describe(&ty)).collect();
    format!("func({}) -> {}", params.join(", "), results.join(", "))
}

fn same_signature(a: &ComponentFunc, b: &ComponentFunc) -> bool {
    a.params().eq(b.params()) && a.results().eq(b.results())
}

/// Every import must be host-provided or a step interface.
fn check_imports(engine: &Engine, component: &LoadedComponent, step_interfaces: &[&str]) -> Result<(), LinkError> {
    for (name, _) in imported_interfaces(engine, component)? {
        if !is_host_provided(&name) && !step_interfaces.contains(&name.as_str()) {
            return Err(LinkError::UnsupportedImport { component: display(&component.path), name });
        }
    }
    Ok(())
}

/// The functions `workflow` exports, but those of the step interfaces it exports.
fn workflow_exports(engine: &Engine, workflow: &LoadedComponent, step_interfaces: &[&str]) -> Vec<Entry> {
    let ty = workflow.component.component_type();
    let mut candidates = Vec::new();
    for (name, item) in ty.exports(engine) {
        match item.ty {
            ComponentItem::ComponentFunc(func) => {
                candidates.push(Entry { name: name.to_string(), interface: None, function: name.to_string(), func })
            }
            ComponentItem::ComponentInstance(instance) if !step_interfaces.contains(&name) => {
                for (function, item) in instance.exports(engine) {
                    // componentize-py's pre-initialization hook, not a function of the workflow's.
                    if (name, function) == ("exports", "init") {
                        continue;
                    }
                    if let ComponentItem::ComponentFunc(func) = item.ty {
                        candidates.push(Entry {
                            name: format!("{name}.{function}"),
                            interface: Some(name.to_string()),
                            function: function.to_string(),
                            func,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    candidates
}

/// The export `invoke` names, or the only one there is.
pub(super) fn choose_entry(
    candidates: &[Entry],
    workflow_path: &str,
    invoke: Option<&str>,
) -> Result<Entry, LinkError> {
    let workflow_path = workflow_path.to_string();
    let names = || candidates.iter().map(|c| format!("`{}`", c.name)).collect::<Vec<_>>().join(", ");
    match invoke {
        Some(wanted) => {
            let mut matching = candidates.iter().filter(|c| c.name == wanted || c.function == wanted);
            match (matching.next(), matching.next()) {
                (Some(entry), None) => Ok(entry.clone()),
                (Some(_), Some(_)) => Err(LinkError::AmbiguousEntry { workflow: workflow_path, candidates: names() }),
                (None, _) if candidates.is_empty() => Err(LinkError::NoEntry { workflow: workflow_path }),
                (None, _) => Err(LinkError::UnknownEntry {
                    workflow: workflow_path,
                    name: wanted.to_string(),
                    candidates: names(),
                }),
            }
        }
        None => match candidates {
            [] => Err(LinkError::NoEntry { workflow: workflow_path }),
            [entry] => Ok(entry.clone()),
            _ => Err(LinkError::AmbiguousEntry { workflow: workflow_path, candidates: names() }),
        },
    }
}
