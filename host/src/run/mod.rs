//! The run side: planning what runs where (linking, the step convention),
//! the deployment a workflow is pinned to, the process's executor and its
//! leases, the invoker that runs a step call's attempts (with the pure
//! decision of what follows each), and the runner of whole workflows.

mod children;
mod clock;
mod concurrent;
mod context;
mod contract;
mod decision;
mod deployment;
mod events;
mod executor;
mod invoker;
mod linker;
mod linking;
mod primitives;
mod resume;
mod runner;
mod values;

pub use clock::{Clock, SystemClock};
pub use concurrent::{Calls, Steps};
pub use context::{CallSlot, Running, WorkflowContext, WorkflowInfo};
pub use contract::{ConventionError, EXHAUSTED_CASE, PERMANENT_CASE, RETRY_AFTER_CASE, check_step, describe};
pub use decision::{Decision, Ended, Progress, decide};
pub use deployment::{
    ChangedComponent, ComponentRef, Deployment, PrepareError, Prepared, RecordedOptions, ReplaySeed, RunSpec,
    StoredSpec,
};
pub use events::Wakeups;
pub use executor::{DEFAULT_LEASE, Executor, Holding, executor_id};
pub use invoker::{Attempts, InvokeError, Invoker, StepTarget};
pub use linker::LinkerError;
pub use linking::{LinkError, Plan, WORKFLOW};
pub use primitives::INTERFACE as WORKFLOW_CONTEXT;
pub use resume::{ForkError, ResumeOptions, fork, recover, resume};
pub(crate) use runner::new_workflow;
pub use runner::{MAX_RUNNING_WORKFLOWS, RunError, RunOutcome, RunRequest, Runner, workflow_name};
pub use values::{ArgumentError, AttemptFailure, Returned, exhausted, parse_arguments, to_json, to_wave};
