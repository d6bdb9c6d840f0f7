//! One guest instance's world: a fresh `Store` with a WASI context that
//! grants only what the step's grants say, captured stdout/stderr and log
//! lines, memory and instance limits, an epoch deadline, and the workflow's
//! stop flag. Knows wasmtime, nothing of SQL or retries.

use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::component::{ComponentExportIndex, Instance, InstancePre, ResourceTable, Val};
use wasmtime::{CallHook, Engine, ResourceLimiter, Store, Trap, UpdateDeadline, WasmBacktrace};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::capture::{Capture, LogBudget};
use super::deterministic::{WorkflowClock, make_deterministic};
use super::engine::POOL_COMPONENT_INSTANCES;
use super::http_grant::HttpGrant;
use super::interrupt::{Interrupt, StopReason};
use crate::config::{AttemptLimits, Grants, RetryPolicy, Stdio};
use crate::journal::FailureKind;

/// What a running step knows about itself (`stepbox:runtime/step-context`).
#[derive(Debug, Clone)]
pub struct StepIdentity {
    pub workflow_id: String,
    /// Qualified step name.
    pub step: String,
    pub attempt: u32,
    pub policy: RetryPolicy,
    pub limits: AttemptLimits,
}

/// Who runs in a store: a workflow (which may call steps) or one step attempt.
#[derive(Debug, Clone)]
pub enum Identity {
    Workflow { workflow_id: String },
    Step(StepIdentity),
}

/// Denies memory growth past the limit (and remembers that it did), and
/// bounds tables and instance counts.
struct MemoryLimiter {
    max_memory_bytes: u64,
    denied: bool,
}

/// Table elements, instances, tables and memories one store may have: far
/// above what real components use (a Python component has a handful of
/// instances), far below what exhausts the host.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;
const MAX_INSTANCES: usize = 64;
const MAX_TABLES: usize = 64;
const MAX_MEMORIES: usize = 16;

/// The least hostcall fuel a step store gets (wasmtime's default): what a
/// guest may copy to the host in one call, a log message or a WASI write.
const MIN_HOSTCALL_FUEL: usize = 128 << 20;

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = u64::try_from(desired).is_ok_and(|desired| desired <= self.max_memory_bytes);
        self.denied |= !allowed;
        Ok(allowed)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// The data of every guest store; a workflow's also carries its run
/// context `C` (what the run side keeps of it while it runs), which the
/// host functions it calls find there.
pub struct GuestState<C = ()> {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    http_grant: HttpGrant,
    table: ResourceTable,
    limiter: MemoryLimiter,
    stdout: Capture,
    stderr: Capture,
    log: LogBudget,
    pub identity: Identity,
    pub context: C,
}

impl<C: Send> WasiView for GuestState<C> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl<C: Send> WasiHttpView for GuestState<C> {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.http_grant }
    }
}

impl<C> GuestState<C> {
    fn new(
        wasi: WasiCtx,
        http_grant: HttpGrant,
        limiter: MemoryLimiter,
        output: (Capture, Capture),
        log: LogBudget,
        identity: Identity,
        context: C,
    ) -> Self {
        let (stdout, stderr) = output;
        Self {
            wasi,
            http: WasiHttpCtx::new(),
            http_grant,
            table: ResourceTable::new(),
            limiter,
            stdout,
            stderr,
            log,
            identity,
            context,
        }
    }

    /// The label guest log lines are shown with: `workflow` or the step's name.
    pub fn source(&self) -> &str {
        match &self.identity {
            Identity::Workflow { .. } => "workflow",
            Identity::Step(step) => step.step.rsplit('.').next().unwrap_or(&step.step),
        }
    }

    /// What the guest wrote to stderr (when captured), lossily decoded.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Whether a log message of `bytes` fits the store's log budget (what
    /// is over it is counted, and noted once).
    pub(super) fn admit_log(&mut self, bytes: usize) -> bool {
        self.log.admit(bytes)
    }
}

/// An attempt that did not return a value.
#[derive(Debug, Clone)]
pub struct CallFailure {
    pub kind: FailureKind,
    /// What happened: the trap with the guest's stderr and wasm backtrace, or the limit hit.
    pub message: String,
}

/// One attempt: its value or failure, and the output it wrote (when captured).
#[derive(Debug)]
pub struct AttemptReport {
    pub result: Result<Val, CallFailure>,
    pub stdout: String,
    pub stderr: String,
    /// A note of the log bytes over the attempt's budget (already shown once in the log).
    pub log_note: Option<String>,
}

/// Creates stores for guests.
#[derive(Clone)]
pub struct Sandbox {
    engine: Engine,
}

