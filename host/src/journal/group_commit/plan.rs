//! The pure part of group commit: a batch of writes folded into the fewest
//! rows (a call started and finished in one batch is one inserted row, and
//! so is each such attempt). No SQL, no I/O: tested on its own.

use std::collections::HashMap;

use serde_json::Value as Json;

use super::super::{AttemptEnd, CallEnd, CallStatus, Timestamp};
use super::{Change, NewCall, Write};

#[derive(Debug, PartialEq)]
pub(super) struct AttemptRow<'w> {
    pub(super) workflow_id: &'w str,
    /// The lease epoch it is written under: only that epoch's fence admits it.
    pub(super) epoch: i64,
    pub(super) executor: &'w str,
    pub(super) seq: i64,
    pub(super) attempt: i32,
    pub(super) started_at: Timestamp,
    pub(super) end: Option<&'w AttemptEnd>,
}

#[derive(Debug, PartialEq)]
pub(super) struct EndedCall<'w> {
    pub(super) end: &'w CallEnd,
    pub(super) at: Timestamp,
}

#[derive(Debug, PartialEq)]
pub(super) struct CallRow<'w> {
    pub(super) workflow_id: &'w str,
    /// The lease epoch it is written under.
    pub(super) epoch: i64,
    pub(super) seq: i64,
    pub(super) new: Option<(&'w NewCall, Timestamp)>,
    /// The highest attempt started in this batch.
    pub(super) attempts: Option<i32>,
    pub(super) end: Option<EndedCall<'w>>,
}

/// A new call row's values, in [`CALL_FIELDS`] order.
pub(super) type CallValues<'w> = (
    &'w str,
    i64,
    &'w str,
    &'w str,
    Option<&'w Json>,
    CallStatus,
    Option<&'w str>,
    Option<&'w Json>,
    i32,
    i32,
    Timestamp,
    Option<Timestamp>,
);

impl<'w> CallRow<'w> {
    pub(super) fn row(&self) -> CallValues<'w> {
        let (step, input, input_json, max_attempts, started_at) = match self.new {
            Some((new, at)) => (new.step.as_str(), new.input.as_str(), Some(&new.input_json), new.max_attempts, at),
            None => ("", "", None, 0, Timestamp::from_millis(0)),
        };
        (
            self.workflow_id,
            self.seq,
            step,
            input,
            input_json,
            self.end.as_ref().map_or(CallStatus::Running, |end| end.end.status),
            self.end.as_ref().and_then(|end| end.end.output.as_deref()),
            self.end.as_ref().and_then(|end| end.end.output_json.as_ref()),
            self.attempts.unwrap_or(0),
            max_attempts,
            started_at,
            self.end.as_ref().map(|end| end.at),
        )
    }
}

/// A batch folded into the fewest statements: a call started and finished
/// within the batch is one inserted row, and so is each such attempt.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Plan<'w> {
    pub(super) calls: Vec<CallRow<'w>>,
    pub(super) attempts: Vec<AttemptRow<'w>>,
    /// Attempts started in an earlier batch, finished in this one.
    pub(super) finished_earlier: Vec<AttemptRow<'w>>,
}

