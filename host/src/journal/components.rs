//! Component files stored in the journal once per SHA-256 digest, so a
//! worker on any machine runs exactly what was submitted.

use sha2::{Digest as _, Sha256};

use super::{Journal, JournalError, Timestamp, statement, with_conn};

/// The hex SHA-256 of `bytes`: how the journal pins a component (and names a deployment).
pub fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect()
}

impl Journal {
    /// The component stored under `digest`, if any: its name and bytes.
    pub async fn component(&self, digest: &str) -> Result<Option<(String, Vec<u8>)>, JournalError> {
        self.run("read of a component", || {
            with_conn!(&self.backend, |conn| {
                statement::query_as("SELECT name, bytes FROM components WHERE digest = $1")
                    .bind(digest)
                    .fetch_optional(conn)
                    .await
            })
        })
        .await
    }

    /// The name and digest of the component stored under `name_or_digest`:
    /// that digest, or the latest stored under that name.
    pub async fn find_component(&self, name_or_digest: &str) -> Result<Option<(String, String)>, JournalError> {
        self.run("read of a component", || {
            with_conn!(&self.backend, |conn| {
                statement::query_as(
                    "SELECT name, digest FROM components WHERE digest = $1 OR name = $1 \
                     ORDER BY digest = $1 DESC, stored_at DESC LIMIT 1",
                )
                .bind(name_or_digest)
                .fetch_optional(conn)
                .await
            })
        })
        .await
    }

    /// Whether a component's bytes are stored under `digest`.
    pub async fn has_component(&self, digest: &str) -> Result<bool, JournalError> {
        self.run("read of a component", || {
            with_conn!(&self.backend, |conn| {
                statement::query_scalar("SELECT count(*) FROM components WHERE digest = $1")
                    .bind(digest)
                    .fetch_one(conn)
                    .await
                    .map(|count: i64| count > 0)
            })
        })
        .await
    }

    /// Stores a component's bytes under their digest, once.
    pub async fn store_component(&self, digest: &str, name: &str, bytes: &[u8]) -> Result<(), JournalError> {
        let now = Timestamp::now();
        let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
        self.commit("store of a component", || {
            with_conn!(&self.backend, |conn| {
                statement::query(
                    "INSERT INTO components (digest, name, size, bytes, stored_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (digest) DO NOTHING",
                )
                .bind(digest)
                .bind(name)
                .bind(size)
                .bind(bytes)
                .bind(now)
                .execute(conn)
                .await
                .map(|_| ())
            })
        })
        .await
    }
}
