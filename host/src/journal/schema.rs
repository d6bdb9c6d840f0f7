//! Checking that a journal's schema is the one this version writes, for
//! commands that must not change it, and saying what to do when it is not.

use sqlx::migrate::{MigrateError, Migrator};

/// The query that reads what migrations a journal has, for `table` (`_sqlx_migrations`, schema-qualified on PostgreSQL).
pub fn applied_query(table: &str) -> String {
    format!("SELECT version, checksum FROM {table} WHERE success ORDER BY version")
}

/// Fails unless `applied` (what [`applied_query`] returned; `None` when it
/// failed) is exactly this version's migrations.
pub fn compare(applied: Option<Vec<(i64, Vec<u8>)>>, migrator: &Migrator) -> Result<(), String> {
    let Some(applied) = applied else { return Err(NOT_A_JOURNAL.into()) };
    let ours: Vec<(i64, Vec<u8>)> = migrator
        .iter()
        .filter(|migration| migration.migration_type.is_up_migration())
        .map(|migration| (migration.version, migration.checksum.to_vec()))
        .collect();
    if applied == ours { Ok(()) } else { Err(OTHER_VERSION.into()) }
}

const NOT_A_JOURNAL: &str = "it holds no stepbox journal (nothing has run with it yet)";
const OTHER_VERSION: &str = "it was written by another version of stepbox, whose schema differs from this one's. \
     There is no upgrade path between unreleased versions: move the journal aside (or pass another --journal) \
     and start again";

/// What a failed migration means for the user.
pub fn explain(error: &MigrateError) -> String {
    match error {
        MigrateError::VersionMissing(_) | MigrateError::VersionMismatch(_) | MigrateError::VersionTooNew(..) => {
            OTHER_VERSION.into()
        }
        other => format!("cannot prepare the journal's tables: {other}"),
    }
}
