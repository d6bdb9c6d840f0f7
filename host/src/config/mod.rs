//! Configuration: each step's retry policy, limits and grants, from the
//! defaults, the manifest and the command line, with the units people write;
//! queue limits from `host queue` flags and queue files.

mod manifest;
mod queues;
mod retry;
mod settings;
pub(crate) mod units;

pub use manifest::{Manifest, ManifestError};
pub use queues::{QueueFileError, QueueSpec, Rate, check_queue_name, parse_rate, read_queue_file};
pub use retry::{PolicyError, RetryPolicy};
pub use settings::{
    PolicyOverrides, Scope, Setting, SettingsError, SettingsLayer, SettingsLayers, StepSettings, StepSource,
};
pub use units::{parse_duration, parse_size};
