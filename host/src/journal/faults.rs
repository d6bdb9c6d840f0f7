//! Database faults as weather: which errors are transient (the server
//! restarted, failed over, closed the connection, is busy), and the retry
//! loop that rides through them on fresh connections for up to an outage
//! budget, logging one line when an outage starts and one when it ends.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// How long journal operations keep retrying through a database outage by
/// default: a PostgreSQL restart takes seconds and a failover to a standby
/// well under a minute, so a minute rides through both while a database that
/// is really gone is still reported within a minute and a half.
pub const DEFAULT_OUTAGE_BUDGET: Duration = Duration::from_secs(60);

/// Whether retrying an error on a fresh connection can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The connection or the server is (temporarily) unavailable, or the
    /// transaction lost a race: retry.
    Transient,
    /// Retrying cannot help (bad SQL, constraint, auth, missing database, corrupt file).
    Permanent,
}

/// Classifies an error of either backend.
pub fn classify(error: &sqlx::Error) -> Fault {
    match error {
        // `PoolClosed`: another task replaced the pool after an outage while this one held the old
        // pool; the retry takes the new one.
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => Fault::Transient,
        sqlx::Error::Database(database) => match database.code() {
            Some(code) if is_transient_code(&code) => Fault::Transient,
            _ => Fault::Permanent,
        },
        _ => Fault::Permanent,
    }
}

/// PostgreSQL SQLSTATEs and SQLite result codes after which a retry can succeed.
fn is_transient_code(code: &str) -> bool {
    // PostgreSQL: connection exceptions, admin/crash shutdown, cannot connect now,
    // serialization failure, deadlock, read-only transaction (a standby after a
    // failover), too many connections, a lock not granted within `lock_timeout`
    // (its holder stalled), a session ended idle in a transaction.
    code.starts_with("08")
        || matches!(code, "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "25006" | "53300" | "55P03" | "25P03")
        // SQLite (extended codes keep the primary code in the low byte): BUSY, LOCKED,
        // IOERR, FULL (the disk may be freed), READONLY (the file may be made writable again).
        || code.parse::<i64>().is_ok_and(|code| matches!(code & 0xff, 5 | 6 | 10 | 13 | 8))
}

/// A short description of what is wrong, for the outage log line.
pub fn symptom(error: &sqlx::Error) -> String {
    match (error, sqlite_code(error)) {
        (_, 13) => "the disk is full".into(),
        (_, 8) => "the journal file is read-only".into(),
        (_, 5 | 6) => "another process holds the journal's write lock".into(),
        (sqlx::Error::Database(database), _) => {
            format!("{} ({})", database.message(), database.code().unwrap_or_default())
        }
        (other, _) => other.to_string(),
    }
}

/// The primary SQLite result code of an error (extended codes keep it in
/// the low byte), or 0 for an error that carries no numeric code.
pub fn sqlite_code(error: &sqlx::Error) -> i64 {
    match error {
        sqlx::Error::Database(database) => {
            database.code().and_then(|code| code.parse::<i64>().ok()).map_or(0, |code| code & 0xff)
        }
        _ => 0,
    }
}

/// How long one statement of a PostgreSQL journal may go unanswered before
/// its connection counts as lost: a network partition drops packets without
/// a reset or an error, and the kernel would wait out its own TCP timeouts
/// (minutes) before saying so. No statement of the journal takes this long
/// on a healthy server; one that does is sent again on a fresh connection.
pub const DEFAULT_STATEMENT_WAIT: Duration = Duration::from_secs(10);

/// The outage state shared by every operation on one journal: one log line
/// when an outage starts, one when the journal answers again, and one budget.
#[derive(Clone)]
pub struct Weather {
    location: Arc<str>,
    budget: Duration,
    /// How long one try may go unanswered (`None`: as long as the budget).
    answer_within: Option<Duration>,
    outage: Arc<Mutex<Option<Instant>>>,
}

impl Weather {
    /// Outage tracking for the journal at `location`, retrying for up to
    /// `budget`, each try abandoned (as a lost connection) after `answer_within`.
    pub fn new(location: &str, budget: Duration, answer_within: Option<Duration>) -> Self {
        Self { location: location.into(), budget, answer_within, outage: Arc::default() }
    }

    /// The outage budget.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Runs `operation` until it succeeds, fails permanently, or the outage
    /// has lasted longer than the budget. `reconnect` runs before each retry
    /// (it may pick another host after a failover). The error returned last
    /// is given back with how long the outage lasted.
    pub async fn retry<T, Op, Fut, Re, ReFut>(&self, operation: Op, reconnect: Re) -> Result<T, Outage>
    where
        Op: FnMut() -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
        Re: FnMut() -> ReFut,
        ReFut: Future<Output = ()>,
    {
        self.retry_for(self.budget, operation, reconnect).await
    }

    /// As [`Weather::retry`], with its own budget (a release on the way out need not wait a whole outage).
    pub async fn retry_for<T, Op, Fut, Re, ReFut>(
        &self,
        budget: Duration,
        mut operation: Op,
        mut reconnect: Re,
    ) -> Result<T, Outage>
    where
        Op: FnMut() -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
        Re: FnMut() -> ReFut,
        ReFut: Future<Output = ()>,
    {
        let mut pause = Duration::from_millis(50);
        let started = Instant::now();
        loop {
            // No try outlives the budget, nor waits past `answer_within` for an answer.
            let left = budget.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
            let limit = self.answer_within.map_or(left, |within| within.min(left));
            let answer = match tokio::time::timeout(limit, operation()).await {
                Ok(answer) => answer,
                Err(_) => Err(unanswered(limit)),
            };
            match answer {
                Ok(value) => {
                    self.clear();
                    return Ok(value);
                }
                Err(error) => {
                    // The budget counts from the outage's start, or this operation's if it started later.
                    let lasted = match classify(&error) {
                        Fault::Permanent => return Err(Outage { error, lasted: None }),
                        Fault::Transient => self.note(&error).min(started.elapsed()),
                    };
                    if lasted >= budget {
                        return Err(Outage { error, lasted: Some(lasted) });
                    }
                    let jitter = rand::random::<f64>() * 0.5 + 0.75;
                    let wait = pause.mul_f64(jitter).min(budget.saturating_sub(lasted));
                    tokio::time::sleep(wait).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                    reconnect().await;
                }
            }
        }
    }

    /// Records a transient error; returns how long the outage has lasted.
    fn note(&self, error: &sqlx::Error) -> Duration {
        let mut outage = self.outage.lock().unwrap_or_else(PoisonError::into_inner);
        match *outage {
            Some(started) => started.elapsed(),
            None => {
                *outage = Some(Instant::now());
                tracing::warn!(
                    source = "host",
                    "journal {} unreachable ({}); retrying for up to {}",
                    self.location,
                    symptom(error),
                    humantime::format_duration(self.budget)
                );
                Duration::ZERO
            }
        }
    }

    fn clear(&self) {
        let mut outage = self.outage.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(started) = outage.take() {
            let lasted = Duration::from_millis(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
            tracing::info!(
                source = "host",
                "journal {} is back after {}",
                self.location,
                humantime::format_duration(lasted)
            );
        }
    }

    /// Whether the journal is in an outage now.
    #[cfg(test)]
    pub fn in_outage(&self) -> bool {
        self.outage.lock().unwrap_or_else(PoisonError::into_inner).is_some()
    }
}

/// The error of a try that got no answer within `limit`: a lost connection
/// (transient), whose statement is sent again on a fresh one.
fn unanswered(limit: Duration) -> sqlx::Error {
    let limit = Duration::from_millis(u64::try_from(limit.as_millis()).unwrap_or(u64::MAX));
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer within {}", humantime::format_duration(limit)),
    ))
}

