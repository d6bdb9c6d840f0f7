//! A running workflow's context, kept in its store's data (as Obelisk's
//! `WorkflowCtx`): the lease it runs under, its stop flag, the calls its
//! journal recorded and not yet replayed, how long a wait may hold its slot,
//! the number of its next call, who it is, its wall clock, its mailbox and
//! the calls it started.
//! Everything a host function of the workflow needs is here, so the invoker
//! and the runner keep no state per workflow, and one workflow's calls can
//! never reach another's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::children::ChildPlan;
use super::concurrent::Calls;
use crate::journal::{Journal, Lease, StepCallRecord, Timestamp};
use crate::wasm::{Interrupt, WorkflowClock};

/// Who a running workflow is, as `workflow-context.info` tells it.
#[derive(Debug, Clone)]
pub struct WorkflowInfo {
    pub id: String,
    pub name: String,
    pub queue: Option<String>,
    /// When it was created (the replay seed's time): its wall clock at the start.
    pub started_at: Timestamp,
    /// The schedule and tick that started it.
    pub scheduled: Option<(String, Timestamp)>,
}

/// What the run side keeps of one running workflow.
pub struct WorkflowContext {
    pub(super) lease: Lease,
    pub(super) interrupt: Interrupt,
    /// The journaled calls not yet replayed, by seq.
    history: BTreeMap<i64, StepCallRecord>,
    /// Waits (backoffs, sleeps, `recv`) longer than this park the workflow instead.
    pub(super) park_after: Option<Duration>,
    /// The next call's position in the workflow, from 1.
    next_seq: i64,
    pub(super) journal: Journal,
    pub(super) info: WorkflowInfo,
    /// The workflow's wall clock, moved on by its waits as journaled.
    pub(super) clock: WorkflowClock,
    /// Rung when a message is sent to the workflow (NOTIFY).
    pub(super) mail: Arc<Notify>,
    /// The calls it started with `start-call`, and the limit of calls at once.
    pub(super) calls: Calls,
    /// What its child workflows are made from.
    pub(super) children: Arc<ChildPlan>,
}

/// One call of a workflow, as its host function makes it: where it stands in
/// the workflow and what the journal recorded of it.
#[derive(Clone)]
pub struct CallSlot {
    pub lease: Lease,
    pub interrupt: Interrupt,
    /// The call's position in the workflow, from 1.
    pub seq: i64,
    /// The journal's row of this call, on a replay.
    pub recorded: Option<StepCallRecord>,
    pub park_after: Option<Duration>,
}

/// What a [`WorkflowContext`] is made of, besides its journal history.
pub struct Running {
    pub lease: Lease,
    pub interrupt: Interrupt,
    pub park_after: Option<Duration>,
    pub journal: Journal,
    pub info: WorkflowInfo,
    pub clock: WorkflowClock,
    pub mail: Arc<Notify>,
    pub calls: Calls,
    pub children: Arc<ChildPlan>,
}

impl WorkflowContext {
    /// The context of a workflow `running`, replaying `history` (empty for a new one).
    pub fn new(running: Running, history: Vec<StepCallRecord>) -> Self {
        let Running { lease, interrupt, park_after, journal, info, clock, mail, calls, children } = running;
        let history = history.into_iter().map(|call| (call.seq, call)).collect();
        Self { lease, interrupt, history, park_after, next_seq: 1, journal, info, clock, mail, calls, children }
    }

    /// The workflow's next call: numbered, with its journal row if it has one.
    pub fn next_call(&mut self) -> CallSlot {
        let (seq, recorded) = self.next_seq();
        CallSlot {
            lease: self.lease.clone(),
            interrupt: self.interrupt.clone(),
            seq,
            recorded,
            park_after: self.park_after(),
        }
    }

    /// How long a wait may hold the workflow's slot before it parks; never
    /// while calls it started run (they run in this process).
    pub(super) fn park_after(&self) -> Option<Duration> {
        self.park_after.filter(|_| !self.calls.any_running())
    }

    /// The next position in the workflow and its journal row, if any.
    pub(super) fn next_seq(&mut self) -> (i64, Option<StepCallRecord>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        (seq, self.history.remove(&seq))
    }
}
