//! Component values at the host's edges: WAVE text for arguments, output and
//! the journal; the `retries-exhausted` value handed to workflows.

use std::time::Duration;

use wasmtime::component::Val;
use wasmtime::component::types::ComponentFunc;

use crate::contract::{EXHAUSTED_CASE, PERMANENT_CASE, describe};

/// A value as WAVE text (`true`, `ok("x")`, `err(failed("boom"))`).
pub fn to_wave(value: &Val) -> String {
    value.to_wave().unwrap_or_else(|error| format!("<value not printable as WAVE: {error}>"))
}

/// Argument values as one WAVE tuple, the form the journal stores inputs in.
pub fn to_wave_tuple(values: &[Val]) -> String {
    format!("({})", values.iter().map(to_wave).collect::<Vec<_>>().join(", "))
}

/// Command-line arguments do not fit the entry function.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ArgumentError {
    #[error("`{function}` takes {expected} argument(s) ({signature}), but {given} were given")]
    Count { function: String, expected: usize, given: usize, signature: String },
    #[error("argument {index} of `{function}` ({parameter}) is not a valid WAVE value: {given:?}: {message}")]
    Malformed { function: String, index: usize, parameter: String, given: String, message: String },
}

/// Parses one WAVE value per parameter of `func`.
pub fn parse_arguments(function: &str, func: &ComponentFunc, arguments: &[String]) -> Result<Vec<Val>, ArgumentError> {
    let params: Vec<_> = func.params().collect();
    if params.len() != arguments.len() {
        let signature = params.iter().map(|(name, ty)| format!("{name}: {}", describe(ty))).collect::<Vec<_>>();
        return Err(ArgumentError::Count {
            function: function.to_string(),
            expected: params.len(),
            given: arguments.len(),
            signature: signature.join(", "),
        });
    }
    params
        .iter()
        .zip(arguments)
        .enumerate()
        .map(|(index, ((name, ty), text))| {
            Val::from_wave(ty, text).map_err(|error| ArgumentError::Malformed {
                function: function.to_string(),
                index: index + 1,
                parameter: format!("{name}: {}", describe(ty)),
                given: text.clone(),
                message: error.to_string(),
            })
        })
        .collect()
}

/// How a step's returned `result` is treated.
#[derive(Debug, Clone, PartialEq)]
pub enum Returned {
    /// `ok(...)`: the call is done.
    Ok,
    /// `err(permanent(...))`: done, not retried.
    Permanent,
    /// Any other `err(...)`, as WAVE text: retried.
    Error(String),
}

/// Classifies a step's return value (the convention guarantees a `result`).
pub fn classify(value: &Val) -> Returned {
    match value {
        Val::Result(Ok(_)) => Returned::Ok,
        Val::Result(Err(Some(payload))) => match payload.as_ref() {
            Val::Variant(case, _) if case == PERMANENT_CASE => Returned::Permanent,
            other => Returned::Error(to_wave(other)),
        },
        other => Returned::Error(to_wave(other)),
    }
}

/// One failed attempt, as `stepbox:runtime/types.attempt-failure`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptFailure {
    pub attempt: u32,
    /// A `failure-kind` case.
    pub kind: &'static str,
    pub message: String,
    pub elapsed: Duration,
}

/// `err(retries-exhausted({step, attempts, failures}))`, the value a workflow
/// receives when every attempt of `step` failed.
pub fn exhausted(step: &str, failures: &[AttemptFailure]) -> Val {
    let attempts = u32::try_from(failures.len()).unwrap_or(u32::MAX);
    let failures = failures
        .iter()
        .map(|failure| {
            Val::Record(vec![
                ("attempt".into(), Val::U32(failure.attempt)),
                ("kind".into(), Val::Enum(failure.kind.into())),
                ("message".into(), Val::String(failure.message.clone())),
                ("elapsed-ms".into(), Val::U64(u64::try_from(failure.elapsed.as_millis()).unwrap_or(u64::MAX))),
            ])
        })
        .collect();
    let record = Val::Record(vec![
        ("step".into(), Val::String(step.into())),
        ("attempts".into(), Val::U32(attempts)),
        ("failures".into(), Val::List(failures)),
    ]);
    Val::Result(Err(Some(Box::new(Val::Variant(EXHAUSTED_CASE.into(), Some(Box::new(record)))))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhausted_has_every_failure() {
        let value = exhausted(
            "example:provision/steps.provision",
            &[AttemptFailure {
                attempt: 1,
                kind: "trapped",
                message: "boom".into(),
                elapsed: Duration::from_millis(7),
            }],
        );
        assert_eq!(
            to_wave(&value),
            r#"err(retries-exhausted({step: "example:provision/steps.provision", attempts: 1, failures: [{attempt: 1, kind: trapped, message: "boom", elapsed-ms: 7}]}))"#
        );
    }

    #[test]
    fn permanent_is_told_apart_from_other_errors() {
        let err = |case: &str| {
            Val::Result(Err(Some(Box::new(Val::Variant(case.into(), Some(Box::new(Val::String("x".into()))))))))
        };
        assert_eq!(classify(&err("permanent")), Returned::Permanent);
        assert_eq!(classify(&err("failed")), Returned::Error(r#"failed("x")"#.into()));
        assert_eq!(classify(&Val::Result(Ok(None))), Returned::Ok);
    }
}