/// An operation that did not succeed: its last error, and how long the outage
/// had lasted when it gave up (`None` for a permanent error).
#[derive(Debug)]
pub struct Outage {
    pub error: sqlx::Error,
    pub lasted: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_and_sqlite_codes_are_classified() {
        for code in [
            "08006", "08001", "57P01", "57P02", "57P03", "40001", "40P01", "25006", "55P03", "25P03", "5", "517", "13",
            "8",
        ] {
            assert!(is_transient_code(code), "{code}");
        }
        for code in ["23505", "42601", "28P01", "3D000", "42P01", "11", "19", "1"] {
            assert!(!is_transient_code(code), "{code}");
        }
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), Fault::Transient);
        assert_eq!(classify(&sqlx::Error::PoolClosed), Fault::Transient, "a pool replaced after an outage");
        assert_eq!(classify(&sqlx::Error::RowNotFound), Fault::Permanent);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_until_the_budget_then_gives_up() {
        let weather = Weather::new("test", Duration::from_secs(5), None);
        let tries = std::cell::Cell::new(0);
        let result: Result<(), Outage> = weather
            .retry(
                || {
                    tries.set(tries.get() + 1);
                    async { Err(sqlx::Error::PoolTimedOut) }
                },
                || async {},
            )
            .await;
        let outage = result.unwrap_err();
        assert!(outage.lasted.is_some_and(|lasted| lasted >= Duration::from_secs(5)), "{:?}", outage.lasted);
        assert!(tries.get() > 3);

        let tries = std::cell::Cell::new(0);
        let result = weather
            .retry(
                || {
                    tries.set(tries.get() + 1);
                    let fail = tries.get() < 3;
                    async move { if fail { Err(sqlx::Error::PoolTimedOut) } else { Ok(7) } }
                },
                || async {},
            )
            .await;
        assert_eq!(result.unwrap(), 7);
        assert!(!weather.in_outage());
        // A try that gets no answer is abandoned and tried again, like a lost connection.
        let weather = Weather::new("test", Duration::from_secs(5), Some(Duration::from_millis(100)));
        let tries = std::cell::Cell::new(0);
        let answered = weather
            .retry(
                || {
                    tries.set(tries.get() + 1);
                    let (hang, count) = (tries.get() < 3, tries.get());
                    async move {
                        if hang {
                            std::future::pending::<()>().await;
                        }
                        Ok::<_, sqlx::Error>(count)
                    }
                },
                || async {},
            )
            .await;
        assert_eq!(answered.unwrap(), 3);
        let permanent: Result<(), Outage> =
            weather.retry(|| async { Err(sqlx::Error::RowNotFound) }, || async {}).await;
        assert!(permanent.unwrap_err().lasted.is_none());
    }
}
