//! Step calls a workflow starts without waiting for them (`start-call` of
//! `stepbox:runtime/workflow-context`): each takes its place in the
//! workflow's sequence when started (so a resume numbers them alike), runs
//! beside the workflow as a task through the same invoker as a sequential
//! call (retries, limits, grants, journal), at most `max-concurrent-calls` of
//! one workflow at once, and is awaited all together or first-of. Which call
//! came first is journaled as an operation, so a resume gets the same answer.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use serde_json::{Value as Json, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::Instrument as _;
use wasmtime::component::Val;

use super::context::WorkflowContext;
use super::invoker::{InvokeError, Invoker, StepTarget};
use super::values;
use crate::journal::CallStatus;
use crate::wasm::{Interrupt, StopReason};

/// What `start-call` can reach: the deployment's step functions and the invoker that runs them.
pub struct Steps {
    pub invoker: Arc<Invoker>,
    pub targets: Vec<Arc<StepTarget>>,
}

impl Steps {
    /// The step called `name`: its function name, or `interface.function`.
    fn find(&self, name: &str) -> Result<&Arc<StepTarget>, String> {
        let qualified = self.targets.iter().find(|target| target.name.to_string() == name);
        let mut bare = self.targets.iter().filter(|target| target.name.function == name);
        match (qualified, bare.next(), bare.next()) {
            (Some(target), _, _) | (None, Some(target), None) => Ok(target),
            (None, Some(_), Some(_)) => Err(format!(
                "two imported interfaces have a step `{name}`; name it as `interface.function`: {}",
                self.names()
            )),
            (None, None, _) => {
                Err(format!("`{name}` is not a step this workflow imports; it imports: {}", self.names()))
            }
        }
    }

    fn names(&self) -> String {
        let names: Vec<String> = self.targets.iter().map(|target| target.name.to_string()).collect();
        if names.is_empty() { "no steps".to_string() } else { names.join(", ") }
    }
}

/// The calls a workflow started and has not seen end yet, and the limit they share.
pub struct Calls {
    steps: Arc<Steps>,
    /// One permit per call running at once (sequential calls take one too).
    limit: Arc<Semaphore>,
    started: BTreeMap<i64, Started>,
}

/// A started call: running, or ended with its result as JSON text.
enum Started {
    Running(JoinHandle<Result<Val, InvokeError>>),
    Ended(String),
    /// It ended in an error that stopped the workflow; nothing to hand over.
    Failed,
}

impl Calls {
    /// No calls yet; at most `max_concurrent` running at once.
    pub fn new(steps: Arc<Steps>, max_concurrent: u32) -> Self {
        let permits = usize::try_from(max_concurrent.max(1)).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
        Self { steps, limit: Arc::new(Semaphore::new(permits)), started: BTreeMap::new() }
    }

    /// Whether a started call may still be running: then the workflow cannot park.
    pub fn any_running(&self) -> bool {
        self.started.values().any(|call| matches!(call, Started::Running(handle) if !handle.is_finished()))
    }

    /// The limit every call of the workflow shares.
    pub fn limit(&self) -> Arc<Semaphore> {
        self.limit.clone()
    }

    /// Waits until every started call has ended (a workflow ends when its
    /// calls do); the first error of a call nobody awaited (a stop, the
    /// journal, a diverging replay), which the workflow's end must not hide.
    pub async fn drain(&mut self) -> Option<InvokeError> {
        let mut first_error = None;
        for call in self.started.values_mut() {
            if let Started::Running(handle) = call {
                if let Ok(Err(error)) = handle.await {
                    first_error.get_or_insert(error);
                }
                *call = Started::Failed;
            }
        }
        first_error
    }
}

/// A permit of `limit`, unless the workflow must stop first.
pub async fn permit(limit: Arc<Semaphore>, interrupt: &Interrupt) -> Result<OwnedSemaphorePermit, InvokeError> {
    tokio::select! {
        biased;
        reason = interrupt.refused() => Err(InvokeError::Stopped(reason)),
        permit = limit.acquire_owned() => permit.map_err(|_| InvokeError::Stopped(StopReason::Shutdown)),
    }
}

impl WorkflowContext {
    /// `start-call`: numbers the call and starts it; why not, when the step
    /// or its arguments are wrong (nothing is numbered then).
    pub(super) fn start_call(&mut self, step: &str, arguments: &str) -> Result<u64, String> {
        let target = self.calls.steps.find(step)?.clone();
        let function = target.name.to_string();
        let params = values::from_json_arguments(&function, &target.func, arguments)?;
        let mut slot = self.next_call();
        // A started call waits out its backoffs in place: the workflow cannot park while it runs.
        slot.park_after = None;
        let seq = slot.seq;
        let invoker = self.calls.steps.invoker.clone();
        let limit = self.calls.limit.clone();
        let call = async move {
            let _permit = permit(limit, &slot.interrupt).await?;
            invoker.call(slot, &target, &params).await
        };
        // Under the workflow's span, as its sequential calls are.
        let task = tokio::spawn(call.in_current_span());
        self.calls.started.insert(seq, Started::Running(task));
        Ok(u64::try_from(seq).unwrap_or_default())
    }

