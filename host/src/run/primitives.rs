//! `stepbox:runtime/workflow-context` as the host provides it to workflows:
//! `info`, durable `sleep`/`sleep-until`, `recv`, `send` and `set-event`
//! (the calls started with `start-call` are `concurrent`'s).
//! Each call but `info` is a journaled operation in the sequence of the
//! workflow's step calls: on a replay it returns what it recorded, and a call
//! cut short continues where it stood (a sleep waits only what is left).

use std::time::Duration;

use serde_json::{Value as Json, json};
use wasmtime::component::{HasSelf, Linker};

use super::context::WorkflowContext;
use super::invoker::InvokeError;
use crate::journal::{
    BackendKind, CallStatus, JournalError, MessageRecord, NewMessage, NewOperation, Received, SendCall, Sent,
    StepCallRecord, Timestamp, WaitKind, Waiting,
};
use crate::wasm::{GuestState, StopReason};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "stepbox:runtime/workflow",
    imports: { default: async | trappable },
});

use self::stepbox::runtime::workflow_context::{CallId, Host, Message, ScheduleTick, WorkflowInfo as WitInfo};
pub(super) use self::stepbox::runtime::workflow_context::{ChildFailure, ChildOptions};

/// The interface's name, the prefix of its operations' journal rows.
pub const INTERFACE: &str = "stepbox:runtime/workflow-context";

/// The interface as components import it.
pub const INTERFACE_VERSIONED: &str = "stepbox:runtime/workflow-context@0.1.0";

/// Its functions.
pub const FUNCTIONS: [&str; 11] = [
    "info",
    "sleep",
    "sleep-until",
    "recv",
    "send",
    "set-event",
    "start-call",
    "await-all",
    "await-first",
    "start-child",
    "await-child",
];

/// Waits at least this long are waits without an end (`recv` with no timeout).
pub(super) const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How often a `recv` looks for a message no NOTIFY announced.
pub(super) fn poll_interval(kind: BackendKind) -> Duration {
    match kind {
        BackendKind::Sqlite => Duration::from_millis(200),
        BackendKind::Postgres => Duration::from_secs(2),
    }
}

/// Defines `stepbox:runtime/workflow-context` in a workflow's linker.
pub fn add_to_linker(linker: &mut Linker<GuestState<WorkflowContext>>) -> wasmtime::Result<()> {
    self::stepbox::runtime::workflow_context::add_to_linker::<_, HasSelf<_>>(linker, |state| state)
}

impl Host for GuestState<WorkflowContext> {
    async fn info(&mut self) -> wasmtime::Result<WitInfo> {
        let info = &self.context.info;
        Ok(WitInfo {
            id: info.id.clone(),
            name: info.name.clone(),
            queue: info.queue.clone(),
            started_at_ms: unsigned(info.started_at.millis()),
            scheduled: info
                .scheduled
                .as_ref()
                .map(|(schedule, tick)| ScheduleTick { schedule: schedule.clone(), tick_ms: unsigned(tick.millis()) }),
        })
    }

    async fn sleep(&mut self, ms: u64) -> wasmtime::Result<()> {
        self.context.sleep(Sleep::For(ms)).await.map_err(wasmtime::Error::new)
    }

    async fn sleep_until(&mut self, utc_ms: u64) -> wasmtime::Result<()> {
        self.context.sleep(Sleep::Until(utc_ms)).await.map_err(wasmtime::Error::new)
    }

    async fn recv(&mut self, topic: String, timeout_ms: u64) -> wasmtime::Result<Option<Message>> {
        self.context.recv(&topic, timeout_ms).await.map_err(wasmtime::Error::new)
    }

    async fn send(
        &mut self,
        workflow_id: String,
        topic: String,
        value: String,
    ) -> wasmtime::Result<Result<(), String>> {
        self.context.send(&workflow_id, &topic, &value).await.map_err(wasmtime::Error::new)
    }

    async fn set_event(&mut self, key: String, value: String) -> wasmtime::Result<Result<(), String>> {
        self.context.set_event(&key, &value).await.map_err(wasmtime::Error::new)
    }

    async fn start_call(&mut self, step: String, arguments: String) -> wasmtime::Result<Result<CallId, String>> {
        Ok(self.context.start_call(&step, &arguments))
    }

    async fn await_all(&mut self, calls: Vec<CallId>) -> wasmtime::Result<Vec<String>> {
        self.context.await_all(&calls).await
    }

    async fn await_first(&mut self, calls: Vec<CallId>) -> wasmtime::Result<(u32, String)> {
        self.context.await_first(&calls).await
    }

