//! The runners of one worker, one per deployment it has met (a workflow
//! component, its steps and settings, pinned by digest): loaded from the
//! journal's stored components the first time a workflow of it is claimed,
//! then shared by every later workflow of the same deployment.

use std::collections::HashMap;
use std::sync::Arc;

use crate::journal::WorkflowRecord;
use crate::run::{Executor, Prepared, RecordedOptions, RunError, Runner};
use crate::wasm::ComponentLoader;

/// Deployments kept linked at once; past it the cache starts over.
const MAX_DEPLOYMENTS: usize = 64;

/// A worker's runners by deployment.
pub(super) struct Deployments {
    executor: Arc<Executor>,
    loader: ComponentLoader,
    /// Held while a deployment loads, so one is never loaded twice at once.
    runners: tokio::sync::Mutex<HashMap<String, Arc<Runner>>>,
}

impl Deployments {
    pub(super) fn new(executor: Arc<Executor>, loader: ComponentLoader) -> Self {
        Self { executor, loader, runners: tokio::sync::Mutex::default() }
    }

    /// The runner for `workflow`'s recorded deployment.
    pub(super) async fn runner(&self, workflow: &WorkflowRecord) -> Result<Arc<Runner>, RunError> {
        let options: RecordedOptions = serde_json::from_value(workflow.options.clone())
            .map_err(|error| RunError::UnreadableOptions { id: workflow.id.clone(), message: error.to_string() })?;
        let key = serde_json::to_string(&options.deployment).unwrap_or_default();
        let mut runners = self.runners.lock().await;
        if let Some(runner) = runners.get(&key) {
            return Ok(runner.clone());
        }
        let journal = self.executor.journal();
        let prepared =
            Prepared::from_deployment(&workflow.id, options.deployment, &self.loader, journal, false).await?;
        let runner = Arc::new(Runner::new(prepared, self.executor.clone())?);
        if runners.len() >= MAX_DEPLOYMENTS {
            runners.clear();
        }
        runners.insert(key, runner.clone());
        Ok(runner)
    }
}
