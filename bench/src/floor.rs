//! The physical floor a durable step stands on: one single-row INSERT
//! committed on its own, measured on the same database in the same run.

use std::time::{Duration, Instant};

use sqlx::{Connection as _, Executor as _};
use stepbox::journal::{AttemptOutcome, CallStatus, FailureKind};
use stepbox::run::{AttemptFailure, exhausted, to_json, to_wave};

use crate::cpu;
use crate::stats::{Summary, summarize};
use crate::workloads::micros;

/// µs per autocommitted single-row INSERT on PostgreSQL at `url`.
pub async fn postgres(url: &str, commits: usize) -> anyhow::Result<Summary> {
    let mut connection = sqlx::PgConnection::connect(url).await?;
    connection
        .execute("DROP TABLE IF EXISTS bench_floor; CREATE TABLE bench_floor (id BIGSERIAL PRIMARY KEY, v BIGINT)")
        .await?;
    let summary = timed(commits, async |n| {
        sqlx::query("INSERT INTO bench_floor (v) VALUES ($1)").bind(n).execute(&mut connection).await.map(drop)
    })
    .await?;
    connection.execute("DROP TABLE bench_floor").await?;
    Ok(summary)
}

/// Single-row commits per second on PostgreSQL from `connections` connections
/// at once, `commits` each: the server's commit capacity, as many workers see it.
pub async fn postgres_concurrent(url: &str, connections: usize, commits: usize) -> anyhow::Result<f64> {
    let mut setup = sqlx::PgConnection::connect(url).await?;
    setup
        .execute(
            "DROP TABLE IF EXISTS bench_floor_many; \
             CREATE TABLE bench_floor_many (id BIGSERIAL PRIMARY KEY, v BIGINT)",
        )
        .await?;
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(sqlx::PgConnection::connect(url).await?);
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut connection in clients {
        tasks.spawn(async move {
            for n in 0..commits {
                sqlx::query("INSERT INTO bench_floor_many (v) VALUES ($1)")
                    .bind(n as i64)
                    .execute(&mut connection)
                    .await?;
            }
            Ok::<_, sqlx::Error>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let rate = (connections * commits) as f64 / started.elapsed().as_secs_f64();
    setup.execute("DROP TABLE bench_floor_many").await?;
    Ok(rate)
}

/// µs per autocommitted single-row INSERT into a SQLite file with the
/// journal's settings (WAL, `synchronous = FULL`).
pub async fn sqlite(path: &std::path::Path, commits: usize) -> anyhow::Result<Summary> {
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut connection = sqlx::SqliteConnection::connect(&url).await?;
    connection
        .execute(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
             CREATE TABLE bench_floor (id INTEGER PRIMARY KEY, v BIGINT)",
        )
        .await?;
    timed(commits, async |n| {
        sqlx::query("INSERT INTO bench_floor (v) VALUES ($1)").bind(n).execute(&mut connection).await.map(drop)
    })
    .await
}

/// µs per call of `insert`, `commits` times after a warm-up tenth.
async fn timed(commits: usize, mut insert: impl AsyncFnMut(i64) -> sqlx::Result<()>) -> anyhow::Result<Summary> {
    let mut samples = Vec::with_capacity(commits);
    for n in 0..commits + commits / 10 {
        let started = Instant::now();
        insert(n as i64).await?;
        if n >= commits / 10 {
            samples.push(micros(started.elapsed()));
        }
    }
    Ok(summarize(samples))
}

/// Steps per second when the rows `workflows` workflows of `steps` no-op
/// steps leave in the journal (a workflow row created and finished, a call
/// row and one attempt row per step) are written by a plain loop, one
/// transaction per batch of `batch` steps, on one connection, into the
/// journal's own tables and indexes — with no Wasm, no tasks, no waiting:
/// what group commit of that batch size could reach at best. Also returns
/// the machine's CPU µs per step meanwhile (PostgreSQL's, mostly).
pub async fn batched(url: &str, workflows: usize, steps: u32, batch: usize) -> anyhow::Result<(f64, f64)> {
    const SCHEMA: &str = "bench_floor";
    let mut connection = sqlx::PgConnection::connect(url).await?;
    connection.execute(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))).await?;
    // The journal makes its tables and indexes, as for a real run.
    drop(stepbox::journal::Journal::open(&format!("{url}?schema={SCHEMA}")).await?);
    connection.execute(sqlx::AssertSqlSafe(format!("SET search_path TO {SCHEMA}"))).await?;
    let batch = batch.max(1);
    let ids: Vec<String> = (0..workflows).map(|n| format!("floor-{n}")).collect();
    let machine_before = cpu::machine();
    let started = Instant::now();
    for chunk in ids.chunks(batch) {
        let mut insert = sqlx::QueryBuilder::new(
            "INSERT INTO workflows (id, name, component, component_digest, entry, input, input_json, status, options, \
             executor, lease_expires_at, created_at, updated_at) ",
        );
        insert.push_values(chunk, |mut row, id| {
            row.push_bind(id)
                .push_bind("bench-loop")
                .push_bind("bench-loop.wasm")
                .push_bind("digest")
                .push_bind("sequential")
                .push_bind(format!("({steps})"))
                .push_bind(serde_json::json!([steps]))
                .push_bind("running")
                .push_bind(serde_json::json!({}))
                .push_bind("floor")
                .push("now() + interval '1 minute'")
                .push("now()")
                .push("now()");
        });
        insert.build().execute(&mut connection).await?;
    }
    // Step k of every workflow, then step k + 1, as concurrent workflows advance.
    let rows: Vec<(&str, i64)> =
        (1..=i64::from(steps)).flat_map(|seq| ids.iter().map(move |id| (id.as_str(), seq))).collect();
    for chunk in rows.chunks(batch) {
        let mut calls = sqlx::QueryBuilder::new(
            "WITH calls AS (INSERT INTO step_calls (workflow_id, seq, step, input, input_json, status, output, \
             output_json, attempts, max_attempts, started_at, finished_at) ",
        );
        calls.push_values(chunk, |mut row, (id, seq)| {
            row.push_bind(*id)
                .push_bind(*seq)
                .push_bind("guests:bench/steps.noop")
                .push_bind(format!("({seq})"))
                .push_bind(serde_json::json!([seq]))
                .push_bind("succeeded")
                .push_bind(format!("{seq}"))
                .push_bind(serde_json::json!(seq))
                .push_bind(1)
                .push_bind(3)
                .push("now()")
                .push("now()");
        });
        calls.push(
            "), attempts AS (INSERT INTO step_attempts (workflow_id, seq, attempt, executor, started_at, \
             finished_at, outcome) ",
        );
        calls.push_values(chunk, |mut row, (id, seq)| {
            row.push_bind(*id)
                .push_bind(*seq)
                .push_bind(1)
                .push_bind("floor")
                .push("now()")
                .push("now()")
                .push_bind("ok");
        });
        calls.push(") SELECT 1");
        calls.build().execute(&mut connection).await?;
    }
    for chunk in ids.chunks(batch) {
        sqlx::query(
            "UPDATE workflows SET status = 'succeeded', output = '0', updated_at = now(), finished_at = now(), \
             lease_expires_at = NULL WHERE id = ANY($1)",
        )
        .bind(chunk)
        .execute(&mut connection)
        .await?;
    }
    let rate = rows.len() as f64 / started.elapsed().as_secs_f64();
    let machine = micros(cpu::machine().saturating_sub(machine_before)) / rows.len() as f64;
    connection.execute(sqlx::AssertSqlSafe(format!("DROP SCHEMA {SCHEMA} CASCADE"))).await?;
    Ok((rate, machine))
}

/// The call a fenced transaction journals: one fast step, or one that failed every attempt.
#[derive(Debug, Clone, Copy)]
pub enum OwnCall {
    /// A step that succeeded at once: the call row and one `ok` attempt row.
    Succeeded,
    /// A step that failed all 3 attempts: the call row with its
    /// `retries-exhausted` value and three `failed` attempt rows.
    Exhausted,
}

/// µs per call's own transaction with nothing around it: the statement group
/// commit sends for one call (the fence's share lock on the workflow row, the
/// call row, its attempt rows, in the journal's own tables and indexes), from
/// a plain loop on one connection.
pub async fn own_transaction(url: &str, call: OwnCall, calls: usize) -> anyhow::Result<Summary> {
    const SCHEMA: &str = "bench_step_floor";
    let mut connection = sqlx::PgConnection::connect(url).await?;
    connection.execute(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))).await?;
    drop(stepbox::journal::Journal::open(&format!("{url}?schema={SCHEMA}")).await?);
    connection.execute(sqlx::AssertSqlSafe(format!("SET search_path TO {SCHEMA}"))).await?;
    connection
        .execute(
            "INSERT INTO workflows (id, name, component, component_digest, entry, input, input_json, status, options, \
             executor, lease_epoch, created_at, updated_at) VALUES ('floor', 'bench-loop', 'bench-loop.wasm', \
             'digest', 'sequential', '()', '[]', 'running', '{}', 'floor', 1, now(), now())",
        )
        .await?;
    // $1 seq, $2 input, $3 its JSON, $4 output, $5 its JSON, $6 attempts, $7 call status,
    // $8 attempt outcome, $9 failure kind, $10 failure message.
    let statement = "WITH fence AS (SELECT id FROM workflows WHERE status = 'running' \
         AND (id, lease_epoch) IN (('floor', 1)) FOR SHARE), \
         calls AS (INSERT INTO step_calls (workflow_id, seq, step, input, input_json, status, output, output_json, \
         attempts, max_attempts, started_at, finished_at) SELECT 'floor', $1, 'guests:bench/steps.noop', $2, $3, \
         $7, $4, $5, $6, 3, now(), now() WHERE 'floor' IN (SELECT id FROM fence)), \
         attempts AS (INSERT INTO step_attempts (workflow_id, seq, attempt, executor, started_at, finished_at, \
         outcome, kind, message) SELECT 'floor', $1, attempt, 'floor', now(), now(), $8, $9, $10 \
         FROM generate_series(1, $6) AS attempt WHERE 'floor' IN (SELECT id FROM fence)) \
         SELECT id FROM fence";
    let summary = timed(calls, async |n| {
        let (output, output_json, attempts, status, outcome, kind, message) = match call {
            OwnCall::Succeeded => {
                (n.to_string(), serde_json::json!(n), 1, CallStatus::Succeeded, AttemptOutcome::Ok, None, None)
            }
            OwnCall::Exhausted => {
                // The value the runtime hands the workflow, as it journals it.
                let message = format!("failed(\"call {n} fails on purpose\")");
                let failures: Vec<AttemptFailure> = (1..=3)
                    .map(|attempt| AttemptFailure {
                        attempt,
                        kind: FailureKind::ReturnedError,
                        message: message.clone(),
                        elapsed: Duration::ZERO,
                    })
                    .collect();
                let value = exhausted("guests:bench/steps.fail", &failures);
                let (output, output_json) = (to_wave(&value), to_json(&value));
                let kind = Some(FailureKind::ReturnedError.as_column());
                (output, output_json, 3, CallStatus::Exhausted, AttemptOutcome::Failed, kind, Some(message))
            }
        };
        sqlx::query(statement)
            .bind(n)
            .bind(format!("({n})"))
            .bind(serde_json::json!([n]))
            .bind(output)
            .bind(output_json)
            .bind(attempts)
            .bind(status.as_column())
            .bind(outcome.as_column())
            .bind(kind)
            .bind(message)
            .execute(&mut connection)
            .await
            .map(drop)
    })
    .await?;
    connection.execute(sqlx::AssertSqlSafe(format!("DROP SCHEMA {SCHEMA} CASCADE"))).await?;
    Ok(summary)
}
