//! Statements as this process sends them: prepared by name and cached per
//! connection, unless a journal is reached through a transaction pooler
//! (pgbouncer in transaction mode), where a server connection serves other
//! clients between two transactions. Then every statement is unnamed and
//! runs inside a transaction (see `with_conn!`), for the whole process.

use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::database::HasStatementCache;
use sqlx::query::{Query, QueryAs, QueryScalar};
use sqlx::{Database, FromRow, SqlSafeStr};

static UNNAMED: AtomicBool = AtomicBool::new(false);

/// Sends every statement of this process unnamed from now on.
pub(crate) fn use_unnamed() {
    UNNAMED.store(true, Ordering::Release);
}

/// Whether statements are prepared by name and cached.
pub(crate) fn persistent() -> bool {
    !UNNAMED.load(Ordering::Acquire)
}

/// `sqlx::query`, named unless a pooler is in the way.
pub(crate) fn query<'q, DB: Database + HasStatementCache>(sql: impl SqlSafeStr) -> Query<'q, DB, DB::Arguments> {
    sqlx::query(sql).persistent(persistent())
}

/// `sqlx::query_as`, named unless a pooler is in the way.
pub(crate) fn query_as<'q, DB, O>(sql: impl SqlSafeStr) -> QueryAs<'q, DB, O, DB::Arguments>
where
    DB: Database + HasStatementCache,
    O: for<'r> FromRow<'r, DB::Row>,
{
    sqlx::query_as(sql).persistent(persistent())
}

/// `sqlx::query_scalar`, named unless a pooler is in the way.
pub(crate) fn query_scalar<'q, DB, O>(sql: impl SqlSafeStr) -> QueryScalar<'q, DB, O, DB::Arguments>
where
    DB: Database + HasStatementCache,
    (O,): for<'r> FromRow<'r, DB::Row>,
{
    sqlx::query_scalar(sql).persistent(persistent())
}
