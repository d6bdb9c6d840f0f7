//! Component values at the host's edges: WAVE text for arguments, output and
//! the journal (bounded, so a huge value is refused before it is rendered);
//! a JSON rendering for people and programs; how a step's returned `result`
//! is treated; and the `retries-exhausted` value handed to workflows.

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value as Json, json};
use wasmtime::component::Val;
use wasmtime::component::types::{ComponentFunc, Type};

use super::contract::{EXHAUSTED_CASE, PERMANENT_CASE, RETRY_AFTER_CASE, describe};
use crate::journal::FailureKind;

/// A value as WAVE text (`true`, `ok("x")`, `err(failed("boom"))`).
pub fn to_wave(value: &Val) -> String {
    value.to_wave().unwrap_or_else(|error| format!("<value not printable as WAVE: {error}>"))
}

/// Argument values as one WAVE tuple, the form the journal stores inputs in.
pub fn to_wave_tuple(values: &[Val]) -> String {
    format!("({})", values.iter().map(to_wave).collect::<Vec<_>>().join(", "))
}

/// A value rendered as WAVE would exceed the limit; rendering stopped there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge;

/// `value` as WAVE, or [`TooLarge`] as soon as the text passes `limit` bytes
/// (a 100 MB list is refused after its first `limit` bytes, not rendered whole).
pub fn to_wave_within(value: &Val, limit: u64) -> Result<String, TooLarge> {
    struct Bounded {
        text: String,
        limit: usize,
        exceeded: bool,
    }
    impl fmt::Write for Bounded {
        fn write_str(&mut self, piece: &str) -> fmt::Result {
            if self.text.len() + piece.len() > self.limit {
                self.exceeded = true;
                return Err(fmt::Error);
            }
            self.text.push_str(piece);
            Ok(())
        }
    }
    let mut sink =
        Bounded { text: String::new(), limit: usize::try_from(limit).unwrap_or(usize::MAX), exceeded: false };
    match wasm_wave::writer::Writer::new(&mut sink).write_value(value) {
        Ok(()) => Ok(sink.text),
        Err(_) if sink.exceeded => Err(TooLarge),
        // Not a size problem: the value has no WAVE form (never for component values).
        Err(error) => Ok(format!("<value not printable as WAVE: {error}>")),
    }
}

/// A value as JSON: records as objects, variants as `{"tag": case, "val":
/// payload}` (no `val` without a payload), enums as their case, options as
/// `null` or the value, results as `{"ok": …}` / `{"err": …}`, flags as a
/// list of the set ones, chars as strings, non-finite floats as strings.
pub fn to_json(value: &Val) -> Json {
    match value {
        Val::Bool(b) => json!(b),
        Val::S8(n) => json!(n),
        Val::U8(n) => json!(n),
        Val::S16(n) => json!(n),
        Val::U16(n) => json!(n),
        Val::S32(n) => json!(n),
        Val::U32(n) => json!(n),
        Val::S64(n) => json!(n),
        Val::U64(n) => json!(n),
        Val::Float32(n) => float(f64::from(*n)),
        Val::Float64(n) => float(*n),
        Val::Char(c) => json!(c.to_string()),
        Val::String(s) => json!(s),
        Val::List(items) | Val::Tuple(items) => Json::Array(items.iter().map(to_json).collect()),
        Val::Record(fields) => {
            Json::Object(fields.iter().map(|(name, value)| (name.clone(), to_json(value))).collect())
        }
        Val::Variant(case, payload) => tagged(case, payload.as_deref()),
        Val::Enum(case) => json!(case),
        Val::Option(inner) => inner.as_deref().map_or(Json::Null, to_json),
        Val::Result(Ok(payload)) => json!({ "ok": payload.as_deref().map_or(Json::Null, to_json) }),
        Val::Result(Err(payload)) => json!({ "err": payload.as_deref().map_or(Json::Null, to_json) }),
        Val::Flags(names) => json!(names),
        Val::Map(entries) => Json::Array(entries.iter().map(|(k, v)| json!([to_json(k), to_json(v)])).collect()),
        other => json!(to_wave(other)),
    }
}

