//! stepbox: a durable step runtime for WebAssembly components.
//!
//! Data flows one way: the CLI (`src/cli`) reads files and flags into a
//! [`run::RunSpec`]; the [`run`] side loads, checks and links components
//! ([`wasm`]), with each step's settings from [`config`], and runs workflows;
//! each step call goes to the invoker, which runs attempts in the sandbox and
//! records them in the [`journal`].
//!
//! The layers, each a folder:
//! - [`wasm`]: the engine, component loading and cache, the sandbox, grants
//!   and limits, the `stepbox:runtime` host API;
//! - [`run`]: linking and the step convention, deployments, the executor and
//!   its leases, the invoker and its retry decisions, the runner;
//! - [`config`]: retry policies, limits and grants from the manifest and the
//!   command line;
//! - [`journal`]: the database, SQLite or PostgreSQL;
//! - [`worker`]: queues and the workers that run them (the service side);
//! - [`server`]: `host serve`, the HTTP API and the dashboard over a journal;
//! - [`telemetry`]: metrics and OpenTelemetry traces of the work.

mod disposition;
mod embed;

pub use disposition::Disposition;
pub use embed::{OpenError, Options, Stepbox};

pub mod config;
pub mod journal;
pub mod operate;
pub mod run;
pub mod server;
pub mod telemetry;
pub mod wasm;
pub mod worker;
