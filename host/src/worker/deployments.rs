//! The runners of one worker, one per deployment it has met (a workflow
//! component, its steps and settings, pinned by digest): loaded from the
//! journal's stored components the first time a workflow of it is claimed,
//! then shared by every later workflow of the same deployment. Loading one
//! deployment (compiling takes seconds) never holds up workflows of others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OnceCell;

use crate::journal::WorkflowRecord;
use crate::run::{Executor, Prepared, RecordedOptions, RunError, Runner};
use crate::wasm::ComponentLoader;

/// Deployments kept linked at once; past it the cache starts over.
const MAX_DEPLOYMENTS: usize = 64;

/// A deployment's runner, once loaded: whoever loads it first does, the others wait for that.
type Slot = Arc<OnceCell<Arc<Runner>>>;

/// A worker's runners by deployment.
pub(super) struct Deployments {
    executor: Arc<Executor>,
    loader: ComponentLoader,
    /// Held only to find a deployment's slot, never while one loads.
    runners: Mutex<HashMap<String, Slot>>,
}

impl Deployments {
    pub(super) fn new(executor: Arc<Executor>, loader: ComponentLoader) -> Self {
        Self { executor, loader, runners: Mutex::default() }
    }

    /// The runner for `workflow`'s recorded deployment.
    pub(super) async fn runner(&self, workflow: &WorkflowRecord) -> Result<Arc<Runner>, RunError> {
        let options: RecordedOptions = serde_json::from_value(workflow.options.clone())
            .map_err(|error| RunError::UnreadableOptions { id: workflow.id.clone(), message: error.to_string() })?;
        let key = serde_json::to_string(&options.deployment).unwrap_or_default();
        let slot = {
            let mut runners = self.runners.lock().unwrap_or_else(PoisonError::into_inner);
            if runners.len() >= MAX_DEPLOYMENTS && !runners.contains_key(&key) {
                runners.clear();
            }
            runners.entry(key).or_default().clone()
        };
        let runner = slot
            .get_or_try_init(|| async {
                let journal = self.executor.journal();
                let prepared =
                    Prepared::from_deployment(&workflow.id, options.deployment, &self.loader, journal, false).await?;
                Ok::<_, RunError>(Arc::new(Runner::new(prepared, self.executor.clone())?))
            })
            .await?;
        Ok(runner.clone())
    }
}
