//! What a step may touch beyond its own memory: granted directories (cap-std
//! preopens, read-only unless `write = true`), named environment variables,
//! outbound HTTP to listed hosts, and whether its stdout/stderr are captured
//! or inherited. Everything is denied by default; workflows never get grants.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A host directory visible to the step at `guest`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DirGrant {
    /// The host directory; relative paths are relative to the manifest.
    pub host: PathBuf,
    /// Where the step sees it, e.g. `/data`.
    pub guest: String,
    /// Whether the step may create, change and delete files in it.
    #[serde(default)]
    pub write: bool,
}

/// Where a step's stdout or stderr goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stdio {
    /// Kept (up to the output limit), logged and journaled with the attempt.
    #[default]
    Capture,
    /// Written straight to the host's own stream.
    Inherit,
}

/// The grants one step runs with (recorded by value with each workflow).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Grants {
    pub dirs: Vec<DirGrant>,
    /// Names of host environment variables passed through.
    pub env: Vec<String>,
    /// Hosts (`host` or `host:port`) the step may send HTTP requests to.
    pub http: Vec<String>,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

/// Grants one source sets; unset fields fall through.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct GrantOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dirs: Option<Vec<DirGrant>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<Stdio>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<Stdio>,
}

impl GrantOverrides {
    /// `base` with every grant this source sets replaced (not merged).
    pub fn apply(&self, base: Grants) -> Grants {
        Grants {
            dirs: self.dirs.clone().unwrap_or(base.dirs),
            env: self.env.clone().unwrap_or(base.env),
            http: self.http.clone().unwrap_or(base.http),
            stdout: self.stdout.unwrap_or(base.stdout),
            stderr: self.stderr.unwrap_or(base.stderr),
        }
    }

    /// Makes relative host directories relative to `base` (the manifest's folder).
    pub fn anchor(&mut self, base: &Path) {
        for dir in self.dirs.iter_mut().flatten() {
            if dir.host.is_relative() {
                dir.host = base.join(&dir.host);
            }
        }
    }
}

impl Grants {
    /// Refuses grants that cannot work, before anything runs.
    pub fn check(&self) -> Result<(), String> {
        for dir in &self.dirs {
            if !dir.host.is_dir() {
                return Err(format!(
                    "the granted directory {} does not exist or is not a directory",
                    dir.host.display()
                ));
            }
        }
        for host in &self.http {
            let plain = !host.contains('/') && !host.contains('@');
            if !plain || host.parse::<http::uri::Authority>().is_err() {
                return Err(format!(
                    "HTTP grant {host:?} is not a host or host:port (write \"api.example.com\" or \"127.0.0.1:8080\", \
                     no scheme or path)"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_and_anchor_relative_directories() {
        let mut overrides = GrantOverrides {
            dirs: Some(vec![DirGrant { host: "data".into(), guest: "/data".into(), write: false }]),
            ..Default::default()
        };
        overrides.anchor(Path::new("/srv/app"));
        let grants = overrides.apply(Grants { env: vec!["TOKEN".into()], ..Default::default() });
        assert_eq!(grants.dirs[0].host, PathBuf::from("/srv/app/data"));
        assert_eq!(grants.env, ["TOKEN"]);
        assert_eq!(grants.stdout, Stdio::Capture);
    }

    #[test]
    fn a_missing_directory_is_refused() {
        let grants = Grants {
            dirs: vec![DirGrant { host: "/no/such/dir".into(), guest: "/d".into(), write: false }],
            ..Default::default()
        };
        assert!(grants.check().unwrap_err().contains("/no/such/dir does not exist"));
        let url = Grants { http: vec!["https://api.example.com/v1".into()], ..Default::default() };
        assert!(url.check().unwrap_err().contains("not a host or host:port"));
        let fine = Grants { http: vec!["api.example.com".into(), "127.0.0.1:8080".into()], ..Default::default() };
        assert_eq!(fine.check(), Ok(()));
    }
}
