//! The SQLite backend: opening a journal file (WAL, full sync, foreign keys,
//! a busy timeout for other processes' write locks), its migrations, and a
//! clear error for every way a file can be unusable.

use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection as _, SqliteConnection};

use super::faults::sqlite_code;
use super::target::SqliteTarget;
use super::{JournalError, schema};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a write waits for another process's write lock before it counts
/// as a transient fault (and is retried within the outage budget).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A SQLite journal's connections.
#[derive(Clone)]
pub(crate) struct SqliteDb {
    pub pool: SqlitePool,
}

impl SqliteDb {
    /// Opens the journal file at `target`: creating it (and its schema) when
    /// `create`, else failing with the path when it does not exist.
    pub async fn open(target: &SqliteTarget, location: &str, create: bool) -> Result<Self, JournalError> {
        let path = &target.path;
        let fail = |cause: String, hint: &str| JournalError::Open {
            location: location.to_string(),
            cause,
            hint: hint.to_string(),
        };
        if !create && !path.exists() {
            return Err(fail(
                format!("there is no journal file at {}", path.display()),
                "Nothing has run with this journal yet, or it is elsewhere: pass --journal PATH (or set STEPBOX_JOURNAL).",
            ));
        }
        if path.is_dir() {
            return Err(fail(format!("{} is a directory", path.display()), "Pass the path of a journal file."));
        }
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(|error| fail(error.to_string(), ""))?
            .filename(path)
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        // One connection first, opened directly: its error is the real cause, at once.
        let mut connection = connect(&options, path, location).await?;
        if create {
            migrate(&mut connection)
                .await
                .map_err(|error| JournalError::Schema { location: location.to_string(), message: error })?;
        } else {
            let applied = sqlx::query_as(sqlx::AssertSqlSafe(schema::applied_query("_sqlx_migrations")))
                .fetch_all(&mut connection)
                .await
                .ok();
            schema::compare(applied, &MIGRATOR)
                .map_err(|message| JournalError::Schema { location: location.to_string(), message })?;
        }
        connection.close().await.ok();
        let pool =
            SqlitePoolOptions::new().max_connections(4).acquire_timeout(BUSY_TIMEOUT * 2).connect_lazy_with(options);
        Ok(Self { pool })
    }
}

/// Applies the migrations. SQLite has no advisory lock: a process that loses
/// the race to create a fresh journal retries and finds the schema in place.
async fn migrate(connection: &mut SqliteConnection) -> Result<(), String> {
    let mut tries = 5;
    loop {
        match MIGRATOR.run(&mut *connection).await {
            Ok(()) => return Ok(()),
            Err(_) if tries > 1 => {
                tries -= 1;
                // A migration that failed halfway may have left its transaction open.
                sqlx::query("ROLLBACK").execute(&mut *connection).await.ok();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => return Err(schema::explain(&error)),
        }
    }
}

/// Opens one connection, waiting out other processes' locks for up to the
/// busy timeout: switching a new file to WAL needs it to itself, and SQLite
/// answers "locked" at once, without its busy handler, when another process
/// (a `host list`, a second `host run`) opened the file in that moment.
async fn connect(
    options: &SqliteConnectOptions,
    path: &Path,
    location: &str,
) -> Result<SqliteConnection, JournalError> {
    let deadline = tokio::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match SqliteConnection::connect_with(options).await {
            Ok(connection) => return Ok(connection),
            Err(error) if matches!(sqlite_code(&error), 5 | 6) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => return Err(open_error(path, location, &error)),
        }
    }
}

/// Why a SQLite file cannot be opened, said plainly.
fn open_error(path: &Path, location: &str, error: &sqlx::Error) -> JournalError {
    let path_text = path.display();
    let (cause, hint) = match sqlite_code(error) {
        5 | 6 => (
            format!("{path_text} stayed locked by another process for {} s", BUSY_TIMEOUT.as_secs()),
            "Another process holds the journal's lock (a stalled host, or a tool with the file open in a \
             transaction): let it finish or stop it, then try again.",
        ),
        26 => {
            (format!("{path_text} is not a SQLite database"), "Pass the path of a stepbox journal, or a new file name.")
        }
        8 => (
            format!("{path_text} is read-only"),
            "Make the file and its directory writable (the journal writes even to read it: WAL mode).",
        ),
        14 => (
            format!("{path_text} cannot be opened or created"),
            "Check that its directory exists and is writable, or pass another path with --journal.",
        ),
        _ => (format!("{path_text}: {error}"), "Check the path and its permissions."),
    };
    JournalError::Open { location: location.to_string(), cause, hint: hint.to_string() }
}
