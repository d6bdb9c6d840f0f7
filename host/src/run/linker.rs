//! Building the linkers of a plan: each step component's `InstancePre`
//! (WASI, `stepbox:runtime`, `wasi:http`, and stubs for steps it imports), a
//! target per step function, and the workflow's `InstancePre` whose step
//! imports are bridged to the invoker.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use wasmtime::Engine;
use wasmtime::component::{Component, ComponentExportIndex, InstancePre};

use super::concurrent::permit;
use super::context::WorkflowContext;
use super::invoker::{Invoker, StepTarget};
use super::linking::Plan;
use crate::config::StepName;
use crate::config::StepSettings;
use crate::wasm::{self, GuestState, LoadedComponent};

/// A component could not be linked as planned.
#[derive(Debug, thiserror::Error)]
#[error("cannot link {component}: {message}")]
pub struct LinkerError {
    pub component: String,
    pub message: String,
}

impl LinkerError {
    fn new(component: &LoadedComponent, message: impl std::fmt::Display) -> Self {
        Self { component: component.path.display().to_string(), message: message.to_string() }
    }
}

/// The export index of `function` (inside `interface`, if given).
pub fn export_index(component: &Component, interface: Option<&str>, function: &str) -> Option<ComponentExportIndex> {
    let parent = match interface {
        Some(interface) => Some(component.get_export_index(None, interface)?),
        None => None,
    };
    component.get_export_index(parent.as_ref(), function)
}

/// One `InstancePre` per providing component, and a target per step function
/// with the settings of `settings` (by qualified step name).
pub fn step_targets(
    engine: &Engine,
    components: &[LoadedComponent],
    plan: &Plan,
    settings: &BTreeMap<String, StepSettings>,
) -> Result<Vec<Arc<StepTarget>>, LinkerError> {
    let workflow = &components[super::linking::WORKFLOW];
    let mut linker = wasm::step_linker(engine).map_err(|error| LinkerError::new(workflow, format!("{error:#}")))?;
    // A step that imports steps (the one-file case) gets stubs: nested steps are not supported.
    for interface in &plan.interfaces {
        let provider = &components[interface.provider];
        let mut instance =
            linker.instance(&interface.name).map_err(|error| LinkerError::new(provider, format!("{error:#}")))?;
        for function in &interface.functions {
            let name = function.name.to_string();
            instance
                .func_new(&function.name.function, move |store, _, _, _| {
                    let caller = store.data().source().to_string();
                    Err(wasmtime::format_err!(
                        "a step cannot call a step: step `{caller}` called `{name}`; call it from the workflow instead"
                    ))
                })
                .map_err(|error| LinkerError::new(provider, format!("{error:#}")))?;
        }
    }
    // A component that is both the workflow and a step (the one-file case) imports the workflow's
    // context as a step too: its functions fail there, saying why.
    let mut context = linker
        .instance(super::primitives::INTERFACE_VERSIONED)
        .map_err(|error| LinkerError::new(workflow, format!("{error:#}")))?;
    for function in super::primitives::FUNCTIONS {
        context
            .func_new(function, move |store, _, _, _| {
                let caller = store.data().source().to_string();
                Err(wasmtime::format_err!(
                    "a step cannot call `{function}` of stepbox:runtime/workflow-context: step `{caller}` did; \
                     only the workflow sleeps, receives, sends and publishes"
                ))
            })
            .map_err(|error| LinkerError::new(workflow, format!("{error:#}")))?;
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
                    .map_err(|error| LinkerError::new(provider, format!("{error:#}")))?;
                pres.insert(interface.provider, pre.clone());
                pre
            }
        };
        for function in &interface.functions {
            let export = export_index(&provider.component, Some(&interface.name), &function.name.function)
                .ok_or_else(|| LinkerError::new(provider, format!("`{}` is not exported", function.name)))?;
            let step_settings = settings.get(&function.name.to_string()).cloned().ok_or_else(|| {
                LinkerError::new(provider, format!("no settings were recorded for `{}`", function.name))
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
                .ok_or_else(|| LinkerError::new(provider, format!("`{}` returns nothing", function.name)))?;
            targets.push(Arc::new(StepTarget {
                name: function.name.clone(),
                pre: pre.clone(),
                export,
                result_type,
                func: function.func.clone(),
                settings: step_settings,
            }));
        }
    }
    Ok(targets)
}

/// The workflow's `InstancePre`, its step imports bridged to `invoker`: each
/// call takes its slot from the workflow's context in the store.
pub fn workflow_pre(
    engine: &Engine,
    workflow: &LoadedComponent,
    targets: &[Arc<StepTarget>],
    invoker: Arc<Invoker>,
) -> Result<InstancePre<GuestState<WorkflowContext>>, LinkerError> {
    let fail = |error: wasmtime::Error| LinkerError::new(workflow, format!("{error:#}"));
    let mut linker = wasm::base_linker::<WorkflowContext>(engine).map_err(fail)?;
    super::primitives::add_to_linker(&mut linker).map_err(fail)?;
    let mut by_interface: BTreeMap<&str, Vec<(&StepName, &Arc<StepTarget>)>> = BTreeMap::new();
    for target in targets {
        by_interface.entry(&target.name.interface).or_default().push((&target.name, target));
    }
    for (interface, functions) in by_interface {
        let mut instance = linker.instance(interface).map_err(fail)?;
        for (name, target) in functions {
            let invoker = invoker.clone();
            let target = target.clone();
            instance
                .func_new_async(&name.function, move |mut store, _, params, results| {
                    let invoker = invoker.clone();
                    let target = target.clone();
                    Box::new(async move {
                        let context = &mut store.data_mut().context;
                        let (slot, limit) = (context.next_call(), context.calls.limit());
                        let _permit = permit(limit, &slot.interrupt).await.map_err(wasmtime::Error::new)?;
                        let value = invoker.call(slot, &target, params).await.map_err(wasmtime::Error::new)?;
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
