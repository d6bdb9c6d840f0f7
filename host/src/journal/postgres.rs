//! The PostgreSQL backend: the journal's own schema (`search_path` set on
//! every connection), migrations under an advisory lock, failover across the
//! hosts of a multi-host URL (only a server that accepts writes is used), and
//! a clear, immediate error for every way a server can be unusable.

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection as _, Executor as _, PgConnection};
use url::Url;

use super::faults::{Fault, classify};
use super::target::{PostgresTarget, redact};
use super::{JournalError, schema, statement};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long opening one connection may take before the host counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a statement waits for a lock before it fails (and is retried, or,
/// for a claim, claims nothing this time): a lock held longer belongs to a
/// session that stalled, and nobody may wait on it.
const LOCK_TIMEOUT: &str = "2s";

/// How long the server lets a session sit idle inside a transaction before
/// it ends it: a process frozen (or cut off) in the middle of a transaction
/// loses its locks, so the reaper can take its workflows over, and its late
/// statements fail. The journal's transactions never pause between
/// statements on a healthy host.
const IDLE_IN_TRANSACTION: &str = "5s";

/// What the server is told of every session of the journal (but through a
/// pooler, where each transaction sets the first two itself): the stall
/// guards above, and TCP keepalives so that the server notices a client cut
/// off by a partition within seconds and ends its session (and its locks).
fn session_guards() -> String {
    format!(
        "SET lock_timeout TO '{LOCK_TIMEOUT}'; SET idle_in_transaction_session_timeout TO '{IDLE_IN_TRANSACTION}'; \
         SET tcp_keepalives_idle TO 5; SET tcp_keepalives_interval TO 2; SET tcp_keepalives_count TO 3; \
         SET tcp_user_timeout TO 10000"
    )
}

/// Connections per process, besides the group-commit writer's.
const MAX_CONNECTIONS: u32 = 8;

/// Connections of the group-commit writer: it commits one batch at a time.
const BATCH_CONNECTIONS: u32 = 1;

/// A PostgreSQL journal's connections: pools to the writable host, replaced
/// on reconnect (after a restart or a failover).
#[derive(Clone)]
pub(crate) struct PgDb {
    pools: Arc<RwLock<Pools>>,
    target: Arc<PostgresTarget>,
    location: Arc<str>,
}

/// Everyone's pool, and the group-commit writer's own.
struct Pools {
    shared: PgPool,
    /// Its connections plan the batch statement once: a batch binds each
    /// column as one array, so PostgreSQL's default (a custom plan per
    /// execution while one row costs less than the generic plan's guess of
    /// ten) would re-plan it for every one-step batch — 0.5 ms, more than the
    /// statement itself.
    batches: PgPool,
    /// The writer's connection between two batches, taken out of `batches`
    /// for good: a pool pings every connection given back to it, a round
    /// trip per batch (on a step's critical path, and a wake-up of the server).
    kept: Arc<Mutex<Option<PgConnection>>>,
}

impl Pools {
    fn new(options: PgConnectOptions, schema: &str, pooler: bool) -> Self {
        Self {
            shared: pool(options.clone(), schema, pooler, MAX_CONNECTIONS, ""),
            batches: pool(options, schema, pooler, BATCH_CONNECTIONS, "; SET plan_cache_mode TO force_generic_plan"),
            kept: Arc::default(),
        }
    }
}

/// The group-commit writer's connection for one batch: [`WriterConnection::keep`]
/// after a batch that succeeded; dropped (closed) after one that failed or
/// was abandoned halfway, whose connection is in an unknown state.
pub(crate) struct WriterConnection {
    pub connection: PgConnection,
    /// Where it is kept: the pools it came from (after a reconnect, newer
    /// pools have their own, and this one goes with the old pools).
    slot: Arc<Mutex<Option<PgConnection>>>,
}

impl WriterConnection {
    /// Keeps the connection for the next batch.
    pub fn keep(self) {
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(self.connection);
    }
}

impl PgDb {
    /// Opens the journal: the first host that answers and accepts writes;
    /// creates the schema and tables when `create`, else checks they exist.
    pub async fn open(target: &PostgresTarget, location: &str, create: bool) -> Result<Self, JournalError> {
        let schema_name = &target.schema;
        if target.pooler {
            statement::use_unnamed();
        }
        // Through a pooler, session state (advisory locks, search_path) does not last: never migrate there.
        let create = create && !target.pooler;
        // A connection lost while preparing the tables is tried again; a refused one is reported at once.
        let mut tries = 3;
        let (options, mut connection) = loop {
            let (options, mut connection) = writable_host(target, location).await?;
            if !create {
                break (options, connection);
            }
            match prepare_schema(&mut connection, schema_name).await {
                Ok(()) => break (options, connection),
                Err((_, true)) if tries > 1 => {
                    tries -= 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err((message, _)) => return Err(JournalError::Schema { location: location.to_string(), message }),
            }
        };
        if !create {
            // In a transaction: through a pooler, its statements then stay on one server connection.
            let applied = async {
                let mut tx = sqlx::Connection::begin(&mut connection).await?;
                let query = schema::applied_query(&format!("{schema_name}._sqlx_migrations"));
                let applied = statement::query_as(sqlx::AssertSqlSafe(query)).fetch_all(&mut *tx).await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(applied)
            }
            .await
            .ok();
            schema::compare(applied, &MIGRATOR).map_err(|message| JournalError::Schema {
                location: location.to_string(),
                message: if target.pooler {
                    format!(
                        "schema {schema_name}: {message}. Through a transaction pooler the journal's tables are not \
                         created or changed: run any host command once with a URL to PostgreSQL itself"
                    )
                } else {
                    format!("schema {schema_name}: {message}")
                },
            })?;
        }
        connection.close().await.ok();
        Ok(Self {
            pools: Arc::new(RwLock::new(Pools::new(options, schema_name, target.pooler))),
            target: Arc::new(target.clone()),
            location: location.into(),
        })
    }

    /// The schema holding the journal's tables (names its NOTIFY channel).
    pub fn schema(&self) -> &str {
        &self.target.schema
    }

    /// True when connections go through a transaction pooler (pgbouncer).
    pub fn pooler(&self) -> bool {
        self.target.pooler
    }

    /// Points the current transaction at the journal's schema (through a
    /// pooler, where a session's `search_path` does not last).
    pub async fn enter_schema(&self, connection: &mut PgConnection) -> Result<(), sqlx::Error> {
        // One round trip: the schema, and the stall guards of [`session_guards`] for this transaction.
        let set = format!(
            "SELECT set_config('search_path', $1, true), set_config('lock_timeout', '{LOCK_TIMEOUT}', true), \
             set_config('idle_in_transaction_session_timeout', '{IDLE_IN_TRANSACTION}', true)"
        );
        statement::query(sqlx::AssertSqlSafe(set)).bind(&self.target.schema).execute(connection).await.map(drop)
    }

    /// The current pool (cheap to clone).
    pub fn pool(&self) -> PgPool {
        self.pools.read().unwrap_or_else(PoisonError::into_inner).shared.clone()
    }

    /// The group-commit writer's connection, which reuses one generic plan
    /// per statement: the one kept from its last batch, else a new one.
    pub async fn writer_connection(&self) -> Result<WriterConnection, sqlx::Error> {
        let (batches, slot) = {
            let pools = self.pools.read().unwrap_or_else(PoisonError::into_inner);
            (pools.batches.clone(), pools.kept.clone())
        };
        let kept = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
        let connection = match kept {
            Some(connection) => connection,
            None => batches.acquire().await?.detach(),
        };
        Ok(WriterConnection { connection, slot })
    }

    /// After a transient fault: a fresh pool, to the host that accepts writes
    /// now (the same one unless the URL lists several and one was promoted).
    /// Stale connections of the old pool close as their users drop them.
    pub async fn reconnect(&self) {
        let options = if self.target.hosts.len() > 1 {
            match writable_host(&self.target, &self.location).await {
                Ok((options, connection)) => {
                    connection.close().await.ok();
                    options
                }
                // Nothing writable yet: keep trying against the first host.
                Err(_) => return,
            }
        } else {
            match self.target.hosts.first().map(connect_options) {
                Some(Ok(options)) => options,
                _ => return,
            }
        };
        let fresh = Pools::new(options, &self.target.schema, self.target.pooler);
        let old = std::mem::replace(&mut *self.pools.write().unwrap_or_else(PoisonError::into_inner), fresh);
        tokio::spawn(async move {
            old.shared.close().await;
            old.batches.close().await;
        });
    }
}

/// A lazily connecting pool of up to `size` connections that use the
/// journal's schema (through a pooler, each transaction sets it instead) and
/// run `also` (more `; SET …`, unless through a pooler) when they open.
fn pool(options: PgConnectOptions, schema: &str, pooler: bool, size: u32, also: &str) -> PgPool {
    let setup = if pooler {
        "SET client_min_messages TO warning".to_string()
    } else {
        format!("SET search_path TO {schema}; SET client_min_messages TO warning; {}{also}", session_guards())
    };
    PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(CONNECT_TIMEOUT)
        // No ping before each use: a dead connection fails its statement, which is retried.
        .test_before_acquire(false)
        .after_connect(move |connection, _| {
            let setup = setup.clone();
            Box::pin(async move {
                sqlx::raw_sql(sqlx::AssertSqlSafe(setup)).execute(&mut *connection).await?;
                Ok(())
            })
        })
        .connect_lazy_with(options)
}

fn connect_options(url: &Url) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(url.as_str().parse::<PgConnectOptions>()?.application_name("stepbox"))
}

/// The first host of `target` that answers and is not a standby, with an open connection to it.
async fn writable_host(
    target: &PostgresTarget,
    location: &str,
) -> Result<(PgConnectOptions, PgConnection), JournalError> {
    let mut causes = Vec::new();
    let mut hint = String::new();
    for url in &target.hosts {
        let host = redact(url.as_str());
        let options = match connect_options(url) {
            Ok(options) => options,
            Err(error) => {
                causes.push(format!("{host}: {error}"));
                continue;
            }
        };
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await;
        let mut connection = match connected {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => {
                let (cause, fix) = explain_connect_error(&options, &error);
                causes.push(cause);
                hint = fix;
                continue;
            }
            Err(_) => {
                causes.push(format!(
                    "{}:{} did not answer within {}s",
                    options.get_host(),
                    options.get_port(),
                    CONNECT_TIMEOUT.as_secs()
                ));
                continue;
            }
        };
        // One round trip on the simple protocol: through a transaction pooler, two could reach two servers.
        let standby = sqlx::raw_sql("SELECT pg_is_in_recovery()")
            .fetch_one(&mut connection)
            .await
            .and_then(|row| sqlx::Row::try_get::<bool, _>(&row, 0));
        match standby {
            Ok(false) => return Ok((options, connection)),
            Ok(true) => {
                causes.push(format!("{}:{} is a read-only standby", options.get_host(), options.get_port()));
                hint = "The journal needs a server that accepts writes: list the primary's host in the URL \
                        (several hosts may be given, h1:5432,h2:5432, and the writable one is used)."
                    .into();
            }
            Err(error) => causes.push(format!("{}:{}: {error}", options.get_host(), options.get_port())),
        }
        connection.close().await.ok();
    }
    if hint.is_empty() {
        hint = "Check the URL, and that PostgreSQL is running.".into();
    }
    Err(JournalError::Open { location: location.to_string(), cause: causes.join("; "), hint })
}

/// What a failed connection means, and the fix when it is obvious.
fn explain_connect_error(options: &PgConnectOptions, error: &sqlx::Error) -> (String, String) {
    let at = format!("{}:{}", options.get_host(), options.get_port());
    let user = options.get_username().to_string();
    let database = options.get_database().unwrap_or(&user).to_string();
    match error {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => (
            format!("nothing accepts connections at {at} (connection refused)"),
            "Start PostgreSQL (on Debian: `pg_ctlcluster <version> main start`), or fix the host and port in the URL."
                .into(),
        ),
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("3D000") => (
                format!("database {database:?} does not exist on {at}"),
                format!(
                    "Create it with `createdb -h {} -p {} -U {user} {database}`.",
                    options.get_host(),
                    options.get_port()
                ),
            ),
            Some("28P01" | "28000") => (
                format!("{at} refused user {user:?}: {}", db.message()),
                "Check the user name and password in the URL (and the server's pg_hba.conf).".into(),
            ),
            Some("57P03") => (format!("{at} is starting up or shutting down"), "Try again in a moment.".into()),
            _ => (format!("{at}: {}", db.message()), String::new()),
        },
        other => (format!("{at}: {other}"), String::new()),
    }
}

/// Creates the schema if needed and applies the migrations in it. The error
/// says whether trying again on a new connection may help.
async fn prepare_schema(connection: &mut PgConnection, schema_name: &str) -> Result<(), (String, bool)> {
    let failed = |error: sqlx::Error| (error.to_string(), classify(&error) == Fault::Transient);
    // Concurrent first opens race on CREATE SCHEMA; the loser finds it there.
    let create = format!("CREATE SCHEMA IF NOT EXISTS {schema_name}");
    if connection.execute(sqlx::AssertSqlSafe(create.clone())).await.is_err() {
        connection.execute(sqlx::AssertSqlSafe(create)).await.map_err(failed)?;
    }
    let setup = format!("SET search_path TO {schema_name}; SET client_min_messages TO warning");
    connection.execute(sqlx::AssertSqlSafe(setup)).await.map_err(failed)?;
    MIGRATOR.run(&mut *connection).await.map_err(|error| match error {
        MigrateError::Execute(error) => failed(error),
        other => (schema::explain(&other), false),
    })
}
