//! The SQL of group commit: a batch's fence and rows, one statement on
//! PostgreSQL (the floor: one round trip, one commit), a transaction of
//! several elsewhere (SQLite, or a pooler, or updates of earlier rows).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use super::super::notify::PROGRESS;
use super::super::{Backend, Timestamp, statement, with_conn};
use super::plan::{CallRow, CallValues, Plan};
use super::{MAX_BATCH, Write};

/// Writes what the leases still hold; returns the (workflow, epoch) pairs
/// refused because another executor took the workflow over.
pub(super) async fn write<'w>(
    backend: &Backend,
    writes: &'w [Write],
    notice: bool,
) -> Result<HashSet<(&'w str, i64)>, sqlx::Error> {
    let now = Timestamp::now();
    let mut leases: BTreeMap<(&str, i64), &str> = BTreeMap::new();
    for write in writes {
        leases.insert((write.workflow_id.as_str(), write.epoch), &write.executor);
    }
    let plan = Plan::of(&writes.iter().collect::<Vec<_>>());
    if let (Backend::Postgres(db), true) = (backend, plan.inserts_only() && statement::persistent()) {
        let mut writer = db.writer_connection().await?;
        let owned = one_statement(&mut writer.connection, &leases, &plan, notice).await?;
        writer.keep();
        return Ok(leases.keys().copied().filter(|lease| !owned.contains(lease)).collect());
    }
    let fence = format!(
        "UPDATE workflows SET updated_at = $1 WHERE id = $2 AND lease_epoch = $3 AND status = 'running' AND {}",
        super::super::leases::live(backend)
    );
    with_conn!(backend, |conn| {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        if notice {
            super::super::notify::notify_progress(&mut *tx).await?;
        }
        let mut refused = HashSet::new();
        // The fence: touch the workflows these leases still hold (their epoch, and
        // not expired), so a process that lost or outlived its lease never writes.
        for &(id, epoch) in leases.keys() {
            let held = statement::query(sqlx::AssertSqlSafe(fence.clone()))
                .bind(now)
                .bind(id)
                .bind(epoch)
                .execute(&mut *tx)
                .await?;
            if held.rows_affected() == 0 {
                refused.insert((id, epoch));
            }
        }
        let accepted: Vec<&Write> =
            writes.iter().filter(|write| !refused.contains(&(write.workflow_id.as_str(), write.epoch))).collect();
        let plan = Plan::of(&accepted);
        for chunk in plan.calls.iter().filter(|call| call.new.is_some()).collect::<Vec<_>>().chunks(MAX_BATCH) {
            let sql = format!(
                "INSERT INTO step_calls ({CALL_FIELDS}) VALUES {} ON CONFLICT (workflow_id, seq) DO NOTHING",
                rows_from(1, CALL_COLUMNS, chunk.len())
            );
            let mut query = statement::query(sqlx::AssertSqlSafe(sql));
            for call in chunk {
                let row = call.row();
                query = query
                    .bind(row.0)
                    .bind(row.1)
                    .bind(row.2)
                    .bind(row.3)
                    .bind(row.4)
                    .bind(row.5)
                    .bind(row.6)
                    .bind(row.7)
                    .bind(row.8)
                    .bind(row.9)
                    .bind(row.10)
                    .bind(row.11);
            }
            query.execute(&mut *tx).await?;
        }
        for call in plan.calls.iter().filter(|call| call.new.is_none()) {
            if let Some(attempts) = call.attempts {
                let updated = statement::query(
                    "UPDATE step_calls SET attempts = CASE WHEN attempts > $1 THEN attempts ELSE $1 END \
                     WHERE workflow_id = $2 AND seq = $3",
                )
                .bind(attempts)
                .bind(call.workflow_id)
                .bind(call.seq)
                .execute(&mut *tx)
                .await?;
                expect_one(updated.rows_affected(), "step call", call.workflow_id, call.seq)?;
            }
            if let Some(end) = &call.end {
                let updated = statement::query(
                    "UPDATE step_calls SET status = $1, output = $2, output_json = $3, finished_at = $4 \
                     WHERE workflow_id = $5 AND seq = $6",
                )
                .bind(end.end.status)
                .bind(&end.end.output)
                .bind(&end.end.output_json)
                .bind(end.at)
                .bind(call.workflow_id)
                .bind(call.seq)
                .execute(&mut *tx)
                .await?;
                expect_one(updated.rows_affected(), "step call", call.workflow_id, call.seq)?;
            }
        }
        for chunk in plan.attempts.chunks(MAX_BATCH) {
            let sql = format!(
                "INSERT INTO step_attempts ({ATTEMPT_FIELDS}) VALUES {} ON CONFLICT (workflow_id, seq, attempt) \
                 DO UPDATE SET {ATTEMPT_FINISH_FROM_EXCLUDED}",
                rows_from(1, ATTEMPT_COLUMNS, chunk.len())
            );
            let mut query = statement::query(sqlx::AssertSqlSafe(sql));
            for attempt in chunk {
                let end = attempt.end;
                query = query
                    .bind(attempt.workflow_id)
                    .bind(attempt.seq)
                    .bind(attempt.attempt)
                    .bind(attempt.executor)
                    .bind(attempt.started_at)
                    .bind(end.and_then(|end| end.finished_at))
                    .bind(end.map(|end| end.outcome))
                    .bind(end.and_then(|end| end.kind))
                    .bind(end.and_then(|end| end.message.as_deref()))
                    .bind(end.and_then(|end| end.retry_at))
                    .bind(end.and_then(|end| end.stdout.as_deref()))
                    .bind(end.and_then(|end| end.stderr.as_deref()));
            }
            query.execute(&mut *tx).await?;
        }
        for attempt in &plan.finished_earlier {
            let Some(end) = attempt.end else { continue };
            let updated = statement::query(
                "UPDATE step_attempts SET finished_at = $1, outcome = $2, kind = $3, message = $4, retry_at = $5, \
                 stdout = $6, stderr = $7 WHERE workflow_id = $8 AND seq = $9 AND attempt = $10",
            )
            .bind(end.finished_at)
            .bind(end.outcome)
            .bind(end.kind)
            .bind(end.message.as_deref())
            .bind(end.retry_at)
            .bind(end.stdout.as_deref())
            .bind(end.stderr.as_deref())
            .bind(attempt.workflow_id)
            .bind(attempt.seq)
            .bind(attempt.attempt)
            .execute(&mut *tx)
            .await?;
            expect_one(updated.rows_affected(), "attempt", attempt.workflow_id, attempt.seq)?;
        }
        tx.commit().await?;
        Ok(refused)
    })
    .await
}

