//! Which retry policy each step gets: defaults, then the manifest, then the
//! command line, each level step-specific over component-wide.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::retry::{PolicyError, RetryPolicy};
use crate::step_name::StepName;

/// Policy fields one source sets; unset fields fall through to the level below.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PolicyOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(
        default,
        deserialize_with = "duration",
        serialize_with = "duration_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub interval: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_rate: Option<f64>,
    #[serde(
        default,
        deserialize_with = "duration",
        serialize_with = "duration_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_interval: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
}

impl PolicyOverrides {
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

/// Durations are written as humans do: "250ms", "1s", "1h 30m".
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map(Some).map_err(serde::de::Error::custom)
}

/// Writes durations the way [`duration`] reads them.
fn duration_text<S: Serializer>(value: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(duration) => serializer.serialize_str(&humantime::format_duration(*duration).to_string()),
        None => serializer.serialize_none(),
    }
}

/// Parses "250ms", "1s", "1h 30m"; the error says what is accepted.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|error| format!("invalid duration {text:?} ({error}); write it like \"250ms\", \"1s\" or \"2m\""))
}

/// One source of policy (the manifest, the command line).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct PolicyLayer {
    /// Where it came from, for error messages: a file path or "command line".
    pub origin: String,
    /// Applies to every step.
    pub all: PolicyOverrides,
    /// Applies to one step, keyed by its bare or qualified name.
    pub steps: BTreeMap<String, PolicyOverrides>,
}

/// A policy source names a step that does not exist, or sets a bad value.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PolicyResolveError {
    #[error(
        "{origin} sets a policy for step `{name}`, but no step of this workflow has that name; its steps are: {known}"
    )]
    UnknownStep { origin: String, name: String, known: String },
    #[error("{origin} gives step `{step}` an invalid retry policy: {error}")]
    Invalid { origin: String, step: String, error: PolicyError },
}

/// All policy sources, lowest precedence first.
#[derive(Debug, Clone, Default)]
pub struct PolicyLayers {
    layers: Vec<PolicyLayer>,
}

impl PolicyLayers {
    /// Adds a source that takes precedence over every source added before it.
    pub fn push(&mut self, layer: PolicyLayer) {
        self.layers.push(layer);
    }

    /// Refuses step-specific settings that name no step of `known`.
    pub fn check_names(&self, known: &[StepName]) -> Result<(), PolicyResolveError> {
        for layer in &self.layers {
            for name in layer.steps.keys() {
                if !known.iter().any(|step| step.matches(name)) {
                    let known = known.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
                    return Err(PolicyResolveError::UnknownStep {
                        origin: layer.origin.clone(),
                        name: name.clone(),
                        known: if known.is_empty() { "(none)".into() } else { known },
                    });
                }
            }
        }
        Ok(())
    }

    /// The policy `step` runs with: defaults < each layer's `all` < its step entry, layer by layer.
    pub fn resolve(&self, step: &StepName) -> Result<RetryPolicy, PolicyResolveError> {
        let mut policy = RetryPolicy::default();
        let mut origin = "the defaults".to_string();
        for layer in &self.layers {
            let before = policy;
            policy = layer.all.apply(policy);
            for (name, overrides) in &layer.steps {
                if step.matches(name) {
                    policy = overrides.apply(policy);
                }
            }
            if policy != before {
                origin.clone_from(&layer.origin);
            }
        }
        policy.validate().map_err(|error| PolicyResolveError::Invalid { origin, step: step.to_string(), error })?;
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provision() -> StepName {
        StepName::new("example:provision/steps", "provision")
    }

    fn layer(origin: &str, all: PolicyOverrides, steps: &[(&str, PolicyOverrides)]) -> PolicyLayer {
        PolicyLayer {
            origin: origin.into(),
            all,
            steps: steps.iter().map(|(name, o)| (name.to_string(), o.clone())).collect(),
        }
    }

    fn attempts(n: u32) -> PolicyOverrides {
        PolicyOverrides { max_attempts: Some(n), ..Default::default() }
    }

    #[test]
    fn defaults_without_sources() {
        assert_eq!(PolicyLayers::default().resolve(&provision()), Ok(RetryPolicy::default()));
    }

    #[test]
    fn command_line_beats_manifest_beats_defaults() {
        let mut layers = PolicyLayers::default();
        let manifest =
            PolicyOverrides { max_attempts: Some(5), interval: Some(Duration::from_millis(10)), ..Default::default() };
        layers.push(layer("provision.toml", manifest, &[]));
        layers.push(layer("command line", attempts(2), &[]));
        let policy = layers.resolve(&provision()).unwrap();
        assert_eq!(policy.max_attempts, 2, "command line wins");
        assert_eq!(policy.initial_interval, Duration::from_millis(10), "manifest fills the rest");
        assert_eq!(policy.backoff_rate, 2.0, "defaults fill what nobody set");
    }

    #[test]
    fn step_entries_beat_component_wide_within_a_layer_and_only_hit_their_step() {
        let mut layers = PolicyLayers::default();
        layers.push(layer("m.toml", attempts(4), &[("provision", attempts(7))]));
        assert_eq!(layers.resolve(&provision()).unwrap().max_attempts, 7);
        let other = StepName::new("example:provision/steps", "other");
        assert_eq!(layers.resolve(&other).unwrap().max_attempts, 4);
    }

    #[test]
    fn command_line_for_all_steps_beats_a_manifest_step_entry() {
        let mut layers = PolicyLayers::default();
        layers.push(layer("m.toml", PolicyOverrides::default(), &[("example:provision/steps.provision", attempts(7))]));
        layers.push(layer("command line", attempts(2), &[]));
        assert_eq!(layers.resolve(&provision()).unwrap().max_attempts, 2);
    }

    #[test]
    fn unknown_step_names_are_refused_with_the_known_ones() {
        let mut layers = PolicyLayers::default();
        layers.push(layer("command line", PolicyOverrides::default(), &[("provison", attempts(2))]));
        let error = layers.check_names(&[provision()]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "command line sets a policy for step `provison`, but no step of this workflow has that name; \
             its steps are: example:provision/steps.provision"
        );
    }

    #[test]
    fn invalid_values_name_their_origin() {
        let mut layers = PolicyLayers::default();
        layers.push(layer("m.toml", attempts(0), &[]));
        let error = layers.resolve(&provision()).unwrap_err();
        assert!(error.to_string().starts_with("m.toml gives step `example:provision/steps.provision`"), "{error}");
    }

    #[test]
    fn a_layer_round_trips_through_json() {
        let layer = layer(
            "command line",
            attempts(2),
            &[("provision", PolicyOverrides { interval: Some(Duration::from_millis(1500)), ..Default::default() })],
        );
        let text = serde_json::to_string(&layer).unwrap();
        assert!(text.contains(r#""interval":"1s 500ms""#), "{text}");
        assert_eq!(serde_json::from_str::<PolicyLayer>(&text).unwrap(), layer);
    }

    #[test]
    fn durations_parse_like_humans_write_them() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("soon").unwrap_err().contains("\"250ms\""));
    }
}
