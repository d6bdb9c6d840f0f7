//! One guest instance's world: a fresh `Store` with a WASI context that
//! grants only what the step's grants say, captured stdout/stderr, memory and
//! instance limits and an epoch deadline. Knows wasmtime, nothing of SQL or
//! retries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::SeedableRng as _;
use rand::rngs::StdRng;
use sha2::{Digest as _, Sha256};

use wasmtime::component::{ComponentExportIndex, Instance, InstancePre, ResourceTable, Val};
use wasmtime::{Engine, ResourceLimiter, Store, Trap, UpdateDeadline, WasmBacktrace};
use wasmtime_wasi::{FsPerms, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::capture::Capture;
use crate::engine;
use crate::grants::{Grants, Stdio};
use crate::http_grant::HttpGrant;
use crate::limits::AttemptLimits;
use crate::retry::RetryPolicy;

/// What a running step knows about itself (`stepbox:runtime/step-context`).
#[derive(Debug, Clone)]
pub struct StepStatus {
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
    Workflow { workflow_id: String, next_seq: i64 },
    Step(StepStatus),
}

/// A workflow's wall clock: the time it first started, on every replay.
struct FrozenWallClock(Duration);

impl HostWallClock for FrozenWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        self.0
    }
}

/// A workflow's monotonic clock: advances 1 ms per reading, the same on every replay.
#[derive(Default)]
struct ReplayMonotonicClock(AtomicU64);

impl HostMonotonicClock for ReplayMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }

    fn now(&self) -> u64 {
        self.0.fetch_add(1_000_000, Ordering::Relaxed)
    }
}

/// Workflows get no ambient nondeterminism: clocks and randomness derive from
/// the workflow id and start time, so a replay takes the same path.
fn make_deterministic(builder: &mut WasiCtxBuilder, workflow_id: &str, started_at_ms: i64) {
    let seed: [u8; 32] = Sha256::digest(workflow_id.as_bytes()).into();
    let mut half = [0u8; 16];
    half.copy_from_slice(&seed[..16]);
    builder
        .wall_clock(FrozenWallClock(Duration::from_millis(u64::try_from(started_at_ms).unwrap_or(0))))
        .monotonic_clock(ReplayMonotonicClock::default())
        .secure_random(StdRng::from_seed(seed))
        .insecure_random(StdRng::from_seed(seed))
        .insecure_random_seed(u128::from_le_bytes(half));
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

/// The data of every guest store.
pub struct GuestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    http_grant: HttpGrant,
    table: ResourceTable,
    limiter: MemoryLimiter,
    stdout: Capture,
    stderr: Capture,
    pub identity: Identity,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.http_grant }
    }
}

impl GuestState {
    fn new(
        wasi: WasiCtx,
        http_grant: HttpGrant,
        limiter: MemoryLimiter,
        output: (Capture, Capture),
        identity: Identity,
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
            identity,
        }
    }

    /// The label guest log lines are shown with: `workflow` or the step's name.
    pub fn source(&self) -> &str {
        match &self.identity {
            Identity::Workflow { .. } => "workflow",
            Identity::Step(status) => status.step.rsplit('.').next().unwrap_or(&status.step),
        }
    }

    /// The next step call of a workflow: its id and the call's sequence number.
    pub fn next_step_call(&mut self) -> Option<(String, i64)> {
        match &mut self.identity {
            Identity::Workflow { workflow_id, next_seq } => {
                let seq = *next_seq;
                *next_seq += 1;
                Some((workflow_id.clone(), seq))
            }
            Identity::Step(_) => None,
        }
    }

    /// What the guest wrote to stderr (when captured), lossily decoded.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }
}

/// Why an attempt failed, as `stepbox:runtime/types.failure-kind` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    ReturnedError,
    Trapped,
    TimedOut,
    OutOfMemory,
    /// The host stopped during the attempt (set on resume, not by the sandbox).
    Interrupted,
    ResultTooLarge,
}

impl FailureKind {
    /// The WIT enum case.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReturnedError => "returned-error",
            Self::Trapped => "trapped",
            Self::TimedOut => "timed-out",
            Self::OutOfMemory => "out-of-memory",
            Self::Interrupted => "interrupted",
            Self::ResultTooLarge => "result-too-large",
        }
    }

    /// Reads a journaled kind; unknown text counts as a trap.
    pub fn parse(text: &str) -> Self {
        [Self::ReturnedError, Self::TimedOut, Self::OutOfMemory, Self::Interrupted, Self::ResultTooLarge]
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .unwrap_or(Self::Trapped)
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
}

/// Creates stores for guests.
#[derive(Clone)]
pub struct Sandbox {
    engine: Engine,
}

/// Output a workflow may write: captured, never granted anything else.
const WORKFLOW_OUTPUT_BYTES: usize = 64 << 10;

impl Sandbox {
    /// A sandbox on `engine`.
    pub fn new(engine: &Engine) -> Self {
        Self { engine: engine.clone() }
    }