/// PostgreSQL: fence and inserts of a batch in one statement, so the batch
/// costs one round trip and one commit — the floor. The fence is a share
/// lock on the held workflow rows (it conflicts with a takeover's update
/// without writing a row version per batch). Returns the leases still held.
async fn one_statement<'w>(
    connection: &mut sqlx::PgConnection,
    leases: &BTreeMap<(&'w str, i64), &'w str>,
    plan: &Plan<'w>,
    notice: bool,
) -> Result<HashSet<(&'w str, i64)>, sqlx::Error> {
    if leases.len() == 1 {
        one_workflow(connection, leases, plan, notice).await
    } else {
        many_workflows(connection, leases, plan, notice).await
    }
}

/// [`one_statement`] for the writes of several workflows: every column
/// travels as one array, so a batch of any size is the same statement,
/// prepared once per connection and planned once, not parsed and planned
/// again for each new size (the sizes of concurrent batches seldom repeat).
async fn many_workflows<'w>(
    connection: &mut sqlx::PgConnection,
    leases: &BTreeMap<(&'w str, i64), &'w str>,
    plan: &Plan<'w>,
    notice: bool,
) -> Result<HashSet<(&'w str, i64)>, sqlx::Error> {
    let calls: Vec<CallValues<'w>> = plan.calls.iter().map(CallRow::row).collect();
    let ends = || plan.attempts.iter().map(|attempt| attempt.end);
    let owned = statement::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(MANY_WORKFLOWS.as_str()))
        .bind(leases.keys().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(leases.keys().map(|(_, epoch)| *epoch).collect::<Vec<_>>())
        .bind(calls.iter().map(|row| row.0).collect::<Vec<_>>())
        .bind(calls.iter().map(|row| row.1).collect::<Vec<_>>())
        .bind(calls.iter().map(|row| row.2).collect::<Vec<_>>())
        .bind(calls.iter().map(|row| row.3).collect::<Vec<_>>())
        .bind(calls.iter().map(|row| row.4).collect::<Vec<_>>())
        .bind(calls.iter().map(|row| row.5.as_column()).collect::<Vec<_>>())
        .bind(calls.iter().map(|row| row.6).collect::<Vec<_>>())
        .bind(calls.iter().map(|row| row.7).collect::<Vec<_>>())
        .bind(calls.iter().map(|row| row.8).collect::<Vec<_>>())
        .bind(calls.iter().map(|row| row.9).collect::<Vec<_>>())
        .bind(calls.iter().map(|row| row.10).collect::<Vec<_>>())
        .bind(calls.iter().map(|row| row.11).collect::<Vec<_>>())
        .bind(plan.calls.iter().map(|call| call.epoch).collect::<Vec<_>>())
        .bind(plan.attempts.iter().map(|attempt| attempt.workflow_id).collect::<Vec<_>>())
        .bind(plan.attempts.iter().map(|attempt| attempt.seq).collect::<Vec<_>>())
        .bind(plan.attempts.iter().map(|attempt| attempt.attempt).collect::<Vec<_>>())
        .bind(plan.attempts.iter().map(|attempt| attempt.executor).collect::<Vec<_>>())
        .bind(plan.attempts.iter().map(|attempt| attempt.started_at).collect::<Vec<_>>())
        .bind(ends().map(|end| end.and_then(|end| end.finished_at)).collect::<Vec<_>>())
        .bind(ends().map(|end| end.map(|end| end.outcome.as_column())).collect::<Vec<_>>())
        .bind(ends().map(|end| end.and_then(|end| end.kind).map(|kind| kind.as_column())).collect::<Vec<_>>())
        .bind(ends().map(|end| end.and_then(|end| end.message.as_deref())).collect::<Vec<_>>())
        .bind(ends().map(|end| end.and_then(|end| end.retry_at)).collect::<Vec<_>>())
        .bind(ends().map(|end| end.and_then(|end| end.stdout.as_deref())).collect::<Vec<_>>())
        .bind(ends().map(|end| end.and_then(|end| end.stderr.as_deref())).collect::<Vec<_>>())
        .bind(plan.attempts.iter().map(|attempt| attempt.epoch).collect::<Vec<_>>())
        .bind(notice)
        .fetch_all(connection)
        .await?;
    Ok(leases
        .keys()
        .copied()
        .filter(|(id, epoch)| owned.iter().any(|(owned_id, owned_epoch)| owned_id == id && owned_epoch == epoch))
        .collect())
}

