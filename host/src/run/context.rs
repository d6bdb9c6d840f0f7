//! A running workflow's context, kept in its store's data (as Obelisk's
//! `WorkflowCtx`): the lease it runs under, its stop flag, the calls its
//! journal recorded and not yet replayed, how long a wait may hold its slot,
//! and the number of its next call. Everything a host function of the
//! workflow needs is here, so the invoker and the runner keep no state per
//! workflow, and one workflow's calls can never reach another's.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::journal::{Lease, StepCallRecord};
use crate::wasm::Interrupt;

/// What the run side keeps of one running workflow.
pub struct WorkflowContext {
    lease: Lease,
    interrupt: Interrupt,
    /// The journaled calls not yet replayed, by seq.
    history: BTreeMap<i64, StepCallRecord>,
    /// Backoffs longer than this park the workflow instead of waiting.
    park_after: Option<Duration>,
    /// The next call's position in the workflow, from 1.
    next_seq: i64,
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

impl WorkflowContext {
    /// The context of a workflow run under `lease`, replaying `history` (empty for a new one).
    pub fn new(lease: Lease, interrupt: Interrupt, history: Vec<StepCallRecord>, park_after: Option<Duration>) -> Self {
        let history = history.into_iter().map(|call| (call.seq, call)).collect();
        Self { lease, interrupt, history, park_after, next_seq: 1 }
    }

    /// The workflow's next call: numbered, with its journal row if it has one.
    pub fn next_call(&mut self) -> CallSlot {
        let seq = self.next_seq;
        self.next_seq += 1;
        CallSlot {
            lease: self.lease.clone(),
            interrupt: self.interrupt.clone(),
            seq,
            recorded: self.history.remove(&seq),
            park_after: self.park_after,
        }
    }
}
