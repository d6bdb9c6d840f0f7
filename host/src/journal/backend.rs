//! The database behind a journal and what differs between the two: how a
//! connection is taken (`with_conn!`), and the dialect — row locks that skip
//! what others hold, how a write transaction begins, whether NOTIFY exists.
//! Statements are written once and run on either backend's connection.

use super::postgres::PgDb;
use super::sqlite::SqliteDb;

/// Runs `$body` (an expression of type `Result<T, sqlx::Error>` that may
/// `.await` and use `?`) with `$conn` bound to a connection of the journal's
/// database: `&mut SqliteConnection` or `&mut PgConnection`. The statements
/// are written once and run on either backend.
macro_rules! with_conn {
    ($backend:expr, |$conn:ident| $body:expr) => {
        async {
            match $backend {
                $crate::journal::Backend::Sqlite(db) => {
                    let mut connection = db.pool.acquire().await?;
                    let result = {
                        let $conn: &mut sqlx::SqliteConnection = &mut *connection;
                        async { $body }.await
                    };
                    // A connection that failed may be left inside a transaction: never reuse it.
                    if result.is_err() {
                        connection.close_on_drop();
                    }
                    result
                }
                $crate::journal::Backend::Postgres(db) => {
                    let mut connection = db.pool().acquire().await?;
                    let result = if db.pooler() {
                        // Through a pooler: one transaction, so one server connection, per operation.
                        async {
                            let mut tx = sqlx::Connection::begin(&mut *connection).await?;
                            db.enter_schema(&mut tx).await?;
                            let value = {
                                let $conn: &mut sqlx::PgConnection = &mut *tx;
                                let result: Result<_, sqlx::Error> = async { $body }.await;
                                result
                            }?;
                            tx.commit().await?;
                            Ok::<_, sqlx::Error>(value)
                        }
                        .await
                    } else {
                        let $conn: &mut sqlx::PgConnection = &mut *connection;
                        async { $body }.await
                    };
                    if result.is_err() {
                        connection.close_on_drop();
                    }
                    result
                }
            }
        }
    };
}
pub(crate) use with_conn;

/// The database behind a journal.
#[derive(Clone)]
pub(crate) enum Backend {
    Sqlite(SqliteDb),
    Postgres(PgDb),
}

impl Backend {
    /// After a transient fault: fresh connections (PostgreSQL may pick another host).
    pub(crate) async fn reconnect(&self) {
        if let Self::Postgres(db) = self {
            db.reconnect().await;
        }
    }
}

/// Which database a journal is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Sqlite,
    Postgres,
}

/// SQLite's clock in milliseconds since the Unix epoch (`julianday` counts
/// days since noon on 24 November 4714 BC, with millisecond precision).
const SQLITE_NOW: &str = "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)";

impl Backend {
    /// Which database it is.
    pub(crate) fn kind(&self) -> BackendKind {
        match self {
            Self::Sqlite(_) => BackendKind::Sqlite,
            Self::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// `FOR UPDATE SKIP LOCKED` where rows can be locked (PostgreSQL); SQLite
    /// locks the whole file for a write transaction instead.
    pub(crate) fn skip_locked(&self) -> &'static str {
        match self {
            Self::Postgres(_) => " FOR UPDATE SKIP LOCKED",
            Self::Sqlite(_) => "",
        }
    }

    /// `FOR UPDATE` where rows can be locked (PostgreSQL).
    pub(crate) fn for_update(&self) -> &'static str {
        match self {
            Self::Postgres(_) => " FOR UPDATE",
            Self::Sqlite(_) => "",
        }
    }

    /// The database's clock now, as SQL. Leases are set and judged by this one
    /// clock, never by the clocks of the hosts that hold them (on SQLite the
    /// database is a file on this machine: its clock is this machine's).
    pub(crate) fn now(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "statement_timestamp()",
            Self::Sqlite(_) => SQLITE_NOW,
        }
    }

    /// `base` plus `millis` milliseconds, as SQL (`millis` a parameter or a column).
    pub(crate) fn plus_millis(&self, base: &str, millis: &str) -> String {
        match self {
            Self::Postgres(_) => format!("({base} + {millis}::bigint * interval '1 millisecond')"),
            Self::Sqlite(_) => format!("({base} + {millis})"),
        }
    }

    /// The database's clock `millis` milliseconds from now, as SQL.
    pub(crate) fn now_plus(&self, millis: &str) -> String {
        self.plus_millis(self.now(), millis)
    }

    /// How a transaction that reads before it writes begins, when not plainly:
    /// SQLite takes the write lock at once (`BEGIN IMMEDIATE`), so two such
    /// transactions never interleave; PostgreSQL locks rows as it goes (and
    /// through a pooler the transaction is already open: a plain begin nests).
    pub(crate) fn begin_write(&self) -> Option<&'static str> {
        match self {
            Self::Postgres(_) => None,
            Self::Sqlite(_) => Some("BEGIN IMMEDIATE"),
        }
    }
}
