//! Reading a journal's rows directly, on either backend, for assertions the
//! journal's API does not answer (counts, joins, journal times in ms).
//! Queries are written once: `$1`-style binds, and `MS(column)` for a time
//! column in milliseconds since the Unix epoch.

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Connection as _, FromRow};
use stepbox::journal::Target;

/// A direct connection to a journal's database.
pub enum Rows {
    Postgres(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

/// A row type both backends decode.
pub trait Row: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin {}
impl<T> Row for T where T: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin {}

impl Rows {
    /// Connects to the journal at `location` (a path, a `sqlite:` or a `postgres://` URL).
    pub async fn open(location: &str) -> Self {
        match Target::parse(location).expect("a journal location") {
            Target::Sqlite(sqlite) => {
                let url = format!("sqlite://{}", sqlite.path.display());
                Self::Sqlite(sqlx::SqliteConnection::connect(&url).await.expect("the journal file opens"))
            }
            Target::Postgres(postgres) => {
                let mut connection = super::primary(&postgres).await;
                let search_path = format!("SET search_path TO {}", postgres.schema);
                sqlx::raw_sql(sqlx::AssertSqlSafe(search_path)).execute(&mut connection).await.expect("search_path");
                Self::Postgres(connection)
            }
        }
    }

    /// Every row of `sql` with `binds`.
    pub async fn all<T: Row>(&mut self, sql: &str, binds: &[&str]) -> Vec<T> {
        match self {
            Self::Postgres(connection) => {
                let sql = in_dialect(sql, "(extract(epoch FROM ", ") * 1000)::bigint");
                let mut query = sqlx::query_as::<_, T>(sqlx::AssertSqlSafe(sql));
                for bind in binds {
                    query = query.bind(bind.to_string());
                }
                query.fetch_all(connection).await.expect("the rows")
            }
            Self::Sqlite(connection) => {
                let sql = in_dialect(sql, "(", ")");
                let mut query = sqlx::query_as::<_, T>(sqlx::AssertSqlSafe(sql));
                for bind in binds {
                    query = query.bind(bind.to_string());
                }
                query.fetch_all(connection).await.expect("the rows")
            }
        }
    }

    /// The one row of `sql` with `binds`.
    pub async fn one<T: Row>(&mut self, sql: &str, binds: &[&str]) -> T {
        let mut rows = self.all(sql, binds).await;
        assert_eq!(rows.len(), 1, "one row of {sql}");
        rows.remove(0)
    }

    /// The single value of a one-column, one-row query.
    pub async fn value<V>(&mut self, sql: &str, binds: &[&str]) -> V
    where
        (V,): Row,
    {
        self.one::<(V,)>(sql, binds).await.0
    }
}

/// `sql` with each `MS(column)` written as `before column after`.
fn in_dialect(sql: &str, before: &str, after: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(index) = rest.find("MS(") {
        out.push_str(&rest[..index]);
        let inner = &rest[index + 3..];
        let end = inner.find(')').expect("MS( is closed");
        out.push_str(before);
        out.push_str(&inner[..end]);
        out.push_str(after);
        rest = &inner[end + 1..];
    }
    out.push_str(rest);
    out
}
