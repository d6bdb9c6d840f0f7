//! The TOML manifest beside a component (`provision.toml` for
//! `provision.wasm`) or passed with `--config`: retry policy, limits and
//! grants for all steps, per component and per step.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::grants::GrantOverrides;
use super::limits::LimitOverrides;
use super::settings::{PolicyOverrides, Scope, SettingsLayer};

/// The manifest file's contents.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Manifest {
    /// Retry policy for every step of the workflow.
    #[serde(default)]
    pub retry: PolicyOverrides,
    /// Limits for every step.
    #[serde(default)]
    pub limits: LimitOverrides,
    /// Grants for every step (never for the workflow).
    #[serde(default)]
    pub grants: GrantOverrides,
    /// Settings for the steps of one component, keyed by its file name.
    #[serde(default)]
    pub components: BTreeMap<String, Scope>,
    /// Settings for one step, keyed by its bare or qualified name.
    #[serde(default)]
    pub steps: BTreeMap<String, Scope>,
    /// Step calls the workflow may have running at once (`start-call`) [default: 16].
    #[serde(default)]
    pub max_concurrent_calls: Option<u32>,
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

    /// The settings of the manifest for `workflow`: `config` if given, else
    /// the one beside the workflow if there is one, else none.
    pub fn find(workflow: &Path, config: Option<&Path>) -> Result<Option<SettingsLayer>, ManifestError> {
        let beside = Self::beside(workflow);
        match config {
            Some(path) => Ok(Some(Self::load(path)?.settings_layer(path))),
            None if beside.is_file() => Ok(Some(Self::load(&beside)?.settings_layer(&beside))),
            None => Ok(None),
        }
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

    /// This manifest as a settings source that came over the network
    /// (named `origin`): host directories and environment variables belong
    /// to the machine a worker runs on, so they cannot be granted this way.
    pub fn remote_layer(&self, origin: &str) -> Result<SettingsLayer, String> {
        let scopes = std::iter::once(("every step".to_string(), &self.grants))
            .chain(self.components.iter().map(|(name, scope)| (format!("component {name}"), &scope.grants)))
            .chain(self.steps.iter().map(|(name, scope)| (format!("step {name}"), &scope.grants)));
        for (scope, grants) in scopes {
            let inherit = [grants.stdout, grants.stderr].contains(&Some(super::grants::Stdio::Inherit));
            let local = grants.http.iter().flatten().find(|host| local_host(host));
            let what = match (&grants.dirs, &grants.env, inherit, local) {
                (Some(_), ..) => "directories".to_string(),
                (None, Some(_), ..) => "environment variables".to_string(),
                (None, None, true, _) => "the worker's own output (`inherit`)".to_string(),
                (None, None, false, Some(host)) => format!("HTTP to `{host}`, an address of the worker's own network"),
                (None, None, false, None) => continue,
            };
            return Err(format!(
                "the manifest grants {what} to {scope}, which a manifest sent over the API may not do: it belongs \
                 to the machine a worker runs on. Submit with host submit and a manifest beside the workflow instead"
            ));
        }
        let mut layer = self.settings_layer(Path::new(origin));
        layer.origin = origin.to_string();
        Ok(layer)
    }

    /// This manifest as a settings source named after its file, granted
    /// directories anchored at the manifest's folder.
    pub fn settings_layer(&self, path: &Path) -> SettingsLayer {
        let base = path.parent().unwrap_or(Path::new("."));
        let all = Scope { retry: self.retry.clone(), limits: self.limits.clone(), grants: self.grants.clone() };
        let mut layer = SettingsLayer {
            origin: path.display().to_string(),
            all,
            components: self.components.clone(),
            steps: self.steps.clone(),
            max_concurrent_calls: self.max_concurrent_calls,
        };
        let scopes =
            std::iter::once(&mut layer.all).chain(layer.components.values_mut()).chain(layer.steps.values_mut());
        for scope in scopes {
            scope.grants.anchor(base);
        }
        layer
    }
}