/// The batch statement of [`many_workflows`]: `$1`–`$2` the held leases,
/// `$3`–`$14` the new calls' columns and `$15` their epochs, `$16`–`$27` the
/// attempts' columns and `$28` their epochs, `$29` whether to tell listeners
/// (identical notices of one transaction are delivered once). A row goes in
/// only under the fence of its own (workflow, epoch): a write queued under an
/// older lease of a workflow never lands beside the newer lease's.
static MANY_WORKFLOWS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let calls_at = 3;
    let call_epochs_at = calls_at + CALL_COLUMNS;
    let attempts_at = call_epochs_at + 1;
    let attempt_epochs_at = attempts_at + ATTEMPT_COLUMNS;
    let notice_at = attempt_epochs_at + 1;
    format!(
        // The fence looks each held workflow up by its key alone, status, epoch
        // and expiry checked after the lock (`OFFSET 0` keeps them out of the
        // lookup): otherwise the one generic plan may walk the partial index
        // of every running workflow instead.
        "WITH fence AS (SELECT w.id, w.lease_epoch FROM unnest($1::text[], $2::bigint[]) AS held (id, epoch) \
         CROSS JOIN LATERAL (SELECT id, lease_epoch, status, lease_expires_at FROM workflows WHERE id = held.id \
         FOR SHARE OFFSET 0) AS w \
         WHERE w.lease_epoch = held.epoch AND w.status = 'running' AND w.lease_expires_at > statement_timestamp()), \
         calls AS (INSERT INTO step_calls ({CALL_FIELDS}) SELECT {CALL_FIELDS} FROM unnest({calls}, \
         ${call_epochs_at}::bigint[]) AS v ({CALL_FIELDS}, epoch) \
         WHERE (v.workflow_id, v.epoch) IN (SELECT id, lease_epoch FROM fence) \
         ON CONFLICT (workflow_id, seq) DO NOTHING), \
         attempts AS (INSERT INTO step_attempts ({ATTEMPT_FIELDS}) SELECT {ATTEMPT_FIELDS} FROM unnest({attempts}, \
         ${attempt_epochs_at}::bigint[]) AS v ({ATTEMPT_FIELDS}, epoch) \
         WHERE (v.workflow_id, v.epoch) IN (SELECT id, lease_epoch FROM fence) \
         ON CONFLICT (workflow_id, seq, attempt) DO UPDATE SET {ATTEMPT_FINISH_FROM_EXCLUDED}) \
         SELECT id, lease_epoch, (SELECT pg_notify(current_schema() || '_{PROGRESS}', '') WHERE ${notice_at}) \
         FROM fence",
        calls = array_parameters(calls_at, CALL_TYPES),
        attempts = array_parameters(attempts_at, ATTEMPT_TYPES),
    )
});

