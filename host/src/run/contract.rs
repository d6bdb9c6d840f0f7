//! The WIT step convention, checked on component types at link time: a step
//! returns `result<T, E>` where `E` is a variant with a
//! `retries-exhausted(exhausted)` case, and only plain values cross it.

use wasmtime::component::types::{ComponentFunc, Type};

use crate::config::StepName;
use crate::journal::FailureKind;

/// The case the host fills in when attempts run out.
pub const EXHAUSTED_CASE: &str = "retries-exhausted";
/// The case a step returns for errors that retrying cannot fix.
pub const PERMANENT_CASE: &str = "permanent";
/// The case a step returns to be retried after the milliseconds it carries
/// (an HTTP 429's `Retry-After`), instead of after the policy's delay.
pub const RETRY_AFTER_CASE: &str = "retry-after";

/// A step function breaks the convention; says what to change.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error(
    "step function `{step}` does not follow the step convention: {problem}. A step must return \
     `result<T, E>` where `E` is a variant with a `retries-exhausted(exhausted)` case \
     (`use stepbox:runtime/types@0.1.0.{{exhausted}};`){hint}"
)]
pub struct ConventionError {
    pub step: String,
    pub problem: String,
    pub hint: String,
}

/// Checks `func` as the step `step`.
pub fn check_step(step: &StepName, func: &ComponentFunc) -> Result<(), ConventionError> {
    let fail =
        |problem: String, hint: &str| ConventionError { step: step.to_string(), problem, hint: hint.to_string() };
    for (name, ty) in func.params() {
        if let Some(bad) = unsupported(&ty) {
            return Err(fail(format!("parameter `{name}` is of type `{bad}`"), &cannot_cross()));
        }
    }
    let results: Vec<Type> = func.results().collect();
    let [Type::Result(result)] = results.as_slice() else {
        let found = match results.as_slice() {
            [] => "it returns nothing".to_string(),
            [ty] => format!("it returns `{}`", describe(ty)),
            many => format!("it returns {} values", many.len()),
        };
        return Err(fail(found, "."));
    };
    if let Some(bad) = [result.ok(), result.err()].iter().flatten().find_map(unsupported) {
        return Err(fail(format!("its result contains `{bad}`"), &cannot_cross()));
    }
    let Some(Type::Variant(variant)) = result.err() else {
        let found = result.err().map_or("nothing".to_string(), |ty| format!("`{}`", describe(&ty)));
        return Err(fail(
            format!("its error type is {found}, not a variant"),
            ". For example: `variant my-error { failed(string), permanent(string), retries-exhausted(exhausted) }`.",
        ));
    };
    if let Some(case) = variant.cases().find(|case| case.name == RETRY_AFTER_CASE)
        && !matches!(case.ty, Some(Type::U64))
    {
        let payload = case.ty.map_or("nothing".to_string(), |ty| format!("`{}`", describe(&ty)));
        return Err(fail(
            format!("its `{RETRY_AFTER_CASE}` case carries {payload}"),
            ". A `retry-after` case asks for the next attempt after the milliseconds it carries: \
             declare it `retry-after(u64)`.",
        ));
    }
    let Some(case) = variant.cases().find(|case| case.name == EXHAUSTED_CASE) else {
        let cases = variant.cases().map(|case| case.name.to_string()).collect::<Vec<_>>().join(", ");
        return Err(fail(
            format!("its error variant has no `{EXHAUSTED_CASE}` case (it has: {cases})"),
            ". Add `retries-exhausted(exhausted)` to the variant.",
        ));
    };
    match case.ty {
        Some(payload) if is_exhausted(&payload) => Ok(()),
        Some(Type::Record(record)) if record.fields().map(|field| field.name).eq(["step", "attempts", "failures"]) => {
            Err(fail(
                "its `exhausted` record differs from this host's (for example in the `failure-kind` cases)".into(),
                ". The component was built against another version of stepbox:runtime@0.1.0: rebuild it against \
                 the host's wit/runtime.wit.",
            ))
        }
        payload => Err(fail(
            format!(
                "its `{EXHAUSTED_CASE}` case carries {} instead of `stepbox:runtime/types.exhausted`",
                payload.map_or("nothing".to_string(), |ty| format!("`{}`", describe(&ty)))
            ),
            ". Use the `exhausted` record of stepbox:runtime@0.1.0.",
        )),
    }
}

