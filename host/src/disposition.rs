//! What an error means for whoever must act on it, sorted once where the
//! error is made: every public error of the library says its
//! [`Disposition`], and each surface derives its answer from that alone —
//! the CLI its exit code, the HTTP API its status, a worker whether to hand
//! a workflow back, give up on it, or leave it to its new owner.

/// The kind of a failure, as the one who must act on it sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Disposition {
    /// The journal could not be reached (for longer than its outage budget):
    /// nothing is wrong with the request, try again once it is back.
    Outage,
    /// The request itself is wrong (a file, component, manifest, argument,
    /// policy, or a replay that no longer matches the journal): fix it.
    Refused,
    /// The state forbids it now: an id taken, a workflow owned by a live
    /// process, or already ended.
    Conflict,
    /// No such workflow or component.
    NotFound,
    /// The workflow ran and ended badly (trapped, cancelled, timed out, dead).
    WorkflowFailed,
    /// The workflow stopped before its end and can go on: a signal, or its
    /// lease lost or lapsed (then its new owner, or a resume, goes on).
    Stopped,
    /// An invariant of stepbox broke: a bug to report.
    Bug,
}