    /// `await-all`: every call's result as JSON text, in the order asked.
    pub(super) async fn await_all(&mut self, calls: &[u64]) -> wasmtime::Result<Vec<String>> {
        let mut results = Vec::with_capacity(calls.len());
        for &id in calls {
            results.push(self.ended(id, "await-all").await?);
        }
        Ok(results)
    }

    /// `await-first`: the position and result of the first of `calls` to
    /// end, journaled (a replay hands over the recorded winner).
    pub(super) async fn await_first(&mut self, calls: &[u64]) -> wasmtime::Result<(u32, String)> {
        if calls.is_empty() {
            return Err(wasmtime::format_err!("await-first was given no calls; it needs at least one"));
        }
        for &id in calls {
            self.known(id, "await-first")?;
        }
        let ids: Vec<Json> = calls.iter().map(|id| json!(id)).collect();
        let (operation, recorded) = self.operation("await-first", &[Json::Array(ids)]).map_err(wasmtime::Error::new)?;
        let recorded_winner = recorded
            .as_ref()
            .filter(|call| call.0.status != CallStatus::Running)
            .and_then(|call| call.0.output_json.as_ref()?.get("index")?.as_u64())
            .and_then(|index| usize::try_from(index).ok())
            .filter(|&index| index < calls.len());
        let index = match recorded_winner {
            Some(index) => index,
            None => {
                let index = self.first_to_end(calls).await?;
                let wave = format!("{index}");
                let output = json!({ "index": index, "call": calls[index] });
                self.started(&operation, recorded.as_ref()).await.map_err(wasmtime::Error::new)?;
                let finished = self.journal.finish_operation(&self.lease, operation.seq, Some(&wave), &output);
                self.settled(finished).await.map_err(wasmtime::Error::new)?;
                index
            }
        };
        let result = self.ended(calls[index], "await-first").await?;
        Ok((u32::try_from(index).unwrap_or(u32::MAX), result))
    }

    /// Refuses an id no `start-call` of this workflow returned.
    fn known(&self, id: u64, function: &str) -> wasmtime::Result<i64> {
        i64::try_from(id).ok().filter(|seq| self.calls.started.contains_key(seq)).ok_or_else(|| unknown(id, function))
    }

    /// Waits for call `id` to end: its result as JSON text.
    async fn ended(&mut self, id: u64, function: &str) -> wasmtime::Result<String> {
        let call = i64::try_from(id)
            .ok()
            .and_then(|seq| self.calls.started.get_mut(&seq))
            .ok_or_else(|| unknown(id, function))?;
        let joined = match call {
            Started::Ended(result) => return Ok(result.clone()),
            Started::Failed => {
                return Err(wasmtime::format_err!("{function}: call {id} ended in an error already reported"));
            }
            Started::Running(handle) => handle.await,
        };
        let result = finished(joined);
        *call = match &result {
            Ok(text) => Started::Ended(text.clone()),
            Err(_) => Started::Failed,
        };
        result
    }

    /// The position in `calls` of the first to end: one that has already
    /// ended (the first such in `calls`), else whichever task finishes first.
    async fn first_to_end(&mut self, calls: &[u64]) -> wasmtime::Result<usize> {
        let seqs: Vec<i64> = calls.iter().map(|&id| i64::try_from(id).unwrap_or_default()).collect();
        let done = |call: &Started| match call {
            Started::Running(handle) => handle.is_finished(),
            Started::Ended(_) | Started::Failed => true,
        };
        if let Some(index) = seqs.iter().position(|seq| self.calls.started.get(seq).is_some_and(done)) {
            return Ok(index);
        }
        // Every one still runs: whichever task finishes first (by position when several have).
        let mut running: Vec<(usize, &mut JoinHandle<Result<Val, InvokeError>>)> = self
            .calls
            .started
            .iter_mut()
            .filter_map(|(seq, call)| match call {
                Started::Running(handle) => seqs.iter().position(|asked| asked == seq).map(|index| (index, handle)),
                Started::Ended(_) | Started::Failed => None,
            })
            .collect();
        running.sort_by_key(|(index, _)| *index);
        let (index, joined) = std::future::poll_fn(|cx| {
            for (index, handle) in &mut running {
                if let Poll::Ready(joined) = Pin::new(&mut **handle).poll(cx) {
                    return Poll::Ready((*index, joined));
                }
            }
            Poll::Pending
        })
        .await;
        drop(running);
        // A finished handle is never polled again: its end is kept here.
        let result = finished(joined);
        let kept = match &result {
            Ok(text) => Started::Ended(text.clone()),
            Err(_) => Started::Failed,
        };
        self.calls.started.insert(seqs[index], kept);
        result.map(|_| index)
    }
}

/// What `function` says of an id no `start-call` of this workflow returned.
fn unknown(id: u64, function: &str) -> wasmtime::Error {
    wasmtime::format_err!("{function}: no call {id} was started by this workflow (start-call returns the ids)")
}

/// A call task's end as the workflow sees it: the result as JSON text, or the error that stops the workflow.
fn finished(joined: Result<Result<Val, InvokeError>, tokio::task::JoinError>) -> wasmtime::Result<String> {
    match joined {
        Ok(Ok(value)) => Ok(values::to_json(&value).to_string()),
        Ok(Err(error)) => Err(wasmtime::Error::new(error)),
        Err(error) => Err(wasmtime::format_err!("a started call's task failed: {error}")),
    }
}
