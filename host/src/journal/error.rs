//! What can go wrong with the journal, said so a person can act on it.

use std::time::Duration;

use super::target::TargetError;

/// The journal could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("cannot open the journal {location}: {cause}. {hint}")]
    Open { location: String, cause: String, hint: String },
    #[error("cannot use the journal {location}: {message}")]
    Schema { location: String, message: String },
    #[error("journal {what} failed in {location}: {source}")]
    Failed { location: String, what: &'static str, source: sqlx::Error },
    #[error(
        "the journal {location} stayed unreachable for {} ({what}): {source}",
        humantime::format_duration(*lasted)
    )]
    Unreachable { location: String, what: &'static str, lasted: Duration, source: sqlx::Error },
    #[error(
        "this process no longer owns workflow {id} in {location} (another executor took over its lease); \
         it stopped without writing"
    )]
    NotOwner { location: String, id: String },
    #[error("journal write failed (group commit) in {location}: {message}")]
    Batch { location: String, message: String },
    #[error("the journal writer of {location} stopped; nothing more can be written")]
    WriterGone { location: String },
}

impl JournalError {
    /// True when the database was unreachable (not a refusal): the workflow can be resumed once it is back.
    pub fn is_outage(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Batch { .. } | Self::WriterGone { .. })
    }
}
