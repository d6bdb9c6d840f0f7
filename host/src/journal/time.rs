//! The journal's clock value: milliseconds since the Unix epoch, stored as
//! `timestamptz` on PostgreSQL (readable in psql) and as an integer on SQLite.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};

/// A point in time with millisecond precision, as the journal keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The wall clock now.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// From milliseconds since the Unix epoch.
    pub const fn from_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn millis(self) -> i64 {
        self.0
    }

    /// This time plus `duration` (saturating).
    pub fn plus(self, duration: Duration) -> Self {
        Self(self.0.saturating_add(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)))
    }

    /// This time minus `duration` (saturating).
    pub fn minus(self, duration: Duration) -> Self {
        Self(self.0.saturating_sub(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)))
    }

    /// How long after `earlier` this is; zero if it is not after it.
    pub fn since(self, earlier: Self) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// As `SystemTime`, for waits against the wall clock.
    pub fn to_system_time(self) -> SystemTime {
        match u64::try_from(self.0) {
            Ok(millis) => UNIX_EPOCH + Duration::from_millis(millis),
            Err(_) => UNIX_EPOCH,
        }
    }

    fn to_chrono(self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.0).unwrap_or_default()
    }

    /// RFC 3339 in UTC with milliseconds: `2026-11-29T08:14:28.123Z`.
    pub fn rfc3339(self) -> String {
        self.to_chrono().to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// Parses RFC 3339 (`2026-11-29T08:14:28Z`, with or without fractions or an offset).
    pub fn parse_rfc3339(text: &str) -> Result<Self, String> {
        DateTime::parse_from_rfc3339(text.trim())
            .map(|time| Self(time.timestamp_millis()))
            .map_err(|error| format!("invalid time {text:?} ({error}); write it like 2026-11-29T08:14:28Z"))
    }
}

/// In the API's schemas: an RFC 3339 string, as it serializes.
impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::{KnownFormat, ObjectBuilder, SchemaFormat, schema::Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some("RFC 3339 in UTC, with milliseconds"))
            .into()
    }
}

impl utoipa::ToSchema for Timestamp {}

impl From<SystemTime> for Timestamp {
    fn from(time: SystemTime) -> Self {
        Self(
            time.duration_since(UNIX_EPOCH).map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)),
        )
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

/// In JSON, times are RFC 3339 strings.
impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

impl Type<Postgres> for Timestamp {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
}

/// Lets a batch bind a column of times as one `timestamptz[]` parameter.
impl PgHasArrayType for Timestamp {
    fn array_type_info() -> PgTypeInfo {
        <DateTime<Utc> as PgHasArrayType>::array_type_info()
    }
}

impl Encode<'_, Postgres> for Timestamp {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Postgres>::encode(self.to_chrono(), buf)
    }
}

impl<'r> Decode<'r, Postgres> for Timestamp {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self(<DateTime<Utc> as Decode<Postgres>>::decode(value)?.timestamp_millis()))
    }
}

impl Type<Sqlite> for Timestamp {
    fn type_info() -> SqliteTypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <i64 as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for Timestamp {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Sqlite>::encode(self.0, buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Timestamp {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self(<i64 as Decode<Sqlite>>::decode(value)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_and_print_as_rfc3339_in_utc() {
        let time = Timestamp::from_millis(1_764_404_068_123);
        assert_eq!(time.rfc3339(), "2025-11-29T08:14:28.123Z");
        assert_eq!(Timestamp::parse_rfc3339("2025-11-29T09:14:28.123+01:00"), Ok(time));
        assert!(Timestamp::parse_rfc3339("tomorrow").unwrap_err().contains("2026-11-29T08:14:28Z"));
        assert_eq!(serde_json::to_string(&time).unwrap(), "\"2025-11-29T08:14:28.123Z\"");
    }

    #[test]
    fn arithmetic_saturates_and_never_goes_backwards() {
        let time = Timestamp::from_millis(1000);
        assert_eq!(time.plus(Duration::from_millis(500)).millis(), 1500);
        assert_eq!(time.since(Timestamp::from_millis(1500)), Duration::ZERO);
        assert_eq!(Timestamp::from_millis(i64::MAX).plus(Duration::from_secs(1)).millis(), i64::MAX);
    }
}
