//! The TOML manifest beside a component (`provision.toml` for
//! `provision.wasm`) or passed with `--config`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::policy::{PolicyLayer, PolicyOverrides};

/// The manifest file's contents.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Manifest {
    /// Policy for every step of the workflow.
    #[serde(default)]
    pub retry: PolicyOverrides,
    /// Policy for one step, keyed by its bare or qualified name.
    #[serde(default)]
    pub steps: BTreeMap<String, PolicyOverrides>,
}

/// The manifest cannot be read or does not parse.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read the manifest {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the manifest {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
}

impl Manifest {
    /// Where the manifest of `component` lives if it has one: same stem, `.toml`.
    pub fn beside(component: &Path) -> PathBuf {
        component.with_extension("toml")
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ManifestError::Read { path: path.to_owned(), source })?;
        Self::parse(&text).map_err(|message| ManifestError::Parse { path: path.to_owned(), message })
    }

    /// Parses manifest text; the error has the line and what was expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|error| error.to_string().trim_end().to_string())
    }

    /// This manifest as a policy source named after its file.
    pub fn policy_layer(&self, path: &Path) -> PolicyLayer {
        PolicyLayer { origin: path.display().to_string(), all: self.retry.clone(), steps: self.steps.clone() }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn parses_component_and_step_policies() {
        let manifest = Manifest::parse(
            r#"
            [retry]
            max-attempts = 5
            interval = "10ms"
            backoff-rate = 1.5
            max-interval = "1m"
            jitter = 0.1

            [steps.provision]
            max-attempts = 2

            [steps."example:provision/steps.other"]
            interval = "2s"
            "#,
        )
        .unwrap();
        assert_eq!(manifest.retry.max_attempts, Some(5));
        assert_eq!(manifest.retry.interval, Some(Duration::from_millis(10)));
        assert_eq!(manifest.retry.max_interval, Some(Duration::from_secs(60)));
        assert_eq!(manifest.steps["provision"].max_attempts, Some(2));
        assert_eq!(manifest.steps["example:provision/steps.other"].interval, Some(Duration::from_secs(2)));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_with_a_location() {
        let error = Manifest::parse("[retry]\nmax-atempts = 5\n").unwrap_err();
        assert!(error.contains("max-atempts") && error.contains("line 2"), "{error}");
        let error = Manifest::parse("[retry]\ninterval = \"soon\"\n").unwrap_err();
        assert!(error.contains("invalid duration"), "{error}");
    }

    #[test]
    fn lives_beside_the_component() {
        assert_eq!(Manifest::beside(Path::new("dir/provision.wasm")), PathBuf::from("dir/provision.toml"));
    }
}
