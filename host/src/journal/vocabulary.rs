//! The journal's words: workflow statuses, step call statuses, attempt
//! outcomes and failure kinds. Each is an enum with one column spelling per
//! case (`as_column`/`from_column`), used by the records, the SQL and JSON, so
//! a word means one thing everywhere and an unknown one is an error.

use std::fmt;

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Type};

/// Defines a journal vocabulary enum and its column, serde and sqlx mappings.
macro_rules! column_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$case_meta:meta])* $case:ident = $column:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$case_meta])* $case,)+
        }

        impl $name {
            /// Every case, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$case,)+];

            /// The text stored in the journal (and shown to people).
            pub const fn as_column(self) -> &'static str {
                match self {
                    $(Self::$case => $column,)+
                }
            }

            /// Reads a stored text; `None` for a word this version does not know.
            pub fn from_column(text: &str) -> Option<Self> {
                match text {
                    $($column => Some(Self::$case),)+
                    _ => None,
                }
            }

            /// The stored texts, as `a, b, c`, for messages.
            pub fn columns() -> String {
                Self::ALL.iter().map(|case| case.as_column()).collect::<Vec<_>>().join(", ")
            }
        }

        /// In the API's schemas: one of the column words.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($column,)+]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_column())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                Self::from_column(text)
                    .ok_or_else(|| format!("unknown {} {text:?}; use one of: {}", stringify!($name), Self::columns()))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_column())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl<DB: Database> Type<DB> for $name
        where
            str: Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: Database> Encode<'q, DB> for $name
        where
            &'static str: Encode<'q, DB>,
        {
            fn encode_by_ref(&self, buf: &mut DB::ArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <&'static str as Encode<'q, DB>>::encode(self.as_column(), buf)
            }
        }

        impl<'r, DB: Database> Decode<'r, DB> for $name
        where
            &'r str: Decode<'r, DB>,
        {
            fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
                let text = <&'r str as Decode<'r, DB>>::decode(value)?;
                Ok(text.parse::<Self>()?)
            }
        }
    };
}

column_enum! {
    /// Where a workflow is in its life.
    pub enum WorkflowStatus {
        /// Submitted, waiting for a worker to claim it.
        Enqueued = "enqueued",
        /// Waiting for a time (a delayed start, or a retry far in the future) before a worker claims it.
        Delayed = "delayed",
        /// Its own code waits (a sleep, a `recv`) and gave its worker's slot back until the wait ends.
        Waiting = "waiting",
        /// Owned by an executor (a `host run` process or a worker) that holds its lease.
        Running = "running",
        /// The entry function returned (its value may still be an `err`).
        Succeeded = "succeeded",
        /// The workflow itself trapped.
        Failed = "failed",
        /// Stopped on request (`host cancel`).
        Cancelled = "cancelled",
        /// Stopped at its deadline (`--timeout` at submit).
        TimedOut = "timed-out",
        /// Claimed too many times without progress (crash-loop cap): left for a human.
        Dead = "dead",
    }
}

impl WorkflowStatus {
    /// Whether the workflow will never run again.
    pub const fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled | Self::TimedOut | Self::Dead)
    }
}

column_enum! {
    /// What a `waiting` workflow waits for.
    pub enum WaitKind {
        /// A durable timer (`sleep`, `sleep-until`): due at its `run_at`.
        Sleep = "sleep",
        /// A message on its `wait_topic` (`recv`), at most until its `run_at`.
        Message = "message",
        /// A child workflow (its id in `wait_topic`) to end.
        Child = "child",
    }
}

impl WaitKind {
    /// What a workflow waiting for this (on `topic`) waits for, in words: "a message on topic orders".
    pub fn describe(self, topic: Option<&str>) -> String {
        match (self, topic) {
            (Self::Message, Some(topic)) => format!("a message on topic {topic}"),
            (Self::Child, Some(child)) => format!("child workflow {child} to end"),
            _ => "its sleep to end".to_string(),
        }
    }
}

column_enum! {
    /// Which ticks a schedule fires that passed while no worker ran.
    pub enum CatchUp {
        /// None: it goes on from the next tick.
        Skip = "skip",
        /// The latest of them, once.
        Latest = "latest",
        /// Every one of them, in order.
        All = "all",
    }
}

column_enum! {
    /// Whether a worker process is alive, as its row says.
    pub enum WorkerState {
        /// Its heartbeat is younger than its lease.
        Live = "live",
        /// It stopped cleanly.
        Stopped = "stopped",
        /// Silent for longer than its lease: killed, frozen or cut off (its
        /// workflows' leases have lapsed, and other workers take them over).
        Lost = "lost",
    }
}

column_enum! {
    /// How a step call stands.
    pub enum CallStatus {
        /// Its attempts are not over.
        Running = "running",
        /// An attempt returned `ok(...)`.
        Succeeded = "succeeded",
        /// An attempt returned the step's `permanent` case: the step said no, nothing was retried.
        Rejected = "rejected",
        /// Every allowed attempt failed; the workflow received `retries-exhausted`.
        Exhausted = "exhausted",
        /// The workflow was cancelled during the call.
        Cancelled = "cancelled",
    }
}