    async fn start_child(
        &mut self,
        entry: String,
        arguments: String,
        options: ChildOptions,
    ) -> wasmtime::Result<Result<String, String>> {
        self.context.start_child(&entry, &arguments, options).await.map_err(wasmtime::Error::new)
    }

    async fn await_child(&mut self, id: String) -> wasmtime::Result<Result<String, ChildFailure>> {
        self.context.await_child(&id).await.map_err(wasmtime::Error::new)
    }
}

/// A sleep's length or end.
#[derive(Debug, Clone, Copy)]
enum Sleep {
    For(u64),
    Until(u64),
}

/// What a replayed (or retried) operation recorded: its status and output.
pub(super) struct Recorded(pub(super) StepCallRecord);

impl WorkflowContext {
    /// Numbers the next operation, `function` with `input`, and checks it
    /// against the journal's row for that position on a replay.
    pub(super) fn operation(
        &mut self,
        function: &str,
        input: &[Json],
    ) -> Result<(NewOperation, Option<Recorded>), InvokeError> {
        let (seq, recorded) = self.next_seq();
        let operation = NewOperation {
            seq,
            name: format!("{INTERFACE}.{function}"),
            input: wave_tuple(input),
            input_json: Json::Array(input.to_vec()),
        };
        match recorded {
            Some(call) if call.step != operation.name || call.input != operation.input => {
                Err(InvokeError::NonDeterminism {
                    workflow_id: self.lease.workflow_id.clone(),
                    seq,
                    recorded: format!("{}{}", call.step, call.input),
                    now: format!("{}{}", operation.name, operation.input),
                })
            }
            Some(call) if call.status == CallStatus::Cancelled => Err(InvokeError::Stopped(StopReason::Cancelled)),
            recorded => Ok((operation, recorded.map(Recorded))),
        }
    }

    /// Waits for a journal write unless the lease goes first.
    pub(super) async fn settled<T>(
        &self,
        write: impl Future<Output = Result<T, JournalError>>,
    ) -> Result<T, InvokeError> {
        tokio::select! {
            biased;
            reason = self.interrupt.lease_gone() => Err(InvokeError::Stopped(reason)),
            written = write => written.map_err(InvokeError::from),
        }
    }

    /// The row of `operation` and its start time: recorded, or written now.
    pub(super) async fn started(
        &self,
        operation: &NewOperation,
        recorded: Option<&Recorded>,
    ) -> Result<Timestamp, InvokeError> {
        match recorded {
            Some(Recorded(call)) => Ok(call.started_at),
            None => self.settled(self.journal.start_operation(&self.lease, operation)).await,
        }
    }

    async fn sleep(&mut self, sleep: Sleep) -> Result<(), InvokeError> {
        let (function, argument) = match sleep {
            Sleep::For(ms) => ("sleep", ms),
            Sleep::Until(utc_ms) => ("sleep-until", utc_ms),
        };
        let (operation, recorded) = self.operation(function, &[json!(argument)])?;
        if let Some(Recorded(call)) = &recorded
            && call.status != CallStatus::Running
        {
            self.clock.advance_to(woke_at(call));
            return Ok(());
        }
        let started = self.started(&operation, recorded.as_ref()).await?;
        let due = match sleep {
            Sleep::For(ms) => started.plus(Duration::from_millis(ms)),
            Sleep::Until(utc_ms) => Timestamp::from_millis(i64::try_from(utc_ms).unwrap_or(i64::MAX)),
        };
        let waiting = Waiting { kind: WaitKind::Sleep, topic: None, until: Some(due) };
        loop {
            let left = due.since(Timestamp::now());
            if left.is_zero() {
                break;
            }
            self.may_wait_here(left, &waiting)?;
            tokio::select! {
                () = tokio::time::sleep(left) => {}
                reason = self.interrupt.refused() => return Err(InvokeError::Stopped(reason)),
            }
        }
        let output = json!({ "woke_at": due.rfc3339() });
        self.settled(self.journal.finish_operation(&self.lease, operation.seq, None, &output)).await?;
        self.clock.advance_to(due.millis());
        Ok(())
    }

    /// A wait of `left` more may hold the workflow's slot, or it parks
    /// (a worker's `--park-after`): [`InvokeError::Waiting`].
    pub(super) fn may_wait_here(&self, left: Duration, waiting: &Waiting) -> Result<(), InvokeError> {
        match self.park_after() {
            Some(threshold) if left > threshold => Err(InvokeError::Waiting(waiting.clone())),
            _ => Ok(()),
        }
    }