/// Step attempts that may hold an instance at once: the half of the engine's
/// pool that workflows never take (`MAX_RUNNING_WORKFLOWS` is the other
/// half). Attempts take turns first come, first served, so the many calls of
/// one workflow queue behind, not ahead of, the calls of the others.
static STEP_INSTANCES: Semaphore = Semaphore::const_new(POOL_COMPONENT_INSTANCES as usize / 2);

/// Output a workflow may write: captured, never granted anything else.
const WORKFLOW_OUTPUT_BYTES: usize = 64 << 10;
/// Log bytes a workflow may emit over its run (steps: their output limit per attempt).
const WORKFLOW_LOG_BYTES: u64 = 1 << 20;

impl Sandbox {
    /// A sandbox on `engine`.
    pub fn new(engine: &Engine) -> Self {
        Self { engine: engine.clone() }
    }

    /// A workflow's store: nothing granted, output captured, clocks and
    /// randomness deterministic; not timed, but it yields every tick and
    /// traps once `interrupt` asks it to stop. It carries `context`.
    /// Its randomness derives from `seed_id` (its own id, or its original's
    /// for a fork), its wall clock reads `clock`.
    pub fn workflow_store<C: Send + 'static>(
        &self,
        workflow_id: &str,
        seed_id: &str,
        clock: WorkflowClock,
        interrupt: Interrupt,
        context: C,
    ) -> Store<GuestState<C>> {
        let stdout = Capture::new(WORKFLOW_OUTPUT_BYTES);
        let stderr = Capture::new(WORKFLOW_OUTPUT_BYTES);
        let mut builder = base_wasi(&stdout, &stderr);
        make_deterministic(&mut builder, seed_id, clock);
        let identity = Identity::Workflow { workflow_id: workflow_id.to_string() };
        let limiter = MemoryLimiter { max_memory_bytes: AttemptLimits::default().max_memory_bytes, denied: false };
        let log = LogBudget::new(WORKFLOW_LOG_BYTES);
        let state =
            GuestState::new(builder.build(), HttpGrant::default(), limiter, (stdout, stderr), log, identity, context);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        stop_at_host_calls(&mut store, interrupt.clone());
        store.epoch_deadline_callback(move |_| {
            Ok(if interrupt.reason().is_some() { UpdateDeadline::Interrupt } else { UpdateDeadline::Yield(1) })
        });
        store.set_epoch_deadline(1);
        store
    }

    /// A step attempt's store: only `grants`, within `identity.limits`.
    fn step_store(
        &self,
        identity: StepIdentity,
        grants: &Grants,
        interrupt: Interrupt,
    ) -> wasmtime::Result<Store<GuestState>> {
        let limits = identity.limits;
        let output_limit = usize::try_from(limits.max_output_bytes).unwrap_or(usize::MAX);
        let (stdout, stderr) = (Capture::new(output_limit), Capture::new(output_limit));
        let mut builder = base_wasi(&stdout, &stderr);
        if grants.stdout == Stdio::Inherit {
            builder.inherit_stdout();
        }
        if grants.stderr == Stdio::Inherit {
            builder.inherit_stderr();
        }
        grant(&mut builder, grants)?;
        let limiter = MemoryLimiter { max_memory_bytes: limits.max_memory_bytes, denied: false };
        let http_grant = HttpGrant::new(grants.http.clone());
        let log = LogBudget::new(limits.max_output_bytes);
        let state =
            GuestState::new(builder.build(), http_grant, limiter, (stdout, stderr), log, Identity::Step(identity), ());
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        // What the guest may copy to the host in one call, the result included:
        // a value that runs out of it is over the result limit.
        let fuel = usize::try_from(limits.max_result_bytes)
            .unwrap_or(usize::MAX)
            .saturating_mul(size_of::<Val>())
            .max(MIN_HOSTCALL_FUEL);
        store.set_hostcall_fuel(fuel);
        stop_at_host_calls(&mut store, interrupt.clone());
        // Every tick, a running guest yields to the async runtime (so a busy
        // step never starves other workflows or the lease heartbeat on its
        // thread) and is interrupted once its time is up or it must stop.
        let deadline = Instant::now() + limits.timeout;
        store.epoch_deadline_callback(move |_| {
            let stop = interrupt.reason().is_some() || Instant::now() >= deadline;
            Ok(if stop { UpdateDeadline::Interrupt } else { UpdateDeadline::Yield(1) })
        });
        store.set_epoch_deadline(1);
        Ok(store)
    }

    /// Runs one step attempt in a brand-new instance; `interrupt` stops it
    /// early (the failure then says why).
    pub async fn call_step(
        &self,
        pre: &InstancePre<GuestState>,
        function: &ComponentExportIndex,
        identity: StepIdentity,
        grants: &Grants,
        params: &[Val],
        interrupt: &Interrupt,
    ) -> AttemptReport {
        let limits = identity.limits;
        // Its turn for an instance first (not counted in its time limit).
        let _turn = tokio::select! {
            biased;
            reason = interrupt.stopped() => {
                let result = Err(stopped(reason, String::new()));
                return AttemptReport { result, stdout: String::new(), stderr: String::new(), log_note: None };
            }
            turn = STEP_INSTANCES.acquire() => turn.ok(),
        };
        let mut store = match self.step_store(identity, grants, interrupt.clone()) {
            Ok(store) => store,
            Err(error) => {
                let failure = CallFailure {
                    kind: FailureKind::Trapped,
                    message: format!("cannot set up the attempt: {error:#}"),
                };
                return AttemptReport {
                    result: Err(failure),
                    stdout: String::new(),
                    stderr: String::new(),
                    log_note: None,
                };
            }
        };
        let call = async {
            let instance = instantiate_when_free(pre, &mut store).await?;
            let func = instance
                .get_func(&mut store, function)
                .ok_or_else(|| wasmtime::format_err!("the step function is not exported"))?;
            let mut results = vec![Val::Bool(false); func.ty(&store).results().len()];
            func.call_async(&mut store, params, &mut results).await?;
            results.pop().ok_or_else(|| wasmtime::format_err!("the step function returned no value"))
        };
        // The epoch deadline stops guest code; these also stop waits in host calls.
        // The stop first: woken at once (after a stop of the process), the attempt ends before the guest goes on.
        let outcome = tokio::select! {
            biased;
            reason = interrupt.stopped() => Err(Some(reason)),
            outcome = tokio::time::timeout(limits.timeout, call) => outcome.map_err(|_| None),
        };
        let result = match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(failure(&store, &error, &limits, interrupt.reason())),
            Err(None) => Err(CallFailure {
                kind: FailureKind::TimedOut,
                message: format!("the attempt did not finish within {}", humantime::format_duration(limits.timeout)),
            }),
            Err(Some(reason)) => Err(stopped(reason, String::new())),
        };
        let state = store.data();
        let log_note = state.log.note();
        if let Some(note) = &log_note {
            tracing::warn!(source = state.source(), "{note}");
        }
        AttemptReport { result, stdout: state.stdout.text(), stderr: state.stderr.text(), log_note }
    }
}

