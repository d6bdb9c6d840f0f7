//! Which settings (retry policy, limits, grants) each step gets: defaults,
//! then the manifest, then the command line; within a source, a step's own
//! entry over its component's over the all-steps one.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::grants::{GrantOverrides, Grants};
use super::limits::{AttemptLimits, LimitOverrides};
use super::retry::{PolicyError, RetryPolicy};
use super::step_name::StepName;
use super::units::{parse_duration, parse_size};

/// Policy fields one source sets; unset fields fall through to the level below.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PolicyOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, with = "crate::config::units::duration", skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_rate: Option<f64>,
    #[serde(default, with = "crate::config::units::duration", skip_serializing_if = "Option::is_none")]
    pub max_interval: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
}

impl PolicyOverrides {
    /// Refuses values that are invalid whatever they combine with: the
    /// defaults with this source's values must make a valid policy.
    pub fn check(&self) -> Result<(), PolicyError> {
        self.apply(RetryPolicy::default()).validate()
    }

    /// `base` with every field this source sets replaced.
    pub fn apply(&self, base: RetryPolicy) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts.unwrap_or(base.max_attempts),
            initial_interval: self.interval.unwrap_or(base.initial_interval),
            backoff_rate: self.backoff_rate.unwrap_or(base.backoff_rate),
            max_interval: self.max_interval.unwrap_or(base.max_interval),
            jitter: self.jitter.unwrap_or(base.jitter),
        }
    }
}

/// The settings one source gives at one level (all steps, a component, a step).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Scope {
    #[serde(default)]
    pub retry: PolicyOverrides,
    #[serde(default)]
    pub limits: LimitOverrides,
    #[serde(default)]
    pub grants: GrantOverrides,
}

/// Everything a step runs with, recorded by value with each workflow so a
/// resume runs its steps exactly as the start did.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StepSettings {
    pub policy: RetryPolicy,
    pub limits: AttemptLimits,
    pub grants: Grants,
}

/// A setting the command line sets, for all steps (`VALUE`) or one (`STEP=VALUE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    MaxAttempts,
    Interval,
    BackoffRate,
    MaxInterval,
    Jitter,
    Timeout,
    Memory,
}

impl Setting {
    /// The flag that sets it.
    pub fn flag(self) -> &'static str {
        match self {
            Self::MaxAttempts => "--max-attempts",
            Self::Interval => "--interval",
            Self::BackoffRate => "--backoff-rate",
            Self::MaxInterval => "--max-interval",
            Self::Jitter => "--jitter",
            Self::Timeout => "--timeout",
            Self::Memory => "--memory",
        }
    }

    /// Sets it in `scope` from its text; the error names the flag and what is accepted.
    fn apply(self, scope: &mut Scope, value: &str) -> Result<(), String> {
        let flag = self.flag();
        let number = || value.trim().parse::<f64>().map_err(|_| format!("{flag} needs a number, got {value:?}"));
        let duration = || parse_duration(value).map_err(|error| format!("{flag}: {error}"));
        let retry = &mut scope.retry;
        match self {
            Self::MaxAttempts => {
                let attempts =
                    value.trim().parse().map_err(|_| format!("{flag} needs a whole number >= 1, got {value:?}"))?;
                retry.max_attempts = Some(attempts);
            }
            Self::Interval => retry.interval = Some(duration()?),
            Self::MaxInterval => retry.max_interval = Some(duration()?),
            Self::BackoffRate => retry.backoff_rate = Some(number()?),
            Self::Jitter => retry.jitter = Some(number()?),
            Self::Timeout => scope.limits.timeout = Some(duration()?),
            Self::Memory => scope.limits.memory = Some(parse_size(value).map_err(|error| format!("{flag}: {error}"))?),
        }
        Ok(())
    }
}

/// One source of settings (the manifest, the command line).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct SettingsLayer {
    /// Where it came from, for error messages: a file path or "the command line".
    pub origin: String,
    /// Applies to every step.
    pub all: Scope,
    /// Applies to the steps of one component, keyed by its file name (`flaky.wasm`).
    pub components: BTreeMap<String, Scope>,
    /// Applies to one step, keyed by its bare or qualified name.
    pub steps: BTreeMap<String, Scope>,
    /// Step calls the workflow may have running at once (`start-call`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_calls: Option<u32>,
}

/// Step calls one workflow may have running at once when nothing says otherwise.
pub const DEFAULT_MAX_CONCURRENT_CALLS: u32 = 16;

