//! stepbox: a durable step runtime for WebAssembly components.
//!
//! Start at [`Stepbox`]: it opens a journal, starts the engine and the
//! executor, and hands out a [`run::Runner`] (run workflows in this process),
//! a [`worker::Client`] (submit them to queues) and a [`worker::Worker`].
//!
//! Data flows one way: the CLI (`src/cli`) and the server read flags,
//! files and requests into a [`run::RunSpec`] or an [`operate`] call; the
//! [`run`] side loads, checks and links components ([`wasm`]) with each
//! step's settings from [`config`], and runs workflows; each step call goes
//! to the invoker, which runs attempts in the sandbox and records them in the
//! [`journal`]. Every error has a [`Disposition`], from which the CLI's exit
//! code, the API's status and a worker's choice follow.
//!
//! The layers, each a folder:
//! - [`config`]: retry policies, limits, grants and step names from the
//!   manifest and the command line (depends on nothing else here but the
//!   queue limits' type);
//! - [`wasm`]: the engine, component loading and cache, the sandbox and the
//!   enforcement of grants and limits, the `stepbox:runtime` host API;
//! - [`run`]: linking and the step convention, deployments, the executor and
//!   its leases, a running workflow's context (in its Store), the invoker and
//!   its retry decisions, the runner, resume and fork;
//! - [`journal`]: the database, SQLite or PostgreSQL, a module per role;
//! - [`operate`]: list, show, cancel, fork, prune… as typed documents, for
//!   the CLI and the API alike;
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