/// Traps the guest at its next call into the host, and as any host call
/// returns, once the workflow's lease is gone or past its local deadline:
/// no side effect (a file written, a request sent, a step started) happens
/// after this process may have lost the workflow, even in the moment between
/// waking from a stop and the next epoch tick.
fn stop_at_host_calls<C: 'static>(store: &mut Store<GuestState<C>>, interrupt: Interrupt) {
    store.call_hook(move |_, hook| match hook {
        CallHook::CallingHost | CallHook::ReturningFromHost
            if interrupt.reason().is_some_and(StopReason::lease_gone) =>
        {
            Err(Trap::Interrupt.into())
        }
        _ => Ok(()),
    });
}

/// Instantiates `pre`, waiting while the engine's instance pool is full: a
/// host out of instance slots is back-pressure, not a failed attempt (the
/// attempt's timeout still bounds the wait).
pub async fn instantiate_when_free<C: Send + 'static>(
    pre: &InstancePre<GuestState<C>>,
    store: &mut Store<GuestState<C>>,
) -> wasmtime::Result<Instance> {
    let mut pause = Duration::from_micros(200);
    loop {
        match pre.instantiate_async(&mut *store).await {
            Err(error) if error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

/// Adds a step's granted directories and environment variables to its WASI context.
fn grant(builder: &mut WasiCtxBuilder, grants: &Grants) -> wasmtime::Result<()> {
    for dir in &grants.dirs {
        let perms = if dir.write { FsPerms::ReadWrite } else { FsPerms::ReadOnly };
        builder.preopened_dir(&dir.host, &dir.guest, perms)?;
    }
    for name in &grants.env {
        if let Ok(value) = std::env::var(name) {
            builder.env(name, value);
        }
    }
    Ok(())
}

/// WASI with nothing granted: no files, env, sockets or name lookups; output to `stdout`/`stderr`.
fn base_wasi(stdout: &Capture, stderr: &Capture) -> WasiCtxBuilder {
    let mut builder = WasiCtxBuilder::new();
    builder.stdout(stdout.clone()).stderr(stderr.clone()).allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
    builder
}

/// The failure of an attempt that had to stop for `reason`.
fn stopped(reason: StopReason, detail: String) -> CallFailure {
    let (kind, message) = match reason {
        StopReason::Cancelled => (FailureKind::Cancelled, "the workflow was cancelled during the attempt"),
        StopReason::Deadline => (FailureKind::Cancelled, "the workflow reached its deadline during the attempt"),
        StopReason::Shutdown => (FailureKind::Interrupted, "the host was asked to stop during the attempt"),
        StopReason::LeaseLost => {
            (FailureKind::Interrupted, "this process lost the workflow's lease during the attempt")
        }
        StopReason::LeaseExpired => (
            FailureKind::Interrupted,
            "this process could not renew the workflow's lease in time and stopped the attempt before it could lapse",
        ),
    };
    let message = if detail.is_empty() { message.to_string() } else { format!("{message}\n{detail}") };
    CallFailure { kind, message }
}

/// Marks of wasmtime's refusal to copy more than the hostcall fuel allows.
const FUEL_EXHAUSTED: &str = "too much data is being copied between the host and the guest";

fn failure(
    store: &Store<GuestState>,
    error: &wasmtime::Error,
    limits: &AttemptLimits,
    stop: Option<StopReason>,
) -> CallFailure {
    let interrupted = matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt));
    let message = describe_error(error, store.data());
    if let (true, Some(reason)) = (interrupted, stop) {
        return stopped(reason, message);
    }
    if interrupted {
        return CallFailure {
            kind: FailureKind::TimedOut,
            message: format!(
                "the attempt did not finish within {} (interrupted)\n{message}",
                humantime::format_duration(limits.timeout)
            ),
        };
    }
    if store.data().limiter.denied {
        let limit = bytesize::ByteSize::b(limits.max_memory_bytes).display().iec();
        return CallFailure {
            kind: FailureKind::OutOfMemory,
            message: format!("the attempt tried to grow its memory past {limit}\n{message}"),
        };
    }
    // Out of fuel with no guest frame on the stack: lifting the step's result.
    let lifting_result = error.downcast_ref::<WasmBacktrace>().is_none();
    if lifting_result && error.chain().any(|cause| cause.to_string().contains(FUEL_EXHAUSTED)) {
        return CallFailure {
            kind: FailureKind::ResultTooLarge,
            message: format!(
                "the step handed the host more data than its result limit of {} bytes allows",
                limits.max_result_bytes
            ),
        };
    }
    CallFailure { kind: FailureKind::Trapped, message }
}

/// The error's causes on one line, what the guest wrote to stderr, then its
/// wasm backtrace if it trapped.
pub fn describe_error<C>(error: &wasmtime::Error, state: &GuestState<C>) -> String {
    let backtrace = error.downcast_ref::<WasmBacktrace>().map(ToString::to_string);
    let causes: Vec<String> =
        error.chain().map(ToString::to_string).filter(|cause| Some(cause) != backtrace.as_ref()).collect();
    let mut message = match explain_javascript(&state.stderr()) {
        Some(explained) => format!("{explained}\n{}", causes.join(": ")),
        None => causes.join(": "),
    };
    let stderr = state.stderr();
    if !stderr.is_empty() && !message.contains(stderr.trim()) {
        message.push_str("\nstderr:\n");
        message.push_str(&stderr);
    }
    if let Some(backtrace) = backtrace {
        message.push('\n');
        message.push_str(backtrace.trim_end());
    }
    message
}

/// A JavaScript step (componentize-js) that throws something other than a
/// case of its error variant traps in the bindings, whose message names the
/// value thrown but whose stack is the bindings'; says so in the author's terms.
fn explain_javascript(stderr: &str) -> Option<String> {
    let rest = stderr.split("invalid variant tag value `undefined` (received `").nth(1)?;
    let (thrown, rest) = rest.split_once("`) specified for `")?;
    let (variant, _) = rest.split_once('`')?;
    Some(format!(
        "the JavaScript step threw `{thrown}`, which is not a case of `{variant}`, so the call trapped (the stack \
         below is componentize-js's bindings, not your file). Throw `{{ tag: 'failed', val: String(error.stack) }}` \
         to hand the host a retryable error with your stack, or `{{ tag: 'permanent', val: ... }}` for one it must \
         not retry"
    ))
}

#[cfg(test)]
mod tests {
    use super::explain_javascript;

    #[test]
    fn a_javascript_throw_that_is_not_a_variant_case_is_explained() {
        let stderr = "invalid variant tag value `undefined` (received `Error: disk on fire`) specified for `StepError`\n\
                      Stack:\n  export_steps$crash@/tmp/x/sources/initializer.js:583:17";
        let explained = explain_javascript(stderr).unwrap();
        assert!(
            explained
                .starts_with("the JavaScript step threw `Error: disk on fire`, which is not a case of `StepError`")
        );
        assert_eq!(explain_javascript("panicked at src/lib.rs:3:5"), None);
    }
}
