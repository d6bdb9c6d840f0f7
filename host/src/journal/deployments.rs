//! Deployments stored once. What a workflow runs with (its components by
//! digest, its entry function, every step's policy, limits and grants) is the
//! same for every workflow submitted from one deployment: the journal keeps it
//! once in `deployments`, by the digest of its JSON, and a workflow's row keeps
//! only its own part of its options (its arguments). The row that every
//! submit, claim, renewal and finish writes again stays a few hundred bytes
//! instead of kilobytes. Reads put the two back together (`options_postgres!`,
//! `options_sqlite!`, and the claim function of migration 0005), so a
//! workflow's options read as they were written.

use serde_json::{Map, Value as Json};

/// The keys of a workflow's options that are its own, not its deployment's:
/// its arguments, and whose clocks it replays (a fork's).
const OWN: [&str; 2] = ["arguments", "replay_seed"];

/// A workflow's options as stored: its deployment's digest and JSON (no
/// digest when there is nothing to share), and the options' own part.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StoredOptions {
    pub digest: Option<String>,
    pub deployment: Json,
    pub own: Json,
}

/// Splits `options` into its deployment and its own part.
pub(super) fn split(options: &Json) -> StoredOptions {
    let whole = || StoredOptions { digest: None, deployment: Json::Null, own: options.clone() };
    let Json::Object(all) = options else { return whole() };
    let (own, shared): (Map<String, Json>, Map<String, Json>) =
        all.iter().map(|(key, value)| (key.clone(), value.clone())).partition(|(key, _)| OWN.contains(&key.as_str()));
    if shared.is_empty() {
        return whole();
    }
    let deployment = Json::Object(shared);
    let digest = super::components::digest(deployment.to_string().as_bytes());
    StoredOptions { digest: Some(digest), deployment, own: Json::Object(own) }
}

/// Stores a deployment unless it is there (`$1` digest, `$2` JSON, `$3` when).
pub(super) const STORE: &str =
    "INSERT INTO deployments (digest, deployment, created_at) VALUES ($1, $2, $3) ON CONFLICT (digest) DO NOTHING";

/// A PostgreSQL CTE, `stored`, that stores a deployment unless it is there
/// or there is none: its digest, JSON and time are the parameters numbered
/// `digest`, `digest + 1` and `at`. Written before the row that names it, in
/// the same statement.
pub(super) fn store_cte(digest: usize, at: usize) -> String {
    format!(
        "stored AS (INSERT INTO deployments (digest, deployment, created_at) SELECT ${digest}, ${json}, ${at} \
         WHERE ${digest}::text IS NOT NULL ON CONFLICT (digest) DO NOTHING)",
        json = digest + 1
    )
}

/// Stores `$stored`'s deployment in `$tx` (unless there is none, or it is
/// there already), before a row that names it is written.
macro_rules! store_deployment {
    ($tx:expr, $stored:expr) => {
        if let Some(digest) = &$stored.digest {
            statement::query($crate::journal::deployments::STORE)
                .bind(digest)
                .bind(&$stored.deployment)
                .bind($crate::journal::Timestamp::now())
                .execute(&mut *$tx)
                .await?;
        }
    };
}
pub(super) use store_deployment;

/// The `options` column of a workflow on PostgreSQL: its deployment with its own part over it.
macro_rules! options_postgres {
    () => {
        "COALESCE((SELECT d.deployment FROM deployments d WHERE d.digest = workflows.deployment), '{}') \
         || workflows.options AS options"
    };
}
pub(super) use options_postgres;

/// The `options` column of a workflow on SQLite, as [`options_postgres`].
macro_rules! options_sqlite {
    () => {
        "json_patch(COALESCE((SELECT d.deployment FROM deployments d WHERE d.digest = workflows.deployment), '{}'), \
         workflows.options) AS options"
    };
}
pub(super) use options_sqlite;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_deployment_is_shared_and_the_arguments_stay_with_the_workflow() {
        let options = json!({
            "workflow": {"path": "/w.wasm", "digest": "ab"},
            "steps": [],
            "entry": "run",
            "settings": {"a:b/c.d": {"max_attempts": 3}},
            "max_concurrent_calls": 16,
            "arguments": ["\"x\""],
        });
        let stored = split(&options);
        assert_eq!(stored.own, json!({"arguments": ["\"x\""]}));
        assert_eq!(stored.deployment["entry"], json!("run"));
        assert!(stored.deployment.get("arguments").is_none());
        // The same deployment with other arguments is the same row.
        let mut forked = options.clone();
        forked["arguments"] = json!(["\"y\""]);
        forked["replay_seed"] = json!({"id": "w1", "started_at": 1});
        let other = split(&forked);
        assert_eq!(other.digest, stored.digest);
        assert_eq!(other.own, json!({"arguments": ["\"y\""], "replay_seed": {"id": "w1", "started_at": 1}}));
        // Another setting is another deployment.
        let mut changed = options.clone();
        changed["settings"]["a:b/c.d"]["max_attempts"] = json!(5);
        assert_ne!(split(&changed).digest, stored.digest);
    }

    #[test]
    fn options_with_nothing_to_share_are_kept_whole() {
        for options in [json!({"arguments": []}), json!(null), json!([1, 2])] {
            let stored = split(&options);
            assert_eq!((stored.digest, stored.own), (None, options));
        }
    }
}