/// The most step calls one workflow may set to run at once.
pub const MAX_CONCURRENT_CALLS_LIMIT: u32 = 1000;

/// A settings source names a step or component that does not exist, or sets a bad value.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SettingsError {
    #[error(
        "{origin} has settings for step `{name}`, but no step of this workflow has that name; its steps are: {known}"
    )]
    UnknownStep { origin: String, name: String, known: String },
    #[error(
        "{origin} has settings for component `{name}`, but no step comes from a component of that file name; they come from: {known}"
    )]
    UnknownComponent { origin: String, name: String, known: String },
    #[error("{origin} gives step `{step}` an invalid retry policy: {error}")]
    Invalid { origin: String, step: String, error: PolicyError },
    #[error("{origin} gives step `{step}` a grant that cannot work: {message}")]
    Grant { origin: String, step: String, message: String },
    #[error("{origin} sets an invalid retry policy: {error}")]
    InvalidValue { origin: String, error: PolicyError },
    #[error("{origin} gives step `{step}` limits no attempt can run under: {message}")]
    Limits { origin: String, step: String, message: String },
    #[error("{origin} sets max-concurrent-calls to {given}; it must be from 1 to {MAX_CONCURRENT_CALLS_LIMIT}")]
    ConcurrentCalls { origin: String, given: u32 },
}

/// All settings sources, lowest precedence first.
#[derive(Debug, Clone, Default)]
pub struct SettingsLayers {
    layers: Vec<SettingsLayer>,
}

/// A step and the file name of the component that provides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSource {
    pub step: StepName,
    pub component: String,
}

impl SettingsLayer {
    /// The command line's settings: each `(setting, text)` is `VALUE` for
    /// every step or `STEP=VALUE` for one.
    pub fn from_flags<'a>(flags: impl IntoIterator<Item = (Setting, &'a str)>) -> Result<Self, String> {
        let mut layer = Self { origin: "the command line".into(), ..Self::default() };
        for (setting, flag) in flags {
            let (step, value) = match flag.split_once('=') {
                Some((step, value)) => (Some(step.trim().to_string()), value),
                None => (None, flag),
            };
            let scope = match step {
                Some(step) => layer.steps.entry(step).or_default(),
                None => &mut layer.all,
            };
            setting.apply(scope, value)?;
        }
        Ok(layer)
    }

    /// Whether this source sets nothing.
    pub fn is_empty(&self) -> bool {
        self.all == Scope::default()
            && self.components.is_empty()
            && self.steps.is_empty()
            && self.max_concurrent_calls.is_none()
    }
}

impl SettingsLayers {
    /// Adds a source that takes precedence over every source added before it.
    pub fn push(&mut self, layer: SettingsLayer) {
        self.layers.push(layer);
    }

    /// Refuses step- or component-specific settings that name nothing in
    /// `known`, and policy values that are invalid on their own, naming the source.
    pub fn check_names(&self, known: &[StepSource]) -> Result<(), SettingsError> {
        let list = |items: Vec<String>| if items.is_empty() { "(none)".to_string() } else { items.join(", ") };
        for layer in &self.layers {
            if let Some(given) = layer.max_concurrent_calls.filter(|n| !(1..=MAX_CONCURRENT_CALLS_LIMIT).contains(n)) {
                return Err(SettingsError::ConcurrentCalls { origin: layer.origin.clone(), given });
            }
            let scopes = std::iter::once(&layer.all).chain(layer.components.values()).chain(layer.steps.values());
            for scope in scopes {
                scope
                    .retry
                    .check()
                    .map_err(|error| SettingsError::InvalidValue { origin: layer.origin.clone(), error })?;
            }
            if let Some(name) = layer.steps.keys().find(|name| !known.iter().any(|source| source.step.matches(name))) {
                return Err(SettingsError::UnknownStep {
                    origin: layer.origin.clone(),
                    name: name.clone(),
                    known: list(known.iter().map(|source| source.step.to_string()).collect()),
                });
            }
            if let Some(name) =
                layer.components.keys().find(|name| !known.iter().any(|source| &source.component == *name))
            {
                let mut components: Vec<String> = known.iter().map(|source| source.component.clone()).collect();
                components.dedup();
                return Err(SettingsError::UnknownComponent {
                    origin: layer.origin.clone(),
                    name: name.clone(),
                    known: list(components),
                });
            }
        }
        Ok(())
    }