column_enum! {
    /// How one attempt ended.
    pub enum AttemptOutcome {
        /// It returned `ok(...)`.
        Ok = "ok",
        /// It failed (see its kind); another attempt may follow.
        Failed = "failed",
        /// It returned the step's `permanent` case.
        Rejected = "rejected",
    }
}

column_enum! {
    /// Why an attempt failed: the `failure-kind` cases of `stepbox:runtime/types`,
    /// and `cancelled`, which never reaches a workflow.
    pub enum FailureKind {
        /// The step returned `err(...)` with a retryable case.
        ReturnedError = "returned-error",
        /// The step trapped: a panic, `unreachable`, a stack overflow.
        Trapped = "trapped",
        /// The attempt ran past its time limit.
        TimedOut = "timed-out",
        /// The attempt tried to grow a memory past its limit.
        OutOfMemory = "out-of-memory",
        /// The host stopped while the attempt ran (a crash, a signal, a lost journal).
        Interrupted = "interrupted",
        /// The step returned a value over its result limit.
        ResultTooLarge = "result-too-large",
        /// The workflow was cancelled while the attempt ran.
        Cancelled = "cancelled",
    }
}

impl FailureKind {
    /// The `stepbox:runtime/types.failure-kind` cases, in WIT order: every kind a
    /// workflow can see in `retries-exhausted` (a cancelled attempt ends the workflow).
    pub fn wit_cases() -> impl Iterator<Item = Self> {
        Self::ALL.iter().copied().filter(|kind| *kind != Self::Cancelled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_round_trips_and_unknown_words_are_errors() {
        for status in WorkflowStatus::ALL {
            assert_eq!(WorkflowStatus::from_column(status.as_column()), Some(*status));
        }
        for kind in FailureKind::ALL {
            assert_eq!(kind.to_string().parse::<FailureKind>(), Ok(*kind));
        }
        let error = "explode".parse::<FailureKind>().unwrap_err();
        assert!(error.contains("unknown FailureKind \"explode\"") && error.contains("returned-error"), "{error}");
        assert_eq!(serde_json::to_string(&CallStatus::Rejected).unwrap(), "\"rejected\"");
    }

    /// The WIT enum and the host's list of kinds a workflow can see are the same, in order.
    #[test]
    fn wit_failure_kinds_match_the_runtime_package() {
        let wit = include_str!("../../../wit/runtime.wit");
        let body = wit.split("enum failure-kind {").nth(1).and_then(|rest| rest.split('}').next()).unwrap();
        let cases: Vec<&str> = body
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with("//"))
            .map(|line| line.trim_end_matches(','))
            .collect();
        let ours: Vec<&str> = FailureKind::wit_cases().map(FailureKind::as_column).collect();
        assert_eq!(cases, ours);
    }

    /// The `CHECK (column IN (...))` lists of each backend's migrations, the
    /// last one of each table's column winning, by `table.column`.
    fn checked_lists(backend: &str) -> std::collections::BTreeMap<String, Vec<String>> {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(backend);
        let mut files: Vec<_> = std::fs::read_dir(&folder).unwrap().map(|entry| entry.unwrap().path()).collect();
        files.sort();
        let mut lists = std::collections::BTreeMap::new();
        for file in files {
            let mut table = String::new();
            for line in std::fs::read_to_string(&file).unwrap().lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                if let [create_or_alter, first, name, ..] = words.as_slice()
                    && ["CREATE", "ALTER"].contains(create_or_alter)
                    && first.eq_ignore_ascii_case("TABLE")
                {
                    // A table rebuilt under a new name (SQLite's way to change a CHECK) counts as itself.
                    table = name.trim_matches('(').trim_end_matches("_new").to_string();
                }
                let Some((before, after)) = line.split_once(" IN (") else { continue };
                let Some(column) = before.rsplit("CHECK (").next().filter(|_| before.contains("CHECK (")) else {
                    continue;
                };
                let values = after.split(')').next().unwrap();
                let words = values.split(',').map(|word| word.trim().trim_matches('\'').to_string()).collect();
                lists.insert(format!("{table}.{}", column.trim()), words);
            }
        }
        lists
    }

    /// A status, outcome or kind the code knows is one the database accepts, and no other.
    #[test]
    fn the_migrations_check_exactly_the_vocabulary() {
        fn columns<T: Copy>(all: &[T], column: fn(T) -> &'static str) -> Vec<String> {
            all.iter().map(|case| column(*case).to_string()).collect()
        }
        for backend in ["postgres", "sqlite"] {
            let lists = checked_lists(backend);
            let expected = [
                ("workflows.status", columns(WorkflowStatus::ALL, WorkflowStatus::as_column)),
                ("step_calls.status", columns(CallStatus::ALL, CallStatus::as_column)),
                ("step_attempts.outcome", columns(AttemptOutcome::ALL, AttemptOutcome::as_column)),
                ("step_attempts.kind", columns(FailureKind::ALL, FailureKind::as_column)),
                ("schedules.catch_up", columns(CatchUp::ALL, CatchUp::as_column)),
            ];
            for (column, words) in expected {
                assert_eq!(lists.get(column), Some(&words), "{backend}: {column}");
            }
        }
    }
}
