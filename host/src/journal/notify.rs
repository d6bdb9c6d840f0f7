//! Wake-ups through PostgreSQL's LISTEN/NOTIFY: what the journal announces
//! (work on a queue, a cancel, attempts journaled), a listener on a
//! connection of its own, and nothing at all on SQLite, whose readers poll.

use super::{Backend, Journal, JournalError, statement, with_conn};

/// The NOTIFY channel (per schema) the journal announces work on:
/// `submit:QUEUE`, `release:QUEUE`, `cancel:ID`, `message:ID` (finishes go on [`super::ENDED`]).
pub const EVENTS: &str = "events";

/// The NOTIFY channel (per schema) that says attempts were journaled, at
/// most a few times a second per process (what dashboards follow).
pub const PROGRESS: &str = "progress";

/// Announces `payload` to listeners (PostgreSQL; nothing on SQLite, whose workers poll).
pub(super) async fn notify<C>(connection: &mut C, payload: &str) -> Result<(), sqlx::Error>
where
    C: NotifyTarget + ?Sized,
{
    connection.notify(payload).await
}

/// Tells listeners, when the transaction commits, that attempts were journaled.
pub(super) async fn notify_progress(connection: &mut impl NotifyTarget) -> Result<(), sqlx::Error> {
    connection.notify_on(PROGRESS, "").await
}

/// A connection NOTIFY can be sent on.
pub(super) trait NotifyTarget {
    async fn notify_on(&mut self, channel: &str, payload: &str) -> Result<(), sqlx::Error>;

    async fn notify(&mut self, payload: &str) -> Result<(), sqlx::Error> {
        self.notify_on(EVENTS, payload).await
    }
}

impl NotifyTarget for sqlx::PgConnection {
    async fn notify_on(&mut self, channel: &str, payload: &str) -> Result<(), sqlx::Error> {
        statement::query("SELECT pg_notify(current_schema() || '_' || $1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(self)
            .await
            .map(drop)
    }
}

impl NotifyTarget for sqlx::SqliteConnection {
    async fn notify_on(&mut self, _: &str, _: &str) -> Result<(), sqlx::Error> {
        Ok(())
    }
}

impl Journal {
    /// Listens for the journal's events on a connection of its own (PostgreSQL
    /// only; `None` on SQLite or through a pooler, where workers poll).
    pub async fn listen(&self) -> Result<Option<Listener>, JournalError> {
        self.listen_to(&[EVENTS]).await
    }

    /// As [`Journal::listen`], to several channels ([`EVENTS`], [`PROGRESS`]).
    pub async fn listen_to(&self, channels: &[&str]) -> Result<Option<Listener>, JournalError> {
        let Backend::Postgres(db) = &self.backend else { return Ok(None) };
        if db.pooler() {
            return Ok(None);
        }
        let channels: Vec<String> = channels.iter().map(|channel| format!("{}_{channel}", db.schema())).collect();
        let failed = |source| JournalError::Failed { location: self.location.to_string(), what: "listen", source };
        let mut listener = sqlx::postgres::PgListener::connect_with(&db.pool()).await.map_err(failed)?;
        listener.listen_all(channels.iter().map(String::as_str)).await.map_err(failed)?;
        Ok(Some(Listener { inner: listener, channels }))
    }

    /// Announces `payload` on the events channel (PostgreSQL; nothing on SQLite).
    pub async fn announce(&self, payload: &str) -> Result<(), JournalError> {
        self.run("notify", || with_conn!(&self.backend, |conn| notify(&mut *conn, payload).await)).await
    }
}

/// A connection listening for the journal's events.
pub struct Listener {
    inner: sqlx::postgres::PgListener,
    channels: Vec<String>,
}

impl Listener {
    /// The next event's payload (`submit:QUEUE`, `cancel:ID`, …); `None` when
    /// the connection was lost (notifications may have been missed: poll).
    pub async fn next(&mut self) -> Option<String> {
        match self.inner.try_recv().await {
            Ok(Some(notification)) if self.channels.iter().any(|channel| channel == notification.channel()) => {
                Some(notification.payload().to_string())
            }
            Ok(Some(_)) => Some(String::new()),
            Ok(None) | Err(_) => None,
        }
    }
}
