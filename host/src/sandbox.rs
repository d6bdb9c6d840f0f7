//! One guest instance's world: a fresh `Store` with a WASI context that
//! grants nothing, captured stdout/stderr, a memory limit and an epoch
//! deadline. Knows wasmtime, nothing of SQL or retries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::SeedableRng as _;
use rand::rngs::StdRng;
use sha2::{Digest as _, Sha256};

use wasmtime::component::{ComponentExportIndex, InstancePre, ResourceTable, Val};
use wasmtime::{Engine, ResourceLimiter, Store, Trap, WasmBacktrace};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::engine;
use crate::retry::RetryPolicy;

/// Per-attempt limits. Issue-level defaults; grants and overrides come with the manifest.
#[derive(Debug, Clone, Copy)]
pub struct AttemptLimits {
    /// Wall-clock and CPU time an attempt may take.
    pub timeout: Duration,
    /// Largest size any one linear memory may grow to.
    pub max_memory_bytes: usize,
    /// Bytes of stdout and of stderr kept per instance.
    pub max_output_bytes: usize,
}

impl Default for AttemptLimits {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(300), max_memory_bytes: 512 << 20, max_output_bytes: 64 << 10 }
    }
}

/// What a running step knows about itself (`stepbox:runtime/step-context`).
#[derive(Debug, Clone)]
pub struct StepStatus {
    pub workflow_id: String,
    pub step: String,
    pub attempt: u32,
    pub policy: RetryPolicy,
}

/// Who runs in a store: a workflow (which may call steps) or one step attempt.
#[derive(Debug, Clone)]
pub enum Identity {
    Workflow {
        workflow_id: String,
        next_seq: i64,
        /// When the workflow was first started (ms): its clock on every replay.
        started_at_ms: i64,
    },
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

/// Denies memory growth past the limit and remembers that it did.
struct MemoryLimiter {
    max_memory_bytes: usize,
    denied: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = desired <= self.max_memory_bytes;
        self.denied |= !allowed;
        Ok(allowed)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// The data of every guest store.
pub struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    stderr: MemoryOutputPipe,
    pub identity: Identity,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl GuestState {
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
            Identity::Workflow { workflow_id, next_seq, .. } => {
                let seq = *next_seq;
                *next_seq += 1;
                Some((workflow_id.clone(), seq))
            }
            Identity::Step(_) => None,
        }
    }

    /// What the guest wrote to stderr, lossily decoded.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents()).trim().to_string()
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
        }
    }

    /// Reads a journaled kind; unknown text counts as a trap.
    pub fn parse(text: &str) -> Self {
        [Self::ReturnedError, Self::TimedOut, Self::OutOfMemory, Self::Interrupted]
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .unwrap_or(Self::Trapped)
    }
}

/// An attempt that did not return a value.
#[derive(Debug, Clone)]
pub struct CallFailure {
    pub kind: FailureKind,
    /// The trap with the guest backtrace, then the guest's stderr.
    pub message: String,
}

/// Creates stores for guests.
#[derive(Clone)]
pub struct Sandbox {
    engine: Engine,
    limits: AttemptLimits,
}

impl Sandbox {
    /// A sandbox on `engine` with `limits` for every attempt.
    pub fn new(engine: &Engine, limits: AttemptLimits) -> Self {
        Self { engine: engine.clone(), limits }
    }

    /// A fresh store: nothing granted (no files, env, sockets), output captured.
    pub fn store(&self, identity: Identity) -> Store<GuestState> {
        let stdout = MemoryOutputPipe::new(self.limits.max_output_bytes);
        let stderr = MemoryOutputPipe::new(self.limits.max_output_bytes);
        let mut builder = WasiCtxBuilder::new();
        builder.stdout(stdout).stderr(stderr.clone()).allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
        if let Identity::Workflow { workflow_id, started_at_ms, .. } = &identity {
            make_deterministic(&mut builder, workflow_id, *started_at_ms);
        }
        let wasi = builder.build();
        let limiter = MemoryLimiter { max_memory_bytes: self.limits.max_memory_bytes, denied: false };
        let is_step = matches!(identity, Identity::Step(_));
        let mut store =
            Store::new(&self.engine, GuestState { wasi, table: ResourceTable::new(), limiter, stderr, identity });
        store.limiter(|state| &mut state.limiter);
        if is_step {
            store.epoch_deadline_trap();
            store.set_epoch_deadline(engine::ticks(self.limits.timeout));
        } else {
            // Workflows wait on steps; they are not timed, only made to yield.
            store.epoch_deadline_async_yield_and_update(engine::ticks(Duration::from_secs(1)));
        }
        store
    }

    /// Runs one step attempt in a brand-new instance and returns its value.
    pub async fn call_step(
        &self,
        pre: &InstancePre<GuestState>,
        function: &ComponentExportIndex,
        status: StepStatus,
        params: &[Val],
    ) -> Result<Val, CallFailure> {
        let mut store = self.store(Identity::Step(status));
        let outcome = tokio::time::timeout(self.limits.timeout, async {
            let instance = pre.instantiate_async(&mut store).await?;
            let func = instance
                .get_func(&mut store, function)
                .ok_or_else(|| wasmtime::format_err!("the step function is not exported"))?;
            let mut results = vec![Val::Bool(false); func.ty(&store).results().len()];
            func.call_async(&mut store, params, &mut results).await?;
            results.pop().ok_or_else(|| wasmtime::format_err!("the step function returned no value"))
        })
        .await;
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.failure(&store, &error)),
            Err(_) => Err(CallFailure {
                kind: FailureKind::TimedOut,
                message: format!(
                    "the attempt did not finish within {}",
                    humantime::format_duration(self.limits.timeout)
                ),
            }),
        }
    }

    fn failure(&self, store: &Store<GuestState>, error: &wasmtime::Error) -> CallFailure {
        let trap = error.downcast_ref::<Trap>();
        let kind = if matches!(trap, Some(Trap::Interrupt)) {
            FailureKind::TimedOut
        } else if store.data().limiter.denied {
            FailureKind::OutOfMemory
        } else {
            FailureKind::Trapped
        };
        let mut message = describe_error(error, store.data());
        if kind == FailureKind::TimedOut {
            message = format!(
                "the attempt did not finish within {} (interrupted)\n{message}",
                humantime::format_duration(self.limits.timeout)
            );
        }
        if kind == FailureKind::OutOfMemory {
            message = format!(
                "the attempt tried to grow its memory past {} MiB\n{message}",
                self.limits.max_memory_bytes >> 20
            );
        }
        CallFailure { kind, message }
    }
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