/// Whether an HTTP grant names this machine or a private network: loopback,
/// `localhost`, private, link-local (cloud metadata) and unique-local addresses.
fn local_host(grant: &str) -> bool {
    let host = match grant.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(rest, |(host, _)| host),
        None => grant.rsplit_once(':').map_or(grant, |(host, _)| host),
    };
    let host = host.to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") || host.ends_with(".local") || host.ends_with(".internal") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(address)) => {
            address.is_loopback()
                || address.is_private()
                || address.is_link_local()
                || address.is_unspecified()
                || address.is_broadcast()
        }
        Ok(std::net::IpAddr::V6(address)) => {
            address.is_loopback()
                || address.is_unspecified()
                || address.is_unique_local()
                || address.is_unicast_link_local()
                || address.to_ipv4_mapped().is_some()
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_manifest_from_the_network_grants_nothing_of_the_workers_machine() {
        let remote = |text: &str| Manifest::parse(text).unwrap().remote_layer("the request");
        assert!(remote("[retry]\nmax-attempts = 5\n[grants]\nhttp = [\"api.example.com\"]\n").is_ok());
        for text in [
            "[grants]\ndirs = [{ host = \"/\", guest = \"/\" }]\n",
            "[grants]\nenv = [\"HOME\"]\n",
            "[grants]\nstdout = \"inherit\"\n",
            "[steps.charge.grants]\nhttp = [\"169.254.169.254\"]\n",
            "[grants]\nhttp = [\"127.0.0.1:5432\"]\n",
            "[grants]\nhttp = [\"localhost\"]\n",
            "[grants]\nhttp = [\"10.1.2.3\"]\n",
            "[grants]\nhttp = [\"[::1]:80\"]\n",
        ] {
            assert!(remote(text).is_err(), "{text}");
        }
    }

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

            [limits]
            timeout = "30s"
            memory = "64MiB"

            [grants]
            env = ["API_TOKEN"]

            [components."flaky.wasm".retry]
            max-attempts = 4

            [steps.provision.retry]
            max-attempts = 2

            [steps.provision.grants]
            dirs = [{ host = "data", guest = "/data", write = true }]
            stdout = "inherit"

            [steps."example:provision/steps.other".retry]
            interval = "2s"
            "#,
        )
        .unwrap();
        assert_eq!(manifest.retry.max_attempts, Some(5));
        assert_eq!(manifest.retry.interval, Some(Duration::from_millis(10)));
        assert_eq!(manifest.retry.max_interval, Some(Duration::from_secs(60)));
        assert_eq!(manifest.limits.timeout, Some(Duration::from_secs(30)));
        assert_eq!(manifest.limits.memory.map(|size| size.as_u64()), Some(64 << 20));
        assert_eq!(manifest.grants.env.as_deref(), Some(&["API_TOKEN".to_string()][..]));
        assert_eq!(manifest.components["flaky.wasm"].retry.max_attempts, Some(4));
        assert_eq!(manifest.steps["provision"].retry.max_attempts, Some(2));
        assert_eq!(manifest.steps["example:provision/steps.other"].retry.interval, Some(Duration::from_secs(2)));
        let layer = manifest.settings_layer(Path::new("/srv/app/provision.toml"));
        let dirs = layer.steps["provision"].grants.dirs.clone().unwrap();
        assert_eq!((dirs[0].host.as_path(), dirs[0].write), (Path::new("/srv/app/data"), true));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_with_a_location() {
        let error = Manifest::parse("[retry]\nmax-atempts = 5\n").unwrap_err();
        assert!(error.contains("max-atempts") && error.contains("line 2"), "{error}");
        let error = Manifest::parse("[retry]\ninterval = \"soon\"\n").unwrap_err();
        assert!(error.contains("invalid duration"), "{error}");
        let error = Manifest::parse("[steps.provision]\nmax-attempts = 2\n").unwrap_err();
        assert!(error.contains("max-attempts"), "step entries hold retry/limits/grants tables: {error}");
        let error = Manifest::parse("[grants]\nnetwork = true\n").unwrap_err();
        assert!(error.contains("network"), "{error}");
    }

    #[test]
    fn lives_beside_the_component() {
        assert_eq!(Manifest::beside(Path::new("dir/provision.wasm")), PathBuf::from("dir/provision.toml"));
    }
}
