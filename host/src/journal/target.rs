//! Where a journal lives, parsed from what users write: a SQLite file path or
//! `sqlite:` URL, or a `postgres://` URL (several hosts allowed, for
//! failover), with the password hidden whenever it is shown.

use std::path::PathBuf;

use url::Url;

/// The schema PostgreSQL journals use unless the URL says `?schema=NAME`.
pub const DEFAULT_SCHEMA: &str = "stepbox";

/// A parsed journal location.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Sqlite(SqliteTarget),
    Postgres(PostgresTarget),
}

/// A SQLite journal file.
#[derive(Debug, Clone, PartialEq)]
pub struct SqliteTarget {
    pub path: PathBuf,
}

/// A PostgreSQL journal: one URL per candidate host, tried in order.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresTarget {
    /// Single-host URLs sqlx can parse, without stepbox's own parameters.
    pub hosts: Vec<Url>,
    /// The schema the tables live in.
    pub schema: String,
    /// Reached through a pooler in transaction mode (`?pooler=transaction`):
    /// statements unnamed, each operation a transaction.
    pub pooler: bool,
}

/// A journal location that cannot be used; the message says what to write instead.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot use {location} as a journal: {problem}")]
pub struct TargetError {
    pub location: String,
    pub problem: String,
}

impl Target {
    /// Parses `text`: `postgres://…` / `postgresql://…`, `sqlite:PATH`, or a file path.
    pub fn parse(text: &str) -> Result<Self, TargetError> {
        let fail = |problem: String| TargetError { location: redact(text), problem };
        if text.trim().is_empty() {
            return Err(fail("the location is empty; give a file path or a postgres:// URL".into()));
        }
        if let Some(rest) = text.strip_prefix("sqlite://").or_else(|| text.strip_prefix("sqlite:")) {
            let path = rest.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err(fail("`sqlite:` needs a file path, e.g. sqlite:stepbox.db".into()));
            }
            return Ok(Self::Sqlite(SqliteTarget { path: PathBuf::from(path) }));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return parse_postgres(text).map(Self::Postgres).map_err(fail);
        }
        if let Some((scheme, _)) = text.split_once("://") {
            return Err(fail(format!(
                "`{scheme}://` is not supported; use a postgres:// URL, a sqlite: URL or a file path"
            )));
        }
        Ok(Self::Sqlite(SqliteTarget { path: PathBuf::from(text) }))
    }
}

/// The parts of a URL's authority: credentials and the host list (`h1:5432,h2:5433`).
fn split_authority(text: &str) -> Option<(&str, &str, &str, &str)> {
    let (scheme, rest) = text.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (credentials, hosts) = match authority.rsplit_once('@') {
        Some((credentials, hosts)) => (credentials, hosts),
        None => ("", authority),
    };
    Some((scheme, credentials, hosts, tail))
}

fn parse_postgres(text: &str) -> Result<PostgresTarget, String> {
    let (scheme, credentials, hosts, tail) = split_authority(text).ok_or("it is not a URL")?;
    let credentials = if credentials.is_empty() { String::new() } else { format!("{credentials}@") };
    let mut urls = Vec::new();
    let mut schema = DEFAULT_SCHEMA.to_string();
    let mut pooler = false;
    let host_list: Vec<&str> = if hosts.is_empty() { vec![""] } else { hosts.split(',').collect() };
    for host in host_list {
        let single = format!("{scheme}://{credentials}{host}{tail}");
        let mut url = Url::parse(&single).map_err(|error| format!("it is not a valid URL ({error})"))?;
        let mut kept = Vec::new();
        for (key, value) in url.query_pairs() {
            match &*key {
                "schema" => schema = value.into_owned(),
                "pooler" if value == "transaction" => pooler = true,
                "pooler" if value == "none" || value == "session" => {}
                "pooler" => {
                    return Err(format!(
                        "pooler={value} is not known: write pooler=transaction for pgbouncer in transaction mode"
                    ));
                }
                // The journal always needs a server that accepts writes: every host is checked.
                "target_session_attrs" if value == "read-write" || value == "primary" || value == "any" => {}
                "target_session_attrs" => {
                    return Err(format!(
                        "target_session_attrs={value} is not supported: the journal writes, so it always \
                         connects to a read-write server (read-write)"
                    ));
                }
                _ => kept.push((key.into_owned(), value.into_owned())),
            }
        }
        if kept.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(kept);
        }
        urls.push(url);
    }
    if !is_identifier(&schema) {
        return Err(format!(
            "schema={schema:?} is not a plain identifier (lower-case letters, digits and _, not starting with a digit, \
             at most {MAX_SCHEMA} characters)"
        ));
    }
    Ok(PostgresTarget { hosts: urls, schema, pooler })
}