/// As [`many_workflows`], for a batch of one workflow's writes (`leases`
/// holds one), with a row of parameters per row: a batch of one step costs PostgreSQL 0.1 ms less
/// this way than through arrays, and one workflow's batches come in few shapes
/// (each shape is a statement prepared once per connection).
async fn one_workflow<'w>(
    connection: &mut sqlx::PgConnection,
    leases: &BTreeMap<(&'w str, i64), &'w str>,
    plan: &Plan<'w>,
    notice: bool,
) -> Result<HashSet<(&'w str, i64)>, sqlx::Error> {
    let calls_at = 3;
    let attempts_at = calls_at + plan.calls.len() * CALL_COLUMNS;
    let sql = format!(
        // The lookup by key as in [`MANY_WORKFLOWS`].
        "WITH fence AS (SELECT id, lease_epoch FROM (SELECT id, lease_epoch, status, lease_expires_at FROM workflows \
         WHERE id = $1 FOR SHARE OFFSET 0) AS w WHERE lease_epoch = $2 AND status = 'running' \
         AND lease_expires_at > statement_timestamp()), \
         calls AS (INSERT INTO step_calls ({CALL_FIELDS}) SELECT * FROM (VALUES {calls}) AS v ({CALL_FIELDS}) \
         WHERE v.workflow_id IN (SELECT id FROM fence) ON CONFLICT (workflow_id, seq) DO NOTHING), \
         attempts AS (INSERT INTO step_attempts ({ATTEMPT_FIELDS}) SELECT * FROM (VALUES {attempts}) \
         AS v ({ATTEMPT_FIELDS}) WHERE v.workflow_id IN (SELECT id FROM fence) \
         ON CONFLICT (workflow_id, seq, attempt) DO UPDATE SET {ATTEMPT_FINISH_FROM_EXCLUDED}) \
         SELECT id, lease_epoch FROM fence{notice}",
        // Identical notices of one transaction are delivered once.
        notice = if notice {
            format!(", (SELECT pg_notify(current_schema() || '_{PROGRESS}', '')) AS notice")
        } else {
            String::new()
        },
        calls = typed_rows(calls_at, CALL_TYPES, plan.calls.len()),
        attempts = typed_rows(attempts_at, ATTEMPT_TYPES, plan.attempts.len()),
    );
    let mut query = statement::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql));
    for (id, epoch) in leases.keys() {
        query = query.bind(*id).bind(*epoch);
    }
    for call in &plan.calls {
        let row = call.row();
        query = query
            .bind(row.0)
            .bind(row.1)
            .bind(row.2)
            .bind(row.3)
            .bind(row.4)
            .bind(row.5)
            .bind(row.6)
            .bind(row.7)
            .bind(row.8)
            .bind(row.9)
            .bind(row.10)
            .bind(row.11);
    }
    for attempt in &plan.attempts {
        let end = attempt.end;
        query = query
            .bind(attempt.workflow_id)
            .bind(attempt.seq)
            .bind(attempt.attempt)
            .bind(attempt.executor)
            .bind(attempt.started_at)
            .bind(end.and_then(|end| end.finished_at))
            .bind(end.map(|end| end.outcome))
            .bind(end.and_then(|end| end.kind))
            .bind(end.and_then(|end| end.message.as_deref()))
            .bind(end.and_then(|end| end.retry_at))
            .bind(end.and_then(|end| end.stdout.as_deref()))
            .bind(end.and_then(|end| end.stderr.as_deref()));
    }
    let owned = query.fetch_all(connection).await?;
    Ok(leases
        .keys()
        .copied()
        .filter(|(id, epoch)| owned.iter().any(|(owned_id, owned_epoch)| owned_id == id && owned_epoch == epoch))
        .collect())
}

const CALL_FIELDS: &str = "workflow_id, seq, step, input, input_json, status, output, output_json, attempts, \
                           max_attempts, started_at, finished_at";
