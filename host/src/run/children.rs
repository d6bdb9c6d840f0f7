//! Child workflows as a running workflow starts and awaits them
//! (`start-child`, `await-child`): another export of its own component, run
//! with its steps and settings, submitted to a queue as a journaled
//! operation; awaited by reading the child's row, the parent parked on its
//! worker meanwhile and woken by the child's end.

use std::time::Duration;

use serde_json::{Value as Json, json};

use super::context::WorkflowContext;
use super::deployment::{ComponentRef, Deployment, PrepareError, Prepared};
use super::invoker::InvokeError;
use super::linking::{Entry, choose_entry};
use super::primitives::{ChildFailure, ChildOptions, FOREVER, Recorded, poll_interval, wave_string};
use super::runner::new_workflow;
use super::values;
use crate::journal::{
    CallStatus, ChildStart, Journal, JournalError, NewOperation, NewSubmission, Timestamp, WaitKind, Waiting,
    WorkflowRecord, WorkflowStatus,
};
use crate::wasm::ComponentLoader;

/// How long a parked parent waits before it looks at its child again by
/// itself, should the child's end not have woken it (a crash in between).
const LOOK_AGAIN: Duration = Duration::from_secs(60);

/// What a workflow's children are made from: its deployment, the
/// functions its component exports, and the loader of other components.
pub struct ChildPlan {
    deployment: Deployment,
    exports: Vec<Entry>,
    /// The workflow component, as errors name it.
    component: String,
    loader: ComponentLoader,
}

impl ChildPlan {
    /// Children of `deployment`'s workflow, which exports `exports`; `loader` loads other stored components.
    pub fn new(deployment: Deployment, exports: Vec<Entry>, component: String, loader: ComponentLoader) -> Self {
        Self { deployment, exports, component, loader }
    }

    /// Child `id` on `queue`: `entry` of the workflow's own component, or of
    /// the stored `component`, called with `arguments` (a JSON array); or
    /// why the workflow cannot have it. A journal that fails is an error of
    /// its own: the workflow stops, resumable, instead of recording a refusal.
    async fn submission(
        &self,
        journal: &Journal,
        id: String,
        component: Option<&str>,
        entry: &str,
        arguments: &str,
        queue: String,
    ) -> Result<Result<NewSubmission, String>, JournalError> {
        let (deployment, export) = match component {
            None => match choose_entry(&self.exports, &self.component, Some(entry)) {
                Ok(export) => (Deployment { entry: export.name.clone(), ..self.deployment.clone() }, export),
                Err(error) => return Ok(Err(error.to_string())),
            },
            Some(wanted) => match self.other(journal, &id, wanted, entry).await? {
                Ok(found) => found,
                Err(refusal) => return Ok(Err(refusal)),
            },
        };
        Ok(values::from_json_arguments(&export.name, &export.func, arguments).map(|values| {
            let wave: Vec<String> = values.iter().map(values::to_wave).collect();
            NewSubmission {
                workflow: new_workflow(id, &deployment, &values, &wave),
                queue,
                priority: 0,
                partition_key: None,
                dedup_key: None,
                run_at: Timestamp::now(),
                deadline_at: None,
            }
        }))
    }

    /// The deployment of `entry` of the stored component `wanted` (a name or
    /// a digest) with this workflow's steps and settings, and that entry.
    async fn other(
        &self,
        journal: &Journal,
        id: &str,
        wanted: &str,
        entry: &str,
    ) -> Result<Result<(Deployment, Entry), String>, JournalError> {
        let Some((name, digest)) = journal.find_component(wanted).await? else {
            return Ok(Err(format!("no component {wanted} is stored; upload it first (`host upload FILE`)")));
        };
        let deployment = Deployment {
            workflow: ComponentRef { path: name.into(), digest },
            entry: entry.to_string(),
            ..self.deployment.clone()
        };
        match Prepared::from_deployment(id, deployment, &self.loader, journal, false).await {
            Ok(prepared) => Ok(Ok((prepared.deployment, prepared.plan.entry))),
            Err(PrepareError::Journal(error)) => Err(error),
            Err(error) => Ok(Err(format!("{wanted} cannot run as a child of this workflow: {error}"))),
        }
    }
}

