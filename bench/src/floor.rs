//! The physical floor a durable step stands on: one single-row INSERT
//! committed on its own, measured on the same database in the same run.

use std::time::Instant;

use sqlx::{Connection as _, Executor as _};

use crate::stats::{Summary, summarize};
use crate::workloads::micros;

/// µs per autocommitted single-row INSERT on PostgreSQL at `url`.
pub async fn postgres(url: &str, commits: usize) -> anyhow::Result<Summary> {
    let mut connection = sqlx::PgConnection::connect(url).await?;
    connection
        .execute("DROP TABLE IF EXISTS bench_floor; CREATE TABLE bench_floor (id BIGSERIAL PRIMARY KEY, v BIGINT)")
        .await?;
    let mut samples = Vec::with_capacity(commits);
    for n in 0..commits + commits / 10 {
        let started = Instant::now();
        sqlx::query("INSERT INTO bench_floor (v) VALUES ($1)").bind(n as i64).execute(&mut connection).await?;
        if n >= commits / 10 {
            samples.push(micros(started.elapsed()));
        }
    }
    connection.execute("DROP TABLE bench_floor").await?;
    Ok(summarize(samples))
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
    let mut samples = Vec::with_capacity(commits);
    for n in 0..commits + commits / 10 {
        let started = Instant::now();
        sqlx::query("INSERT INTO bench_floor (v) VALUES ($1)").bind(n as i64).execute(&mut connection).await?;
        if n >= commits / 10 {
            samples.push(micros(started.elapsed()));
        }
    }
    Ok(summarize(samples))
}