    async fn recv(&mut self, topic: &str, timeout_ms: u64) -> Result<Option<Message>, InvokeError> {
        let (operation, recorded) = self.operation("recv", &[json!(topic), json!(timeout_ms)])?;
        if let Some(Recorded(call)) = &recorded
            && call.status != CallStatus::Running
        {
            return Ok(self.received(call.output_json.as_ref(), call.finished_at));
        }
        let started = self.started(&operation, recorded.as_ref()).await?;
        let timeout = Duration::from_millis(timeout_ms);
        let deadline = (timeout < FOREVER).then(|| started.plus(timeout));
        let waiting = Waiting { kind: WaitKind::Message, topic: Some(topic.to_string()), until: deadline };
        let poll = poll_interval(self.journal.kind());
        loop {
            let mail = self.mail.clone();
            let mail = mail.notified();
            let taken = self.journal.receive(&self.lease, operation.seq, topic, render_message);
            match self.settled(taken).await? {
                Received::Message(message) => {
                    let at = message.received_at.unwrap_or(message.sent_at);
                    self.clock.advance_to(at.millis());
                    return Ok(Some(wit_message(&message)));
                }
                Received::Recorded { output_json } => return Ok(self.received(output_json.as_ref(), None)),
                Received::Nothing => {}
            }
            let left = deadline.map_or(FOREVER, |deadline| deadline.since(Timestamp::now()));
            if left.is_zero() {
                let finished =
                    self.settled(self.journal.finish_operation(&self.lease, operation.seq, Some("none"), &Json::Null));
                let finished = finished.await?;
                self.clock.advance_to(finished.millis());
                return Ok(None);
            }
            self.may_wait_here(left, &waiting)?;
            tokio::select! {
                () = mail => {}
                () = tokio::time::sleep(left.min(poll)) => {}
                reason = self.interrupt.refused() => return Err(InvokeError::Stopped(reason)),
            }
        }
    }

    /// A recorded `recv` result, read back (the clock moved on to when it ended).
    fn received(&self, output_json: Option<&Json>, finished_at: Option<Timestamp>) -> Option<Message> {
        if let Some(finished_at) = finished_at {
            self.clock.advance_to(finished_at.millis());
        }
        let message = output_json?;
        Some(Message {
            value: message.get("value")?.as_str()?.to_string(),
            sender: message.get("sender")?.as_str()?.to_string(),
            sent_at_ms: message.get("sent_at_ms")?.as_u64()?,
        })
    }

    async fn send(&mut self, to: &str, topic: &str, value: &str) -> Result<Result<(), String>, InvokeError> {
        let (operation, recorded) = self.operation("send", &[json!(to), json!(topic), json!(value)])?;
        if let Some(Recorded(call)) = &recorded
            && call.status != CallStatus::Running
        {
            return Ok(recorded_result(call.output_json.as_ref()));
        }
        if let Err(error) = check_json(value) {
            return self.end_with(&operation, recorded.as_ref(), Err(error)).await;
        }
        let message = NewMessage {
            workflow_id: to.to_string(),
            topic: topic.to_string(),
            value: value.to_string(),
            sender: self.info.id.clone(),
            idempotency_key: Some(format!("{}/{}", self.lease.workflow_id, operation.seq)),
        };
        let call = SendCall { lease: &self.lease, operation: &operation };
        let sent = self.journal.send_message(&message, Some(call), |sent| render_result(&send_result(to, sent)));
        Ok(match self.settled(sent).await? {
            Sent::Recorded { output_json } => recorded_result(output_json.as_ref()),
            sent => send_result(to, &sent),
        })
    }

    async fn set_event(&mut self, key: &str, value: &str) -> Result<Result<(), String>, InvokeError> {
        let (operation, recorded) = self.operation("set-event", &[json!(key), json!(value)])?;
        if let Some(Recorded(call)) = &recorded
            && call.status != CallStatus::Running
        {
            return Ok(recorded_result(call.output_json.as_ref()));
        }
        if let Err(error) = check_json(value) {
            return self.end_with(&operation, recorded.as_ref(), Err(error)).await;
        }
        self.settled(self.journal.set_event(&self.lease, &operation, key, value)).await?;
        Ok(Ok(()))
    }

    /// Journals `operation` as ended with `result` (a value refused before it was used).
    async fn end_with(
        &self,
        operation: &NewOperation,
        recorded: Option<&Recorded>,
        result: Result<(), String>,
    ) -> Result<Result<(), String>, InvokeError> {
        self.started(operation, recorded).await?;
        let (wave, json) = render_result(&result);
        self.settled(self.journal.finish_operation(&self.lease, operation.seq, Some(&wave), &json)).await?;
        Ok(result)
    }
}

/// Whether `value` is JSON text; why not, if it is not.
fn check_json(value: &str) -> Result<(), String> {
    serde_json::from_str::<serde::de::IgnoredAny>(value)
        .map(drop)
        .map_err(|error| format!("the value is not JSON text ({error})"))
}