impl WorkflowContext {
    /// `start-child`: the child's id, or why it was not started.
    pub(super) async fn start_child(
        &mut self,
        entry: &str,
        arguments: &str,
        options: ChildOptions,
    ) -> Result<Result<String, String>, InvokeError> {
        let input = [
            json!(entry),
            json!(arguments),
            json!(options.component),
            json!(options.id),
            json!(options.queue),
            json!(options.detached),
        ];
        let (operation, recorded) = self.operation("start-child", &input)?;
        if let Some(Recorded(call)) = &recorded
            && call.status != CallStatus::Running
        {
            return Ok(recorded_start(call.output_json.as_ref()));
        }
        let child = match self.child_submission(entry, arguments, &options, operation.seq).await? {
            Ok(child) => child,
            Err(error) => return self.end_start(&operation, recorded.as_ref(), Err(error)).await,
        };
        self.started(&operation, recorded.as_ref()).await?;
        let id = child.workflow.id.clone();
        let result = match self.settled(self.journal.start_child(&self.lease, &child, options.detached)).await? {
            ChildStart::Started => {
                tracing::info!(source = "host", "Workflow {}: started child workflow {id} ({entry})", self.info.id);
                Ok(id)
            }
            ChildStart::IdTaken => Err(format!("the id {id} belongs to another workflow; give the child another")),
        };
        self.end_start(&operation, None, result).await
    }

