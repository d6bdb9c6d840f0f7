//! What can go wrong with the journal, said so a person can act on it.

use std::time::Duration;

use super::target::TargetError;
use crate::Disposition;

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
        "this process no longer owns workflow {id} in {location} (its lease lapsed, or another executor took \
         it over); it stopped without writing"
    )]
    NotOwner { location: String, id: String },
    #[error("journal write failed (group commit) in {location}: {message}")]
    Batch { location: String, message: String, outage: bool },
    #[error("the journal writer of {location} stopped; nothing more can be written")]
    WriterGone { location: String },
}

impl JournalError {
    /// What the error means for whoever must act on it.
    pub fn disposition(&self) -> Disposition {
        match self {
            Self::Target(_) | Self::Open { .. } | Self::Schema { .. } => Disposition::Refused,
            Self::Failed { source, .. } => failed(source),
            Self::Unreachable { .. } | Self::Batch { outage: true, .. } => Disposition::Outage,
            Self::Batch { outage: false, .. } => Disposition::Bug,
            // Its lease is gone; or the process is stopping.
            Self::NotOwner { .. } | Self::WriterGone { .. } => Disposition::Stopped,
        }
    }
}

/// A statement refused for good: a missing database, a role without rights
/// or a wrong password are the operator's to fix; anything else is a bug.
fn failed(error: &sqlx::Error) -> Disposition {
    let code = match error {
        sqlx::Error::Database(database) => database.code().map(|code| code.to_string()).unwrap_or_default(),
        _ => String::new(),
    };
    if code.starts_with("28") || matches!(code.as_str(), "3D000" | "42501" | "3F000") {
        Disposition::Refused
    } else {
        Disposition::Bug
    }
}
