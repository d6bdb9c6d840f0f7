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
    let summary = timed(commits, async |n| {
        sqlx::query("INSERT INTO bench_floor (v) VALUES ($1)").bind(n).execute(&mut connection).await.map(drop)
    })
    .await?;
    connection.execute("DROP TABLE bench_floor").await?;
    Ok(summary)
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
