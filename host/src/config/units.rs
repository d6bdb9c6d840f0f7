//! Durations and sizes as people write them ("250ms", "64MiB"), for the
//! command line and the manifest.

use std::time::Duration;

use bytesize::ByteSize;

/// Parses "250ms", "1s", "1h 30m"; the error says what is accepted.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|error| format!("invalid duration {text:?} ({error}); write it like \"250ms\", \"1s\" or \"2m\""))
}

/// Parses "64MiB", "1 GiB", "512KB"; the error says what is accepted.
pub fn parse_size(text: &str) -> Result<ByteSize, String> {
    text.trim().parse::<ByteSize>().map_err(|error| format!("invalid size {text:?} ({error}); write it like \"64MiB\""))
}

/// Optional durations in serde: read as human text, written the same way.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_duration(&text).map(Some).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(value: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => serializer.serialize_str(&humantime::format_duration(*duration).to_string()),
            None => serializer.serialize_none(),
        }
    }
}

/// Required durations in serde, as human text that reads back exactly ("1s 500ms").
pub mod exact_duration {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(*value).to_string())
    }
}

/// Optional sizes in serde: read as human text ("64MiB") or a byte count, written as an exact byte count.
pub mod size {
    use bytesize::ByteSize;
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Bytes(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<ByteSize>, D::Error> {
        match Written::deserialize(deserializer)? {
            Written::Bytes(bytes) => Ok(Some(ByteSize::b(bytes))),
            Written::Text(text) => super::parse_size(&text).map(Some).map_err(serde::de::Error::custom),
        }
    }

    pub fn serialize<S: Serializer>(value: &Option<ByteSize>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(size) => serializer.serialize_u64(size.as_u64()),
            None => serializer.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_humans_write_them() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("soon").unwrap_err().contains("\"250ms\""));
    }

    #[test]
    fn sizes_read_like_humans_write_them() {
        assert_eq!(parse_size("64MiB").unwrap().as_u64(), 64 << 20);
        assert_eq!(parse_size("1 GiB").unwrap().as_u64(), 1 << 30);
        assert!(parse_size("lots").unwrap_err().contains("\"64MiB\""));
    }
}
