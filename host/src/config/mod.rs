//! Configuration: each step's name, retry policy, limits and grants, from
//! the defaults, the manifest and the command line, with the units people
//! write; queue limits from `host queue` flags and queue files; schedules'
//! cron expressions and time zones. Plain data: the Wasm and run sides read
//! it, it reads neither.

mod cron;
mod grants;
mod limits;
mod manifest;
mod queues;
mod retry;
mod settings;
mod step_name;
pub(crate) mod units;

pub use cron::{CronSchedule, MAX_CATCH_UP, SKIP_AFTER};
pub use grants::{DirGrant, GrantOverrides, Grants, Stdio};
pub use limits::{AttemptLimits, LimitOverrides};
pub use manifest::{Manifest, ManifestError};
pub use queues::{
    MAX_WORKFLOW_ID, QueueFileError, QueueSpec, Rate, check_queue_name, check_workflow_id, parse_rate, read_queue_file,
};
pub use retry::{PolicyError, RetryPolicy};
pub use settings::{
    DEFAULT_MAX_CONCURRENT_CALLS, MAX_CONCURRENT_CALLS_LIMIT, PolicyOverrides, Scope, Setting, SettingsError,
    SettingsLayer, SettingsLayers, StepSettings, StepSource,
};
pub use step_name::StepName;
pub use units::{parse_duration, parse_size};