/// What a workflow's `send` returns for what the journal did.
fn send_result(to: &str, sent: &Sent) -> Result<(), String> {
    match sent {
        Sent::Delivered { .. } | Sent::Duplicate { .. } => Ok(()),
        Sent::Unknown => Err(format!("no workflow {to} to send to")),
        Sent::Ended { status } => Err(format!("workflow {to} has ended ({status}); nobody will receive it")),
        Sent::Recorded { output_json } => recorded_result(output_json.as_ref()),
    }
}

/// A `result<_, string>` as journaled: WAVE and JSON.
fn render_result(result: &Result<(), String>) -> (String, Json) {
    match result {
        Ok(()) => ("ok".to_string(), json!({ "ok": null })),
        Err(error) => (format!("err({})", wave_string(error)), json!({ "err": error })),
    }
}

/// A journaled `result<_, string>`, read back.
fn recorded_result(output_json: Option<&Json>) -> Result<(), String> {
    match output_json.and_then(|json| json.get("err")).and_then(Json::as_str) {
        Some(error) => Err(error.to_string()),
        None => Ok(()),
    }
}

/// A received message as journaled: WAVE of `option<message>` and JSON.
fn render_message(message: &MessageRecord) -> (String, Json) {
    let wave = format!(
        "some({{value: {}, sender: {}, sent-at-ms: {}}})",
        wave_string(&message.value),
        wave_string(&message.sender),
        message.sent_at.millis()
    );
    let json = json!({
        "value": message.value,
        "sender": message.sender,
        "sent_at_ms": unsigned(message.sent_at.millis()),
    });
    (wave, json)
}

fn wit_message(message: &MessageRecord) -> Message {
    Message {
        value: message.value.clone(),
        sender: message.sender.clone(),
        sent_at_ms: unsigned(message.sent_at.millis()),
    }
}

/// When a recorded sleep ended: its due time, else its row's end.
fn woke_at(call: &StepCallRecord) -> i64 {
    let due = call
        .output_json
        .as_ref()
        .and_then(|json| json.get("woke_at"))
        .and_then(Json::as_str)
        .and_then(|text| Timestamp::parse_rfc3339(text).ok());
    due.or(call.finished_at).map_or(0, Timestamp::millis)
}

/// Arguments as a WAVE tuple: strings quoted, numbers as they are.
fn wave_tuple(values: &[Json]) -> String {
    let items: Vec<String> = values
        .iter()
        .map(|value| match value {
            Json::String(text) => wave_string(text),
            other => other.to_string(),
        })
        .collect();
    format!("({})", items.join(", "))
}

/// A WAVE string literal.
pub(super) fn wave_string(text: &str) -> String {
    super::values::to_wave(&wasmtime::component::Val::String(text.to_string()))
}

fn unsigned(millis: i64) -> u64 {
    u64::try_from(millis).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_and_results_are_journaled_as_wave_and_json() {
        assert_eq!(wave_tuple(&[json!("orders"), json!(5000)]), r#"("orders", 5000)"#);
        assert_eq!(wave_string("say \"hi\"\n"), r#""say \"hi\"\n""#);
        assert_eq!(render_result(&Ok(())), ("ok".to_string(), json!({ "ok": null })));
        let (wave, json) = render_result(&Err("no workflow x".into()));
        assert_eq!((wave.as_str(), json), (r#"err("no workflow x")"#, json!({ "err": "no workflow x" })));
        assert_eq!(recorded_result(Some(&json!({ "err": "gone" }))), Err("gone".to_string()));
        assert_eq!(recorded_result(Some(&json!({ "ok": null }))), Ok(()));
    }

    /// The functions stubbed for steps are the interface's, and its version is the package's.
    #[test]
    fn the_stubbed_functions_are_the_interfaces() {
        let wit = include_str!("../../../wit/runtime.wit");
        let body = wit.split("interface workflow-context {").nth(1).and_then(|rest| rest.split("\n}").next()).unwrap();
        let functions: Vec<&str> =
            body.lines().filter_map(|line| line.trim().split_once(": func(")).map(|(name, _)| name).collect();
        assert_eq!(functions, FUNCTIONS);
        assert!(wit.contains(&format!("package stepbox:runtime@{};", INTERFACE_VERSIONED.rsplit('@').next().unwrap())));
    }

    #[test]
    fn a_value_must_be_json_text() {
        assert!(check_json(r#"{"approved": true}"#).is_ok());
        assert!(check_json("42").is_ok());
        let error = check_json("{approved").unwrap_err();
        assert!(error.starts_with("the value is not JSON text"), "{error}");
    }
}
