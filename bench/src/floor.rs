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
