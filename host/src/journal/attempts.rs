//! The attempt-write API the invoker uses: an attempt's start and end go
//! through group commit in order; a call waiting for its next attempt can
//! be closed as cancelled.

use super::group_commit::{Change, NewCall, Write};
use super::{
    AttemptEnd, CallEnd, CallRef, Journal, JournalError, NewStepCall, PendingWrite, Timestamp, statement, with_conn,
};

impl Journal {
    /// Queues the record that an attempt started at `at` (for a call's first
    /// attempt, with the call row). Lazy: it is committed with the attempt's
    /// outcome or within [`LAZY_WINDOW`](super::LAZY_WINDOW), whichever comes first.
    pub fn start_attempt(
        &self,
        call: CallRef<'_>,
        attempt: u32,
        at: Timestamp,
        new_call: Option<&NewStepCall<'_>>,
    ) -> PendingWrite {
        let new_call = new_call.map(|call| NewCall {
            step: call.step.to_string(),
            input: call.input.to_string(),
            input_json: call.input_json.clone(),
            max_attempts: i32::try_from(call.max_attempts).unwrap_or(i32::MAX),
        });
        self.send(call, attempt, Change::Start { at, new_call })
    }

    /// Queues an attempt's end and, when it ends the call, the call's result;
    /// the workflow may see either only once the write is durable.
    pub fn finish_attempt(
        &self,
        call: CallRef<'_>,
        attempt: u32,
        end: AttemptEnd,
        call_end: Option<CallEnd>,
    ) -> PendingWrite {
        self.send(call, attempt, Change::Finish { end, call_end })
    }

    fn send(&self, call: CallRef<'_>, attempt: u32, change: Change) -> PendingWrite {
        self.writer.send(Write {
            workflow_id: call.lease.workflow_id.clone(),
            executor: call.lease.executor.clone(),
            epoch: call.lease.epoch,
            seq: call.seq,
            attempt: i32::try_from(attempt).unwrap_or(i32::MAX),
            change,
        })
    }

    /// Closes a call that was waiting for its next attempt as cancelled, if
    /// `call.lease` still holds its workflow.
    pub async fn cancel_call(&self, call: CallRef<'_>) -> Result<(), JournalError> {
        let now = Timestamp::now();
        let sql = format!(
            "UPDATE step_calls SET status = 'cancelled', finished_at = $1 WHERE workflow_id = $2 AND seq = $3 \
             AND status = 'running' AND EXISTS (SELECT 1 FROM workflows WHERE id = $2 AND lease_epoch = $4 \
             AND status = 'running' AND {})",
            super::leases::live(&self.backend)
        );
        self.commit("cancel of a step call", || {
            with_conn!(&self.backend, |conn| {
                statement::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(now)
                    .bind(&call.lease.workflow_id)
                    .bind(call.seq)
                    .bind(call.lease.epoch)
                    .execute(conn)
                    .await
                    .map(|_| ())
            })
        })
        .await
    }
}