const CALL_COLUMNS: usize = 12;
/// PostgreSQL types of [`CALL_FIELDS`], for the batch statements' rows and arrays.
const CALL_TYPES: [&str; CALL_COLUMNS] = [
    "text",
    "bigint",
    "text",
    "text",
    "jsonb",
    "text",
    "text",
    "jsonb",
    "integer",
    "integer",
    "timestamptz",
    "timestamptz",
];
const ATTEMPT_FIELDS: &str =
    "workflow_id, seq, attempt, executor, started_at, finished_at, outcome, kind, message, retry_at, stdout, stderr";
const ATTEMPT_COLUMNS: usize = 12;
const ATTEMPT_TYPES: [&str; ATTEMPT_COLUMNS] = [
    "text",
    "bigint",
    "integer",
    "text",
    "timestamptz",
    "timestamptz",
    "text",
    "text",
    "text",
    "timestamptz",
    "text",
    "text",
];
/// An attempt row written again (a start whose finish is now known, or a
/// batch retried after an unknown commit) takes the finish it carries.
const ATTEMPT_FINISH_FROM_EXCLUDED: &str = "finished_at = COALESCE(excluded.finished_at, step_attempts.finished_at), \
     outcome = COALESCE(excluded.outcome, step_attempts.outcome), kind = COALESCE(excluded.kind, step_attempts.kind), \
     message = COALESCE(excluded.message, step_attempts.message), \
     retry_at = COALESCE(excluded.retry_at, step_attempts.retry_at), \
     stdout = COALESCE(excluded.stdout, step_attempts.stdout), stderr = COALESCE(excluded.stderr, step_attempts.stderr)";

/// `$first, $first+1, …` for `count` parameters.
fn placeholders(first: usize, count: usize) -> String {
    let mut text = String::new();
    for n in first..first + count {
        if n > first {
            text.push_str(", ");
        }
        let _ = write!(text, "${n}");
    }
    text
}

/// `($first, …), (…)` for `rows` rows of `columns` parameters.
fn rows_from(first: usize, columns: usize, rows: usize) -> String {
    (0..rows).map(|row| format!("({})", placeholders(first + row * columns, columns))).collect::<Vec<_>>().join(", ")
}

/// As [`rows_from`], the first row's parameters cast to `types` so the `VALUES` list has column types.
fn typed_rows(first: usize, types: [&str; 12], rows: usize) -> String {
    (0..rows)
        .map(|row| {
            let cells: Vec<String> = (0..types.len())
                .map(|column| {
                    let n = first + row * types.len() + column;
                    if row == 0 { format!("${n}::{}", types[column]) } else { format!("${n}") }
                })
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `$first::type[], …`: one array parameter per column of `types`.
fn array_parameters(first: usize, types: [&str; 12]) -> String {
    types.iter().enumerate().map(|(n, ty)| format!("${}::{ty}[]", first + n)).collect::<Vec<_>>().join(", ")
}

/// An update that found no row means an earlier write of the same call
/// failed: a broken invariant to report, not an outage to wait out (an
/// `InvalidArgument` is never retried).
fn expect_one(rows: u64, what: &str, workflow_id: &str, seq: i64) -> Result<(), sqlx::Error> {
    if rows == 1 {
        Ok(())
    } else {
        Err(sqlx::Error::InvalidArgument(format!(
            "the {what} row of call {seq} of workflow {workflow_id} is missing (an earlier write of it failed); \
             this is a bug in stepbox: please report it with the workflow's `host show` output"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_row_is_a_bug_to_report_not_an_outage_to_wait_out() {
        let error = expect_one(0, "attempt", "w", 3).unwrap_err();
        assert_eq!(super::super::super::faults::classify(&error), super::super::super::faults::Fault::Permanent);
        assert!(error.to_string().contains("please report it"), "{error}");
        assert!(expect_one(1, "attempt", "w", 3).is_ok());
    }

    #[test]
    fn placeholders_number_rows_in_order() {
        assert_eq!(placeholders(3, 2), "$3, $4");
        assert_eq!(rows_from(1, 2, 2), "($1, $2), ($3, $4)");
        assert_eq!(rows_from(5, 1, 2), "($5), ($6)");
        let types = ["text"; 12];
        assert!(typed_rows(1, types, 2).starts_with("($1::text, $2::text"));
        assert!(typed_rows(1, types, 2).contains("), ($13, $14"));
        assert!(array_parameters(3, CALL_TYPES).starts_with("$3::text[], $4::bigint[], "));
        assert!(array_parameters(3, CALL_TYPES).ends_with(", $14::timestamptz[]"));
    }
}