impl<'w> Plan<'w> {
    pub(super) fn of(writes: &[&'w Write]) -> Self {
        let mut plan = Plan::default();
        // Keyed by epoch too: writes of one workflow under an old lease and a new one
        // (it was claimed again meanwhile) never merge, and each meets its own fence.
        let mut call_index: HashMap<(&str, i64, i64), usize> = HashMap::new();
        let mut attempt_index: HashMap<(&str, i64, i64, i32), usize> = HashMap::new();
        for write in writes {
            let key = (write.workflow_id.as_str(), write.epoch, write.seq);
            let call = *call_index.entry(key).or_insert_with(|| {
                plan.calls.push(CallRow {
                    workflow_id: &write.workflow_id,
                    epoch: write.epoch,
                    seq: write.seq,
                    new: None,
                    attempts: None,
                    end: None,
                });
                plan.calls.len() - 1
            });
            let call = &mut plan.calls[call];
            match &write.change {
                Change::Start { at, new_call } => {
                    if let Some(new_call) = new_call {
                        call.new = Some((new_call, *at));
                    }
                    call.attempts = Some(call.attempts.map_or(write.attempt, |n| n.max(write.attempt)));
                    attempt_index.insert((key.0, key.1, key.2, write.attempt), plan.attempts.len());
                    plan.attempts.push(AttemptRow {
                        workflow_id: &write.workflow_id,
                        epoch: write.epoch,
                        executor: &write.executor,
                        seq: write.seq,
                        attempt: write.attempt,
                        started_at: *at,
                        end: None,
                    });
                }
                Change::Finish { end, call_end } => {
                    if let Some(call_end) = call_end {
                        let at = end.finished_at.unwrap_or_else(Timestamp::now);
                        call.end = Some(EndedCall { end: call_end, at });
                    }
                    match attempt_index.get(&(key.0, key.1, key.2, write.attempt)) {
                        Some(&index) => plan.attempts[index].end = Some(end),
                        None => plan.finished_earlier.push(AttemptRow {
                            workflow_id: &write.workflow_id,
                            epoch: write.epoch,
                            executor: &write.executor,
                            seq: write.seq,
                            attempt: write.attempt,
                            started_at: Timestamp::from_millis(0),
                            end: Some(end),
                        }),
                    }
                }
            }
        }
        plan
    }

    /// True when the batch only adds rows: every call is new, no attempt was started earlier.
    pub(super) fn inserts_only(&self) -> bool {
        self.finished_earlier.is_empty() && self.calls.iter().all(|call| call.new.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{finish, start};
    use super::*;

    #[test]
    fn a_call_started_and_finished_in_one_batch_is_one_row_of_each() {
        let writes =
            [start(1, 1, true), finish(1, 1, None), start(1, 2, false), finish(1, 2, Some(CallStatus::Exhausted))];
        let plan = Plan::of(&writes.iter().collect::<Vec<_>>());
        assert_eq!(plan.calls.len(), 1);
        let call = &plan.calls[0];
        assert!(call.new.is_some());
        assert_eq!(call.attempts, Some(2));
        assert_eq!(call.end.as_ref().map(|end| end.end.status), Some(CallStatus::Exhausted));
        assert_eq!(plan.attempts.len(), 2);
        assert!(plan.attempts.iter().all(|row| row.end.is_some()));
        assert!(plan.finished_earlier.is_empty());
        assert!(plan.inserts_only());
    }

    #[test]
    fn writes_under_two_epochs_of_one_workflow_stay_apart() {
        let old = start(1, 1, true);
        let mut new = start(1, 1, true);
        new.epoch = 2;
        let plan = Plan::of(&[&old, &new]);
        let epochs: Vec<i64> = plan.calls.iter().map(|call| call.epoch).collect();
        assert_eq!(epochs, [1, 2]);
        let epochs: Vec<i64> = plan.attempts.iter().map(|attempt| attempt.epoch).collect();
        assert_eq!(epochs, [1, 2]);
    }

    #[test]
    fn a_finish_whose_start_was_committed_earlier_updates_its_row() {
        let writes = [finish(1, 1, Some(CallStatus::Succeeded)), start(2, 1, true)];
        let plan = Plan::of(&writes.iter().collect::<Vec<_>>());
        assert_eq!(plan.finished_earlier.len(), 1);
        assert_eq!(plan.finished_earlier[0].attempt, 1);
        assert_eq!(plan.calls.len(), 2);
        assert!(plan.calls[0].new.is_none() && plan.calls[0].end.is_some() && plan.calls[0].attempts.is_none());
        assert!(plan.calls[1].new.is_some() && plan.calls[1].end.is_none());
        assert_eq!(plan.attempts.len(), 1);
        assert!(plan.attempts[0].end.is_none());
        assert!(!plan.inserts_only());
    }
}