    /// Step calls the workflow may have running at once: the last layer's that sets it, else 16.
    pub fn max_concurrent_calls(&self) -> u32 {
        self.layers.iter().rev().find_map(|layer| layer.max_concurrent_calls).unwrap_or(DEFAULT_MAX_CONCURRENT_CALLS)
    }

    /// What `source` runs with: defaults, then layer by layer its `all`, its
    /// component's and its step's scope, each more specific one winning.
    pub fn resolve(&self, source: &StepSource) -> Result<StepSettings, SettingsError> {
        let defaults = StepSettings {
            policy: RetryPolicy::default(),
            limits: AttemptLimits::default(),
            grants: Grants::default(),
        };
        self.resolve_from(defaults, "the defaults", source)
    }

    /// What `source` runs with when these layers override `base` (a
    /// workflow's recorded settings, for `host resume` with new flags).
    pub fn resolve_from(
        &self,
        base: StepSettings,
        base_origin: &str,
        source: &StepSource,
    ) -> Result<StepSettings, SettingsError> {
        let mut settings = base;
        let mut policy_origin = base_origin.to_string();
        let mut grants_origin = policy_origin.clone();
        for layer in &self.layers {
            // The bare-name entry first, so a qualified-name entry for the same step wins.
            let bare = layer.steps.get(&source.step.function);
            let qualified = layer.steps.get(&source.step.to_string());
            let scopes =
                std::iter::once(&layer.all).chain(layer.components.get(&source.component)).chain(bare).chain(qualified);
            for scope in scopes {
                let before = settings.clone();
                settings.policy = scope.retry.apply(settings.policy);
                settings.limits = scope.limits.apply(settings.limits);
                settings.grants = scope.grants.apply(settings.grants);
                if settings.policy != before.policy {
                    policy_origin.clone_from(&layer.origin);
                }
                if settings.grants != before.grants {
                    grants_origin.clone_from(&layer.origin);
                }
            }
        }
        let step = source.step.to_string();
        settings.policy.validate().map_err(|error| SettingsError::Invalid {
            origin: policy_origin,
            step: step.clone(),
            error,
        })?;
        settings.grants.check().map_err(|message| SettingsError::Grant {
            origin: grants_origin,
            step: step.clone(),
            message,
        })?;
        settings.limits.validate().map_err(|message| SettingsError::Limits {
            origin: "the settings".into(),
            step,
            message,
        })?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provision() -> StepSource {
        StepSource { step: StepName::new("example:provision/steps", "provision"), component: "provision.wasm".into() }
    }

    fn attempts(n: u32) -> Scope {
        Scope { retry: PolicyOverrides { max_attempts: Some(n), ..Default::default() }, ..Default::default() }
    }

    fn layer(origin: &str, all: Scope, components: &[(&str, Scope)], steps: &[(&str, Scope)]) -> SettingsLayer {
        SettingsLayer {
            max_concurrent_calls: None,
            origin: origin.into(),
            all,
            components: components.iter().map(|(name, scope)| (name.to_string(), scope.clone())).collect(),
            steps: steps.iter().map(|(name, scope)| (name.to_string(), scope.clone())).collect(),
        }
    }

    fn max_attempts(layers: &SettingsLayers, source: &StepSource) -> u32 {
        layers.resolve(source).unwrap().policy.max_attempts
    }

    #[test]
    fn defaults_without_sources() {
        let settings = SettingsLayers::default().resolve(&provision()).unwrap();
        assert_eq!(settings.policy, RetryPolicy::default());
        assert_eq!(settings.limits, AttemptLimits::default());
        assert_eq!(settings.grants, Grants::default());
    }

    #[test]
    fn command_line_beats_manifest_beats_defaults() {
        let mut layers = SettingsLayers::default();
        let manifest = Scope {
            retry: PolicyOverrides {
                max_attempts: Some(5),
                interval: Some(Duration::from_millis(10)),
                ..Default::default()
            },
            ..Default::default()
        };
        layers.push(layer("provision.toml", manifest, &[], &[]));
        layers.push(layer("command line", attempts(2), &[], &[]));
        let policy = layers.resolve(&provision()).unwrap().policy;
        assert_eq!(policy.max_attempts, 2, "command line wins");
        assert_eq!(policy.initial_interval, Duration::from_millis(10), "manifest fills the rest");
        assert_eq!(policy.backoff_rate, 2.0, "defaults fill what nobody set");
    }

    #[test]
    fn step_beats_component_beats_all_within_a_layer() {
        let mut layers = SettingsLayers::default();
        layers.push(layer("m.toml", attempts(4), &[("provision.wasm", attempts(5))], &[("provision", attempts(7))]));
        assert_eq!(max_attempts(&layers, &provision()), 7);
        let sibling = StepSource { step: StepName::new("example:provision/steps", "other"), ..provision() };
        assert_eq!(max_attempts(&layers, &sibling), 5);
        let elsewhere = StepSource { component: "other.wasm".into(), ..sibling };
        assert_eq!(max_attempts(&layers, &elsewhere), 4);
    }

    #[test]
    fn command_line_for_all_steps_beats_a_manifest_step_entry() {
        let mut layers = SettingsLayers::default();
        layers.push(layer("m.toml", Scope::default(), &[], &[("example:provision/steps.provision", attempts(7))]));
        layers.push(layer("command line", attempts(2), &[], &[]));
        assert_eq!(max_attempts(&layers, &provision()), 2);
    }

    #[test]
    fn unknown_step_and_component_names_are_refused_with_the_known_ones() {
        let mut layers = SettingsLayers::default();
        layers.push(layer("command line", Scope::default(), &[], &[("provison", attempts(2))]));
        let error = layers.check_names(&[provision()]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "command line has settings for step `provison`, but no step of this workflow has that name; \
             its steps are: example:provision/steps.provision"
        );
        let mut layers = SettingsLayers::default();
        layers.push(layer("m.toml", Scope::default(), &[("flaky.wasm", attempts(2))], &[]));
        let error = layers.check_names(&[provision()]).unwrap_err().to_string();
        assert!(
            error.contains("component `flaky.wasm`") && error.ends_with("they come from: provision.wasm"),
            "{error}"
        );
    }

    #[test]
    fn invalid_values_name_the_source_that_set_them() {
        let mut layers = SettingsLayers::default();
        let jitter = Scope { retry: PolicyOverrides { jitter: Some(2.0), ..Default::default() }, ..Default::default() };
        layers.push(layer("m.toml", jitter, &[], &[]));
        layers.push(layer("the command line", attempts(5), &[], &[]));
        let error = layers.check_names(&[provision()]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "m.toml sets an invalid retry policy: jitter must be between 0.0 and 1.0 (got 2)"
        );
    }

    #[test]
    fn a_qualified_entry_beats_a_bare_one_in_the_same_source() {
        let mut layers = SettingsLayers::default();
        let qualified = "example:provision/steps.provision";
        layers.push(layer("m.toml", Scope::default(), &[], &[(qualified, attempts(9)), ("provision", attempts(2))]));
        assert_eq!(max_attempts(&layers, &provision()), 9);
    }

    #[test]
    fn flags_set_all_steps_or_one_and_say_what_is_wrong() {
        let layer = SettingsLayer::from_flags([
            (Setting::MaxAttempts, "5"),
            (Setting::Interval, "provision=250ms"),
            (Setting::Memory, "64MiB"),
        ])
        .unwrap();
        assert_eq!(layer.all.retry.max_attempts, Some(5));
        assert_eq!(layer.steps["provision"].retry.interval, Some(Duration::from_millis(250)));
        assert_eq!(layer.all.limits.memory.map(|size| size.as_u64()), Some(64 << 20));
        let error = SettingsLayer::from_flags([(Setting::MaxAttempts, "lots")]).unwrap_err();
        assert_eq!(error, "--max-attempts needs a whole number >= 1, got \"lots\"");
        assert!(SettingsLayer::from_flags([(Setting::Timeout, "soon")]).unwrap_err().starts_with("--timeout: invalid"));
        assert!(SettingsLayer::from_flags([]).unwrap().is_empty());
    }

    #[test]
    fn step_settings_survive_json_exactly() {
        let settings = SettingsLayers::default().resolve(&provision()).unwrap();
        let text = serde_json::to_string(&settings).unwrap();
        assert!(text.contains(r#""interval":"1s""#) && text.contains(r#""timeout":"5m""#), "{text}");
        assert_eq!(serde_json::from_str::<StepSettings>(&text).unwrap(), settings);
    }

    #[test]
    fn a_layer_round_trips_through_json() {
        let scope = Scope {
            retry: PolicyOverrides { interval: Some(Duration::from_millis(1500)), ..Default::default() },
            ..Default::default()
        };
        let layer = layer("command line", attempts(2), &[], &[("provision", scope)]);
        let text = serde_json::to_string(&layer).unwrap();
        assert!(text.contains(r#""interval":"1s 500ms""#), "{text}");
        assert_eq!(serde_json::from_str::<SettingsLayer>(&text).unwrap(), layer);
    }
}
