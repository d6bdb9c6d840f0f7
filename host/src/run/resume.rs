//! Continuing and copying workflows from their journal: `resume` runs one
//! again with exactly what it recorded (changed only as asked, each change
//! journaled), `fork` copies its calls up to a step into a new workflow,
//! `recover` resumes every interrupted one nobody owns.

use std::sync::Arc;

use serde_json::Value as Json;

use super::deployment::{Prepared, RecordedOptions, ReplaySeed};
use super::executor::Executor;
use super::runner::{RunError, RunOutcome, Runner, recorded};
use crate::Disposition;
use crate::config::SettingsLayer;
use crate::journal::{Forked, Journal, JournalError, WorkflowStatus};
use crate::wasm::ComponentLoader;

/// How `resume` may deviate from what a workflow recorded.
#[derive(Debug, Clone, Default)]
pub struct ResumeOptions {
    /// Run step components whose files changed since the workflow started.
    pub allow_changed_steps: bool,
    /// Settings that override the recorded ones from now on (journaled).
    pub overrides: SettingsLayer,
}

/// Continues workflow `id` with exactly what it recorded: its components
/// (pinned by digest), entry, settings and arguments, changed only as
/// `options` allow, each change journaled.
pub async fn resume(
    id: &str,
    loader: &ComponentLoader,
    executor: Arc<Executor>,
    options: &ResumeOptions,
) -> Result<RunOutcome, RunError> {
    let journal = executor.journal().clone();
    let existing = journal
        .workflow(id)
        .await?
        .ok_or_else(|| RunError::UnknownWorkflow { id: id.into(), journal: journal.location().into() })?;
    if existing.status != WorkflowStatus::Running {
        if existing.status.is_final() {
            return recorded(existing);
        }
        return Err(RunError::Queued {
            id: id.into(),
            status: existing.status,
            queue: existing.queue.map(|queue| format!(" on queue {queue}")).unwrap_or_default(),
        });
    }
    let recorded_options: RecordedOptions = serde_json::from_value(existing.options.clone())
        .map_err(|error| RunError::UnreadableOptions { id: id.into(), message: error.to_string() })?;
    let mut prepared = Prepared::from_deployment(
        id,
        recorded_options.deployment.clone(),
        loader,
        &journal,
        options.allow_changed_steps,
    )
    .await?;
    let changed = prepared.changed.clone();
    let overridden = prepared.override_settings(&options.overrides)?;
    let runner = Runner::new(prepared, executor.clone())?;
    // One claim: what changed is journaled under it, and the run goes on under it.
    let lease = runner.take_over(&existing).await?;
    for change in &changed {
        tracing::warn!(
            source = "host",
            "Workflow {id}: step component {} changed (sha256 {} -> {}); running the new code as asked",
            change.path.display(),
            change.recorded,
            change.found
        );
        journal
            .record_event(id, "steps-changed", &serde_json::json!({ "changed": [change] }), Some(executor.id()))
            .await?;
    }
    if !overridden.is_empty() {
        tracing::info!(source = "host", "Workflow {id}: new settings for {} from now on", overridden.join(", "));
        let detail = serde_json::json!({ "steps": overridden, "overrides": options.overrides });
        journal.record_event(id, "policy-overridden", &detail, Some(executor.id())).await?;
        for step in &overridden {
            if let Some(settings) = runner.deployment().settings.get(step) {
                journal.set_max_attempts(&lease, step, settings.policy.max_attempts).await?;
            }
        }
    }
    if !changed.is_empty() || !overridden.is_empty() {
        let updated = RecordedOptions { deployment: runner.deployment().clone(), ..recorded_options.clone() };
        journal.update_options(&lease, &serde_json::to_value(&updated).unwrap_or(Json::Null)).await?;
    }
    runner.resume_claimed(&existing, lease, &recorded_options.arguments).await
}

/// Why a fork was refused.
#[derive(Debug, thiserror::Error)]
pub enum ForkError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("no workflow {0} to fork")]
    Unknown(String),
    #[error("a workflow {0} exists already; pick another --id")]
    Exists(String),
    #[error("the step to fork from must be at least 1 (step calls are numbered from 1)")]
    FromStep,
    #[error(
        "step call {seq} of workflow {id} has not finished, so it cannot be copied; fork from step {seq} or earlier"
    )]
    Unfinished { id: String, seq: i64 },
    #[error("the journal of workflow {id} has options this host cannot read: {message}")]
    UnreadableOptions { id: String, message: String },
    #[error("{0}")]
    InvalidId(String),
}

impl ForkError {
    /// What the error means for whoever must act on it.
    pub fn disposition(&self) -> Disposition {
        match self {
            Self::Journal(error) => error.disposition(),
            Self::Unknown(_) => Disposition::NotFound,
            Self::Exists(_) | Self::Unfinished { .. } => Disposition::Conflict,
            Self::FromStep | Self::UnreadableOptions { .. } | Self::InvalidId(_) => Disposition::Refused,
        }
    }
}

/// Forks workflow `id` into `new_id` (a new UUIDv7 if `None`): the same
/// components, settings and arguments, its step calls before `from_step`
/// copied, so it replays them and runs the rest (DBOS's fork). Returns the
/// new id. The new workflow is enqueued on `queue` (else on its original's
/// queue) for workers; with neither, it waits for `host resume`.
pub async fn fork(
    journal: &Journal,
    id: &str,
    from_step: i64,
    new_id: Option<String>,
    queue: Option<&str>,
) -> Result<String, ForkError> {
    if from_step < 1 {
        return Err(ForkError::FromStep);
    }
    let original = journal.workflow(id).await?.ok_or_else(|| ForkError::Unknown(id.into()))?;
    let mut options: RecordedOptions = serde_json::from_value(original.options.clone())
        .map_err(|error| ForkError::UnreadableOptions { id: id.into(), message: error.to_string() })?;
    // The fork replays with its original's clocks and randomness, so the copied calls match.
    options.replay_seed =
        Some(options.replay_seed.unwrap_or(ReplaySeed { id: original.id.clone(), started_at: original.created_at }));
    let new_id = new_id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    crate::config::check_workflow_id(&new_id).map_err(ForkError::InvalidId)?;
    let options = serde_json::to_value(&options).unwrap_or(Json::Null);
    match journal.fork_workflow(id, &new_id, from_step, &options, queue).await? {
        Forked::Forked { copied } => {
            tracing::info!(source = "host", "Workflow {new_id} forked from {id}: {copied} step call(s) copied");
            Ok(new_id)
        }
        Forked::Unknown => Err(ForkError::Unknown(id.into())),
        Forked::Exists => Err(ForkError::Exists(new_id)),
        Forked::Unfinished(seq) => Err(ForkError::Unfinished { id: id.into(), seq }),
    }
}

/// Continues every interrupted workflow of the journal that no live process
/// owns, one after another.
pub async fn recover(
    loader: &ComponentLoader,
    executor: Arc<Executor>,
) -> Result<Vec<(String, Result<RunOutcome, RunError>)>, RunError> {
    let mut results = Vec::new();
    for id in executor.journal().interrupted_workflows().await? {
        tracing::info!(source = "host", "Recovering workflow {id}");
        let result = resume(&id, loader, executor.clone(), &ResumeOptions::default()).await;
        results.push((id, result));
    }
    Ok(results)
}