/// The longest schema name: its NOTIFY channels (`SCHEMA_progress`) must
/// stay within PostgreSQL's 63-byte names, or every notice would fail.
const MAX_SCHEMA: usize = 63 - "_progress".len();

/// A lower-case SQL identifier that needs no quoting: the schema is written into SQL.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= MAX_SCHEMA
}

/// `location` with any password replaced by `***`: in the credentials
/// (`user:secret@`) and in the query (`?password=secret`), parsed as a URL.
pub fn redact(location: &str) -> String {
    let Some((scheme, credentials, hosts, tail)) = split_authority(location) else {
        return location.to_string();
    };
    // The URL parser takes one host: parse with a placeholder, put the list back.
    let placeholder = "stepbox-host-placeholder";
    let credentials = if credentials.is_empty() { String::new() } else { format!("{credentials}@") };
    let Ok(mut url) = Url::parse(&format!("{scheme}://{credentials}{placeholder}{tail}")) else {
        return format!("{scheme}://***");
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    let pairs: Vec<(String, String)> = url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    if pairs.iter().any(|(key, _)| key == "password") {
        let redacted = pairs.into_iter().map(|(key, value)| {
            let value = if key == "password" { "***".to_string() } else { value };
            (key, value)
        });
        url.query_pairs_mut().clear().extend_pairs(redacted);
    }
    url.to_string().replacen(placeholder, hosts, 1).replace("%2A%2A%2A", "***")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_in_credentials_and_query() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://u:p%40ss@h/db"), "postgres://u:***@h/db");
        assert_eq!(
            redact("postgres://h/db?user=u&password=secret&sslmode=require"),
            "postgres://h/db?user=u&password=***&sslmode=require"
        );
        assert_eq!(redact("postgres://u:pw@h1:5432,h2:5433/db"), "postgres://u:***@h1:5432,h2:5433/db");
        assert_eq!(redact("stepbox.db"), "stepbox.db");
        assert!(!redact("postgres://u:se cret@h/db").contains("se cret"));
    }

    #[test]
    fn sqlite_locations() {
        let path = |text: &str| match Target::parse(text).unwrap() {
            Target::Sqlite(target) => target.path,
            other => panic!("{other:?}"),
        };
        assert_eq!(path("stepbox.db"), PathBuf::from("stepbox.db"));
        assert_eq!(path("sqlite:x.db"), PathBuf::from("x.db"));
        assert_eq!(path("sqlite:///tmp/x.db?mode=rwc"), PathBuf::from("/tmp/x.db"));
        assert!(Target::parse("mysql://h/db").unwrap_err().to_string().contains("`mysql://` is not supported"));
        assert!(Target::parse("").is_err());
    }

    #[test]
    fn postgres_urls_with_several_hosts_a_schema_and_session_attributes() {
        let Target::Postgres(target) = Target::parse(
            "postgres://u:pw@a:5432,b:5433/db?target_session_attrs=read-write&schema=jobs&sslmode=disable",
        )
        .unwrap() else {
            panic!("a postgres target")
        };
        let hosts: Vec<String> = target.hosts.iter().map(Url::to_string).collect();
        assert_eq!(hosts, ["postgres://u:pw@a:5432/db?sslmode=disable", "postgres://u:pw@b:5433/db?sslmode=disable"]);
        assert_eq!(target.schema, "jobs");
        let Target::Postgres(default) = Target::parse("postgres://localhost/db").unwrap() else { panic!() };
        assert_eq!(default.schema, "stepbox");
        assert!(Target::parse("postgres://h/db?schema=Bad-Name").is_err());
        assert!(
            Target::parse("postgres://h/db?target_session_attrs=standby")
                .unwrap_err()
                .to_string()
                .contains("read-write")
        );
    }
}
