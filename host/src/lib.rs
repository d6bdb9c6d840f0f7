//! stepbox: a durable step runtime for WebAssembly components.
//!
//! Data flows one way: the CLI builds [`runtime::RunOptions`]; the runtime
//! loads and links components and calls the workflow; each step call goes to
//! the [`invoker`], which runs attempts in the [`sandbox`] and records them in
//! the [`journal`].

pub mod cache;
pub mod capture;
pub mod contract;
pub mod engine;
pub mod grants;
pub mod host_api;
pub mod http_grant;
pub mod invoker;
pub mod journal;
pub mod limits;
pub mod linking;
pub mod logging;
pub mod manifest;
pub mod report;
pub mod retry;
pub mod runtime;
pub mod sandbox;
pub mod settings;
pub mod step_name;
pub mod units;
pub mod values;