/// Argument values as a JSON array.
pub fn to_json_tuple(values: &[Val]) -> Json {
    Json::Array(values.iter().map(to_json).collect())
}

fn float(n: f64) -> Json {
    serde_json::Number::from_f64(n).map_or_else(|| json!(n.to_string()), Json::Number)
}

fn tagged(case: &str, payload: Option<&Val>) -> Json {
    let mut object = Map::new();
    object.insert("tag".into(), json!(case));
    if let Some(payload) = payload {
        object.insert("val".into(), to_json(payload));
    }
    Json::Object(object)
}

/// A JSON value as a component value of type `ty`: the inverse of
/// [`to_json`] (numbers must fit their integer type exactly); why not, when
/// it does not fit.
pub fn from_json(ty: &Type, json: &Json) -> Result<Val, String> {
    let mismatch = || format!("expected {}, found {json}", describe(ty));
    let integer = |json: &Json| json.as_i64().map(i128::from).or_else(|| json.as_u64().map(i128::from));
    macro_rules! int {
        ($variant:ident, $int:ty) => {
            integer(json).and_then(|n| <$int>::try_from(n).ok()).map(Val::$variant).ok_or_else(mismatch)
        };
    }
    let float = || match json {
        Json::String(text) => text.parse::<f64>().ok(),
        other => other.as_f64(),
    };
    match ty {
        Type::Bool => json.as_bool().map(Val::Bool).ok_or_else(mismatch),
        Type::S8 => int!(S8, i8),
        Type::U8 => int!(U8, u8),
        Type::S16 => int!(S16, i16),
        Type::U16 => int!(U16, u16),
        Type::S32 => int!(S32, i32),
        Type::U32 => int!(U32, u32),
        Type::S64 => int!(S64, i64),
        Type::U64 => int!(U64, u64),
        // A float32 is a narrowed float64, as JSON has no other.
        #[allow(clippy::cast_possible_truncation)]
        Type::Float32 => float().map(|n| Val::Float32(n as f32)).ok_or_else(mismatch),
        Type::Float64 => float().map(Val::Float64).ok_or_else(mismatch),
        Type::Char => {
            let mut chars = json.as_str().ok_or_else(mismatch)?.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Ok(Val::Char(c)),
                _ => Err(mismatch()),
            }
        }
        Type::String => json.as_str().map(|text| Val::String(text.to_string())).ok_or_else(mismatch),
        Type::List(list) => {
            let items = json.as_array().ok_or_else(mismatch)?;
            let item = list.ty();
            items.iter().map(|value| from_json(&item, value)).collect::<Result<_, _>>().map(Val::List)
        }
        Type::Tuple(tuple) => {
            let items = json.as_array().ok_or_else(mismatch)?;
            let types: Vec<Type> = tuple.types().collect();
            if items.len() != types.len() {
                return Err(mismatch());
            }
            types.iter().zip(items).map(|(ty, value)| from_json(ty, value)).collect::<Result<_, _>>().map(Val::Tuple)
        }
        Type::Record(record) => {
            let object = json.as_object().ok_or_else(mismatch)?;
            let fields: Vec<_> = record.fields().collect();
            if let Some(unknown) = object.keys().find(|key| !fields.iter().any(|field| field.name == key.as_str())) {
                return Err(format!("{} has no field `{unknown}`", describe(ty)));
            }
            fields
                .iter()
                .map(|field| {
                    let value = object.get(field.name).unwrap_or(&Json::Null);
                    from_json(&field.ty, value)
                        .map(|value| (field.name.to_string(), value))
                        .map_err(|error| format!("field `{}`: {error}", field.name))
                })
                .collect::<Result<_, _>>()
                .map(Val::Record)
        }
        Type::Variant(variant) => {
            let tag = json.get("tag").and_then(Json::as_str).ok_or_else(mismatch)?;
            let case = variant.cases().find(|case| case.name == tag).ok_or_else(mismatch)?;
            let payload = match (case.ty, json.get("val")) {
                (Some(ty), Some(value)) => Some(Box::new(from_json(&ty, value)?)),
                (None, None) => None,
                _ => return Err(mismatch()),
            };
            Ok(Val::Variant(tag.to_string(), payload))
        }
        Type::Enum(cases) => {
            let name = json.as_str().filter(|name| cases.names().any(|case| case == *name)).ok_or_else(mismatch)?;
            Ok(Val::Enum(name.to_string()))
        }
        Type::Option(option) => match json {
            Json::Null => Ok(Val::Option(None)),
            value => Ok(Val::Option(Some(Box::new(from_json(&option.ty(), value)?)))),
        },
        Type::Result(result) => {
            let object = json.as_object().filter(|object| object.len() == 1).ok_or_else(mismatch)?;
            let payload = |ty: Option<Type>, value: &Json| match ty {
                Some(ty) => from_json(&ty, value).map(|value| Some(Box::new(value))),
                None if value.is_null() => Ok(None),
                None => Err(mismatch()),
            };
            match (object.get("ok"), object.get("err")) {
                (Some(value), None) => payload(result.ok(), value).map(|value| Val::Result(Ok(value))),
                (None, Some(value)) => payload(result.err(), value).map(|value| Val::Result(Err(value))),
                _ => Err(mismatch()),
            }
        }
        Type::Flags(flags) => {
            let names = json.as_array().ok_or_else(mismatch)?;
            names
                .iter()
                .map(|name| name.as_str().filter(|name| flags.names().any(|flag| flag == *name)).map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .map(Val::Flags)
                .ok_or_else(mismatch)
        }
        other => Err(format!("{} values cannot be given as JSON", describe(other))),
    }
}