/// Whether `ty` is structurally `stepbox:runtime/types.exhausted`.
pub fn is_exhausted(ty: &Type) -> bool {
    let Type::Record(record) = ty else { return false };
    let fields: Vec<_> = record.fields().map(|field| (field.name, field.ty)).collect();
    match fields.as_slice() {
        [("step", Type::String), ("attempts", Type::U32), ("failures", Type::List(list))] => {
            is_attempt_failure(&list.ty())
        }
        _ => false,
    }
}

fn is_attempt_failure(ty: &Type) -> bool {
    let Type::Record(record) = ty else { return false };
    let fields: Vec<_> = record.fields().map(|field| (field.name, field.ty)).collect();
    match fields.as_slice() {
        [("attempt", Type::U32), ("kind", Type::Enum(kind)), ("message", Type::String), ("elapsed-ms", Type::U64)] => {
            kind.names().eq(FailureKind::wit_cases().map(FailureKind::as_column))
        }
        _ => false,
    }
}

/// The first type inside `ty` that cannot be passed between two stores (resources, streams).
fn unsupported(ty: &Type) -> Option<String> {
    match ty {
        Type::Own(_) | Type::Borrow(_) | Type::Future(_) | Type::Stream(_) | Type::ErrorContext => Some(describe(ty)),
        Type::List(list) => unsupported(&list.ty()),
        Type::FixedLengthList(list) => unsupported(&list.ty()),
        Type::Map(map) => unsupported(&map.key()).or_else(|| unsupported(&map.value())),
        Type::Option(option) => unsupported(&option.ty()),
        Type::Result(result) => [result.ok(), result.err()].iter().flatten().find_map(unsupported),
        Type::Record(record) => record.fields().find_map(|field| unsupported(&field.ty)),
        Type::Tuple(tuple) => tuple.types().find_map(|ty| unsupported(&ty)),
        Type::Variant(variant) => variant.cases().filter_map(|case| case.ty).find_map(|ty| unsupported(&ty)),
        _ => None,
    }
}

fn cannot_cross() -> String {
    ". Resources, futures and streams cannot cross a step boundary: each attempt runs in its own \
     instance, and a step's value is journaled; pass plain data instead."
        .to_string()
}

/// A short WIT-like rendering of a type for error messages.
pub fn describe(ty: &Type) -> String {
    let list = |types: Vec<Type>| types.iter().map(describe).collect::<Vec<_>>().join(", ");
    match ty {
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::List(inner) => format!("list<{}>", describe(&inner.ty())),
        Type::FixedLengthList(inner) => format!("list<{}, N>", describe(&inner.ty())),
        Type::Map(map) => format!("map<{}, {}>", describe(&map.key()), describe(&map.value())),
        Type::Option(inner) => format!("option<{}>", describe(&inner.ty())),
        Type::Result(result) => {
            let side = |ty: Option<Type>| ty.map_or("_".to_string(), |ty| describe(&ty));
            format!("result<{}, {}>", side(result.ok()), side(result.err()))
        }
        Type::Tuple(tuple) => format!("tuple<{}>", list(tuple.types().collect())),
        Type::Record(record) => {
            format!("record {{ {} }}", record.fields().map(|f| f.name.to_string()).collect::<Vec<_>>().join(", "))
        }
        Type::Variant(variant) => {
            format!("variant {{ {} }}", variant.cases().map(|c| c.name.to_string()).collect::<Vec<_>>().join(", "))
        }
        Type::Enum(names) => format!("enum {{ {} }}", names.names().collect::<Vec<_>>().join(", ")),
        Type::Flags(names) => format!("flags {{ {} }}", names.names().collect::<Vec<_>>().join(", ")),
        Type::Own(_) => "own<resource>".into(),
        Type::Borrow(_) => "borrow<resource>".into(),
        Type::Future(_) => "future".into(),
        Type::Stream(_) => "stream".into(),
        Type::ErrorContext => "error-context".into(),
    }
}
