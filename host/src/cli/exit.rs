//! The exit codes, one meaning each, and the one function that picks the
//! code of a failure: from its [`Disposition`], never from its message.

use stepbox::Disposition;
use stepbox::config::QueueFileError;
use stepbox::journal::JournalError;
use stepbox::operate::OperateError;
use stepbox::run::{ArgumentError, ForkError, PrepareError, RunError};
use stepbox::worker::SubmitError;

use crate::output;

/// The workflow ended badly: trapped, cancelled, timed out, dead.
pub const FAILED: u8 = 1;
/// Bad input: files, components, arguments, manifest, journal location,
/// unknown id, a state that forbids it (an id taken, a live owner).
pub const USAGE: u8 = 2;
/// The workflow has not finished.
pub const NOT_FINISHED: u8 = 3;
/// Try again: the journal was unreachable, or the workflow stopped and can
/// be resumed (its lease lost or lapsed, the host stopped).
pub const RESUMABLE: u8 = 4;
/// A bug in stepbox (`EX_SOFTWARE`): the message says what to report.
pub const BUG: u8 = 70;
/// Stopped by SIGINT (128 + 2), resumable.
pub const SIGINT: u8 = 130;
/// Stopped by SIGTERM (128 + 15), resumable.
pub const SIGTERM: u8 = 143;

/// The exit code of a failure of this disposition.
pub fn code(disposition: Disposition) -> u8 {
    match disposition {
        Disposition::WorkflowFailed => FAILED,
        Disposition::Refused | Disposition::Conflict | Disposition::NotFound => USAGE,
        Disposition::Outage | Disposition::Stopped => RESUMABLE,
        Disposition::Bug => BUG,
    }
}

/// An error of the library as the CLI reports it: its message, and its disposition.
pub trait Reported: std::fmt::Display {
    fn disposition(&self) -> Disposition;
}

macro_rules! reported {
    ($($error:ty),*) => {
        $(impl Reported for $error {
            fn disposition(&self) -> Disposition {
                <$error>::disposition(self)
            }
        })*
    };
}
reported!(JournalError, PrepareError, RunError, ForkError, SubmitError, OperateError);

/// Errors that are always about the input given.
macro_rules! refused {
    ($($error:ty),*) => {
        $(impl Reported for $error {
            fn disposition(&self) -> Disposition {
                Disposition::Refused
            }
        })*
    };
}
refused!(ArgumentError, QueueFileError);

/// Prints `error` (one `error:` paragraph) and returns its exit code.
pub fn fail(error: &impl Reported) -> u8 {
    output::error(&error.to_string());
    code(error.disposition())
}

/// Prints `message` as bad input and returns its exit code.
pub fn refuse(message: &str) -> u8 {
    output::error(message);
    USAGE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_disposition_has_one_exit_code() {
        assert_eq!(code(Disposition::WorkflowFailed), 1);
        for usage in [Disposition::Refused, Disposition::Conflict, Disposition::NotFound] {
            assert_eq!(code(usage), 2);
        }
        assert_eq!((code(Disposition::Outage), code(Disposition::Stopped)), (4, 4));
        assert_eq!(code(Disposition::Bug), 70);
    }
}