    /// The child `options` ask for, or why there is none.
    async fn child_submission(
        &self,
        entry: &str,
        arguments: &str,
        options: &ChildOptions,
        seq: i64,
    ) -> Result<Result<NewSubmission, String>, JournalError> {
        let (id, queue) = match self.child_place(options, seq) {
            Ok(place) => place,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let component = options.component.as_deref();
        self.children.submission(&self.journal, id, component, entry, arguments, queue).await
    }

    /// The id and queue of the child `options` ask for, or why it cannot have them.
    fn child_place(&self, options: &ChildOptions, seq: i64) -> Result<(String, String), String> {
        let Some(own_queue) = &self.info.queue else {
            return Err("child workflows run on workers: submit this workflow with `host submit` and run \
                        `host worker` (under `host run` nothing would run the child)"
                .into());
        };
        let id = options.id.clone().unwrap_or_else(|| format!("{}-{seq}", self.info.id));
        crate::config::check_workflow_id(&id).map_err(|error| format!("the child's id: {error}"))?;
        let queue = options.queue.clone().unwrap_or_else(|| own_queue.clone());
        crate::config::check_queue_name(&queue).map_err(|error| format!("the child's queue: {error}"))?;
        Ok((id, queue))
    }

    /// Journals `operation` (a `start-child`) as ended with `result`.
    async fn end_start(
        &self,
        operation: &NewOperation,
        recorded: Option<&Recorded>,
        result: Result<String, String>,
    ) -> Result<Result<String, String>, InvokeError> {
        self.started(operation, recorded).await?;
        let (wave, json) = match &result {
            Ok(id) => (format!("ok({})", wave_string(id)), json!({ "ok": id })),
            Err(error) => (format!("err({})", wave_string(error)), json!({ "err": error })),
        };
        self.settled(self.journal.finish_operation(&self.lease, operation.seq, Some(&wave), &json)).await?;
        Ok(result)
    }

    /// `await-child`: the child's result once it has ended.
    pub(super) async fn await_child(&mut self, id: &str) -> Result<Result<String, ChildFailure>, InvokeError> {
        let (operation, recorded) = self.operation("await-child", &[json!(id)])?;
        if let Some(Recorded(call)) = &recorded
            && call.status != CallStatus::Running
        {
            if let Some(finished_at) = call.finished_at {
                self.clock.advance_to(finished_at.millis());
            }
            return Ok(recorded_outcome(call.output_json.as_ref()));
        }
        self.started(&operation, recorded.as_ref()).await?;
        let poll = poll_interval(self.journal.kind());
        loop {
            let mail = self.mail.clone();
            let mail = mail.notified();
            let row = self.settled(self.journal.workflow(id)).await?;
            if let Some(outcome) = self.outcome(id, row.as_ref()) {
                let (wave, json) = render_outcome(&outcome);
                let finished = self.journal.finish_operation(&self.lease, operation.seq, Some(&wave), &json);
                let finished = self.settled(finished).await?;
                self.clock.advance_to(finished.millis());
                return Ok(outcome);
            }
            let waiting = Waiting {
                kind: WaitKind::Child,
                topic: Some(id.to_string()),
                until: Some(Timestamp::now().plus(LOOK_AGAIN)),
            };
            // A child may take any time: the parent parks whatever its worker's `--park-after`.
            self.may_wait_here(FOREVER, &waiting)?;
            tokio::select! {
                () = mail => {}
                () = tokio::time::sleep(poll) => {}
                reason = self.interrupt.refused() => return Err(InvokeError::Stopped(reason)),
            }
        }
    }

    /// What awaiting workflow `id` (its `row`) gives now; `None` while it runs.
    fn outcome(&self, id: &str, row: Option<&WorkflowRecord>) -> Option<Result<String, ChildFailure>> {
        let failure = |status: &str, message: String| Some(Err(ChildFailure { status: status.into(), message }));
        let Some(row) = row else { return failure("unknown", format!("there is no workflow {id}")) };
        if row.parent_id.as_deref() != Some(self.lease.workflow_id.as_str()) || row.parent_detached {
            let message =
                format!("workflow {id} is not a child this workflow started and awaits (detached ones are not)");
            return failure("not-a-child", message);
        }
        match row.status {
            WorkflowStatus::Succeeded => Some(Ok(row.output_json.clone().unwrap_or(Json::Null).to_string())),
            status if status.is_final() => {
                failure(status.as_column(), row.error.clone().unwrap_or_else(|| status.as_column().to_string()))
            }
            _ => None,
        }
    }
}

/// A journaled `start-child` result, read back.
fn recorded_start(output_json: Option<&Json>) -> Result<String, String> {
    let field = |name: &str| output_json.and_then(|json| json.get(name)).and_then(Json::as_str).map(str::to_string);
    match (field("ok"), field("err")) {
        (Some(id), _) => Ok(id),
        (None, Some(error)) => Err(error),
        (None, None) => Err("the journal's record of this start-child is unreadable".into()),
    }
}

/// An `await-child` result as journaled: WAVE and JSON.
fn render_outcome(outcome: &Result<String, ChildFailure>) -> (String, Json) {
    match outcome {
        Ok(output) => (format!("ok({})", wave_string(output)), json!({ "ok": output })),
        Err(failure) => (
            format!("err({{status: {}, message: {}}})", wave_string(&failure.status), wave_string(&failure.message)),
            json!({ "err": { "status": failure.status, "message": failure.message } }),
        ),
    }
}

/// A journaled `await-child` result, read back.
fn recorded_outcome(output_json: Option<&Json>) -> Result<String, ChildFailure> {
    if let Some(output) = output_json.and_then(|json| json.get("ok")).and_then(Json::as_str) {
        return Ok(output.to_string());
    }
    let err = output_json.and_then(|json| json.get("err"));
    let field = |name: &str| err.and_then(|err| err.get(name)).and_then(Json::as_str).unwrap_or("unknown").to_string();
    Err(ChildFailure { status: field("status"), message: field("message") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_read_back_as_they_were_journaled() {
        for outcome in [
            Ok(r#"{"region":"eu"}"#.to_string()),
            Err(ChildFailure { status: "failed".into(), message: "trapped: \"boom\"".into() }),
        ] {
            let (_, json) = render_outcome(&outcome);
            let back = recorded_outcome(Some(&json));
            match (&outcome, &back) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(a), Err(b)) => assert_eq!((&a.status, &a.message), (&b.status, &b.message)),
                _ => panic!("{back:?} is not {outcome:?}"),
            }
        }
        assert_eq!(render_outcome(&Ok("5".into())).0, r#"ok("5")"#);
        assert_eq!(recorded_start(Some(&json!({ "ok": "p-4" }))), Ok("p-4".to_string()));
        assert_eq!(recorded_start(Some(&json!({ "err": "taken" }))), Err("taken".to_string()));
    }
}