/// JSON arguments (an array, one value per parameter of `func`) as component values.
pub fn from_json_arguments(function: &str, func: &ComponentFunc, arguments: &str) -> Result<Vec<Val>, String> {
    let params: Vec<_> = func.params().collect();
    let signature = || params.iter().map(|(name, ty)| format!("{name}: {}", describe(ty))).collect::<Vec<_>>();
    let values: Vec<Json> = serde_json::from_str(arguments).map_err(|error| {
        format!("the arguments of `{function}` must be a JSON array of its parameters ({error}): {arguments}")
    })?;
    if values.len() != params.len() {
        return Err(format!(
            "`{function}` takes {} argument(s) ({}), but {} were given",
            params.len(),
            signature().join(", "),
            values.len()
        ));
    }
    params
        .iter()
        .zip(&values)
        .enumerate()
        .map(|(index, ((name, ty), value))| {
            from_json(ty, value).map_err(|error| format!("argument {} of `{function}` ({name}): {error}", index + 1))
        })
        .collect()
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

/// The longest wait a step may ask for with `retry-after` (a year).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(365 * 24 * 3600);

/// How a step's returned `result` is treated.
#[derive(Debug, Clone, PartialEq)]
pub enum Returned {
    /// `ok(...)`: the call is done.
    Ok,
    /// `err(permanent(...))`: done, not retried.
    Rejected,
    /// Any other `err(...)`, as WAVE text: retried, after the policy's delay
    /// or, for `retry-after(ms)`, after the delay the step asked for.
    Error { message: String, retry_after: Option<Duration> },
}

/// Classifies a step's return value (the convention guarantees a `result`).
pub fn classify(value: &Val) -> Returned {
    match value {
        Val::Result(Ok(_)) => Returned::Ok,
        Val::Result(Err(Some(payload))) => match payload.as_ref() {
            Val::Variant(case, _) if case == PERMANENT_CASE => Returned::Rejected,
            Val::Variant(case, Some(delay)) if case == RETRY_AFTER_CASE => {
                let retry_after = match delay.as_ref() {
                    Val::U64(ms) => Some(Duration::from_millis(*ms).min(MAX_RETRY_AFTER)),
                    _ => None,
                };
                Returned::Error { message: to_wave(payload), retry_after }
            }
            other => Returned::Error { message: to_wave(other), retry_after: None },
        },
        other => Returned::Error { message: to_wave(other), retry_after: None },
    }
}

/// One failed attempt, as `stepbox:runtime/types.attempt-failure`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptFailure {
    pub attempt: u32,
    pub kind: FailureKind,
    pub message: String,
    /// How long it ran; zero when unknown (the host stopped during it).
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
                ("kind".into(), Val::Enum(failure.kind.as_column().into())),
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
                kind: FailureKind::Trapped,
                message: "boom".into(),
                elapsed: Duration::from_millis(7),
            }],
        );
        assert_eq!(
            to_wave(&value),
            r#"err(retries-exhausted({step: "example:provision/steps.provision", attempts: 1, failures: [{attempt: 1, kind: trapped, message: "boom", elapsed-ms: 7}]}))"#
        );
        assert_eq!(
            to_json(&value),
            json!({"err": {"tag": "retries-exhausted", "val": {"step": "example:provision/steps.provision",
                "attempts": 1, "failures": [{"attempt": 1, "kind": "trapped", "message": "boom", "elapsed-ms": 7}]}}})
        );
    }

    #[test]
    fn permanent_and_retry_after_are_told_apart_from_other_errors() {
        let err = |case: &str, payload: Val| {
            Val::Result(Err(Some(Box::new(Val::Variant(case.into(), Some(Box::new(payload)))))))
        };
        assert_eq!(classify(&err("permanent", Val::String("x".into()))), Returned::Rejected);
        assert_eq!(
            classify(&err("failed", Val::String("x".into()))),
            Returned::Error { message: r#"failed("x")"#.into(), retry_after: None }
        );
        assert_eq!(
            classify(&err("retry-after", Val::U64(1500))),
            Returned::Error { message: "retry-after(1500)".into(), retry_after: Some(Duration::from_millis(1500)) }
        );
        assert_eq!(classify(&Val::Result(Ok(None))), Returned::Ok);
    }

    #[test]
    fn wave_rendering_stops_at_the_limit() {
        let big = Val::List((0..1_000_000).map(|_| Val::U8(255)).collect());
        assert_eq!(to_wave_within(&big, 1 << 20), Err(TooLarge));
        assert_eq!(to_wave_within(&Val::U32(7), 1 << 20), Ok("7".into()));
        assert_eq!(to_wave_within(&Val::String("abc".into()), 5), Ok("\"abc\"".into()));
        assert_eq!(to_wave_within(&Val::String("abcd".into()), 5), Err(TooLarge));
    }

    /// Every value read back from its JSON is the value; what does not fit says what was expected.
    #[test]
    fn json_reads_back_as_the_value_it_came_from() {
        let values = [
            Val::U32(7),
            Val::S8(-3),
            Val::String("eu-west".into()),
            Val::Char('λ'),
            Val::Bool(true),
            Val::Float64(1.5),
        ];
        let types = [Type::U32, Type::S8, Type::String, Type::Char, Type::Bool, Type::Float64];
        for (value, ty) in values.iter().zip(&types) {
            assert_eq!(from_json(ty, &to_json(value)).as_ref(), Ok(value));
        }
        assert_eq!(from_json(&Type::U8, &json!(256)), Err("expected u8, found 256".to_string()));
        assert_eq!(from_json(&Type::String, &json!(1)), Err("expected string, found 1".to_string()));
        assert_eq!(from_json(&Type::U64, &json!(-1)), Err("expected u64, found -1".to_string()));
    }

    #[test]
    fn json_of_options_flags_chars_and_floats() {
        assert_eq!(to_json(&Val::Option(None)), Json::Null);
        assert_eq!(to_json(&Val::Option(Some(Box::new(Val::U8(3))))), json!(3));
        assert_eq!(to_json(&Val::Flags(vec!["a".into(), "c".into()])), json!(["a", "c"]));
        assert_eq!(to_json(&Val::Char('λ')), json!("λ"));
        assert_eq!(to_json(&Val::Float64(f64::NAN)), json!("NaN"));
        assert_eq!(to_json(&Val::Variant("none".into(), None)), json!({"tag": "none"}));
        assert_eq!(to_json(&Val::Result(Ok(None))), json!({"ok": null}));
    }
}