    /// A workflow's store: nothing granted, output captured, clocks and
    /// randomness deterministic; not timed, only made to yield.
    pub fn workflow_store(&self, workflow_id: &str, started_at_ms: i64) -> Store<GuestState> {
        let stdout = Capture::new(WORKFLOW_OUTPUT_BYTES);
        let stderr = Capture::new(WORKFLOW_OUTPUT_BYTES);
        let mut builder = base_wasi(&stdout, &stderr);
        make_deterministic(&mut builder, workflow_id, started_at_ms);
        let identity = Identity::Workflow { workflow_id: workflow_id.to_string(), next_seq: 1 };
        let limiter = MemoryLimiter { max_memory_bytes: AttemptLimits::default().max_memory_bytes, denied: false };
        let state = GuestState::new(builder.build(), HttpGrant::default(), limiter, (stdout, stderr), identity);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_async_yield_and_update(engine::ticks(Duration::from_secs(1)));
        store
    }

    /// A step attempt's store: only `grants`, within `status.limits`.
    fn step_store(&self, status: StepStatus, grants: &Grants) -> wasmtime::Result<Store<GuestState>> {
        let limits = status.limits;
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
        let identity = Identity::Step(status);
        let http_grant = HttpGrant::new(grants.http.clone());
        let state = GuestState::new(builder.build(), http_grant, limiter, (stdout, stderr), identity);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        // Every tick, a running guest yields to the async runtime (so a busy
        // step never starves other workflows or the lease heartbeat on its
        // thread) and is interrupted once its time is up.
        let deadline = Instant::now() + limits.timeout;
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline { UpdateDeadline::Interrupt } else { UpdateDeadline::Yield(1) })
        });
        store.set_epoch_deadline(1);
        Ok(store)
    }

    /// Runs one step attempt in a brand-new instance.
    pub async fn call_step(
        &self,
        pre: &InstancePre<GuestState>,
        function: &ComponentExportIndex,
        status: StepStatus,
        grants: &Grants,
        params: &[Val],
    ) -> AttemptReport {
        let limits = status.limits;
        let mut store = match self.step_store(status, grants) {
            Ok(store) => store,
            Err(error) => {
                let failure = CallFailure {
                    kind: FailureKind::Trapped,
                    message: format!("cannot set up the attempt: {error:#}"),
                };
                return AttemptReport { result: Err(failure), stdout: String::new(), stderr: String::new() };
            }
        };
        // The epoch deadline stops guest code; this timeout also stops waits in host calls.
        let outcome = tokio::time::timeout(limits.timeout, async {
            let instance = instantiate_when_free(pre, &mut store).await?;
            let func = instance
                .get_func(&mut store, function)
                .ok_or_else(|| wasmtime::format_err!("the step function is not exported"))?;
            let mut results = vec![Val::Bool(false); func.ty(&store).results().len()];
            func.call_async(&mut store, params, &mut results).await?;
            results.pop().ok_or_else(|| wasmtime::format_err!("the step function returned no value"))
        })
        .await;
        let result = match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(failure(&store, &error, &limits)),
            Err(_) => Err(CallFailure {
                kind: FailureKind::TimedOut,
                message: format!("the attempt did not finish within {}", humantime::format_duration(limits.timeout)),
            }),
        };
        let state = store.data();
        AttemptReport { result, stdout: state.stdout.text(), stderr: state.stderr.text() }
    }
}

/// Instantiates `pre`, waiting while the engine's instance pool is full: a
/// host out of instance slots is back-pressure, not a failed attempt (the
/// attempt's timeout still bounds the wait).
pub async fn instantiate_when_free(
    pre: &InstancePre<GuestState>,
    store: &mut Store<GuestState>,
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

fn failure(store: &Store<GuestState>, error: &wasmtime::Error, limits: &AttemptLimits) -> CallFailure {
    let trap = error.downcast_ref::<Trap>();
    let kind = if matches!(trap, Some(Trap::Interrupt)) {
        FailureKind::TimedOut
    } else if store.data().limiter.denied {
        FailureKind::OutOfMemory
    } else {
        FailureKind::Trapped
    };
    let message = describe_error(error, store.data());
    let message = match kind {
        FailureKind::TimedOut => format!(
            "the attempt did not finish within {} (interrupted)\n{message}",
            humantime::format_duration(limits.timeout)
        ),
        FailureKind::OutOfMemory => {
            let limit = bytesize::ByteSize::b(limits.max_memory_bytes).display().iec();
            format!("the attempt tried to grow its memory past {limit}\n{message}")
        }
        _ => message,
    };
    CallFailure { kind, message }
}

/// The error's causes on one line, what the guest wrote to stderr, then its
/// wasm backtrace if it trapped.
pub fn describe_error(error: &wasmtime::Error, state: &GuestState) -> String {
    let backtrace = error.downcast_ref::<WasmBacktrace>().map(ToString::to_string);
    let causes: Vec<String> =
        error.chain().map(ToString::to_string).filter(|cause| Some(cause) != backtrace.as_ref()).collect();
    let mut message = causes.join(": ");
    let stderr = state.stderr();
    if !stderr.is_empty() {
        message.push_str("\nstderr:\n");
        message.push_str(&stderr);
    }
    if let Some(backtrace) = backtrace {
        message.push('\n');
        message.push_str(backtrace.trim_end());
    }
    message
}
