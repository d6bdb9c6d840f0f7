//! The Wasm side: the engine, loading and caching components, and the
//! sandbox each guest instance runs in, with what it may use (grants,
//! limits, captured output) and the `stepbox:runtime` host API.

mod cache;
mod capture;
mod deterministic;
mod engine;
mod fs_guard;
mod host_api;
mod http_grant;
mod interrupt;
mod sandbox;

pub use cache::{ComponentLoader, DEFAULT_CACHE_MAX, LoadError, LoadedComponent, Pruned, default_cache_dir, prune};
pub use deterministic::WorkflowClock;
pub use engine::{EPOCH_TICK, POOL_COMPONENT_INSTANCES, new_engine, new_engine_with, ticks};
pub use host_api::RUNTIME_WIT;
pub use interrupt::{Interrupt, StopReason};
pub use sandbox::{
    AttemptReport, CallFailure, GuestState, Identity, Sandbox, StepIdentity, describe_error, instantiate_when_free,
};

use wasmtime::Engine;
use wasmtime::component::Linker;

/// A linker with WASI (nothing granted until a store grants it) and
/// `stepbox:runtime`, for stores whose data carries a `C` (a workflow's run context; nothing for a step).
pub fn base_linker<C: Send + 'static>(engine: &Engine) -> wasmtime::Result<Linker<GuestState<C>>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    fs_guard::add_to_linker(&mut linker)?;
    host_api::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// The linker step components are instantiated with: WASI, `stepbox:runtime`
/// and `wasi:http` (each attempt's hooks allow just its granted hosts).
pub fn step_linker(engine: &Engine) -> wasmtime::Result<Linker<GuestState>> {
    let mut linker = base_linker(engine)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    Ok(linker)
}
