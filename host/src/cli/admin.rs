//! Housekeeping: `host delete`, `host prune`, `host cache prune`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use serde_json::json;
use stepbox::config::parse_size;
use stepbox::journal::{Deleted, Journal, Timestamp};
use stepbox::wasm::{DEFAULT_CACHE_MAX, default_cache_dir, prune};

use crate::exit;
use crate::output::{self, Format};

/// `host cache …`.
#[derive(Subcommand)]
pub enum CacheCommand {
    /// Remove the least recently used compiled components until the cache fits (runs also keep it under 2 GiB).
    Prune {
        /// The size to keep the cache under, e.g. 500MiB; 0 empties it [default: 2GiB].
        #[arg(long, value_name = "SIZE", value_parser = |text: &str| parse_size(text).map(|size| size.as_u64()))]
        max_size: Option<u64>,
        /// The cache folder [default: ~/.cache/stepbox].
        #[arg(long, env = "STEPBOX_CACHE_DIR", value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
}

async fn open(journal: &str) -> Option<Journal> {
    match Journal::open_existing(journal).await {
        Ok(journal) => Some(journal),
        Err(error) => {
            output::error(&error.to_string());
            None
        }
    }
}

/// `host delete ID…`: each workflow and its rows in one transaction; running ones refused.
pub async fn delete(ids: &[String], journal: &str, format: Format) -> u8 {
    let Some(journal) = open(journal).await else { return exit::USAGE };
    let mut code = 0;
    let mut deleted = Vec::new();
    for id in ids {
        match journal.delete_workflow(id).await {
            Ok(Deleted::Deleted) => {
                deleted.push(id.clone());
                if format == Format::Text {
                    output::line(&format!("deleted {id}"));
                }
            }
            Ok(Deleted::NotFinished(status)) => {
                output::error(&format!(
                    "workflow {id} is {status}, not finished: cancel it first (`host cancel {id}`) or let it end"
                ));
                code = exit::USAGE;
            }
            Ok(Deleted::Unknown) => {
                output::error(&format!("no workflow {id} in the journal {}", journal.location()));
                code = exit::USAGE;
            }
            Err(error) => {
                output::error(&error.to_string());
                code = exit::RESUMABLE;
            }
        }
    }
    if format == Format::Json {
        output::json(&json!({ "deleted": deleted }));
    }
    code
}

/// `host prune --finished-before DURATION`.
pub async fn prune_journal(finished_before: Duration, journal: &str, format: Format) -> u8 {
    let Some(journal) = open(journal).await else { return exit::USAGE };
    match journal.prune_workflows(Timestamp::now().minus(finished_before)).await {
        Ok(count) => {
            match format {
                Format::Json => output::json(&json!({ "deleted": count })),
                Format::Text => output::line(&format!(
                    "deleted {count} workflow(s) finished more than {} ago",
                    humantime::format_duration(finished_before)
                )),
            }
            0
        }
        Err(error) => {
            output::error(&error.to_string());
            exit::RESUMABLE
        }
    }
}

/// `host cache prune`.
pub fn cache(command: &CacheCommand, format: Format) -> u8 {
    let CacheCommand::Prune { max_size, cache_dir } = command;
    let Some(dir) = cache_dir.clone().or_else(default_cache_dir) else {
        output::error("no cache folder: pass --cache-dir or set STEPBOX_CACHE_DIR (or HOME)");
        return exit::USAGE;
    };
    if !dir.is_dir() {
        output::line(&format!("the compile cache {} is empty", dir.display()));
        return 0;
    }
    match prune(&dir, max_size.unwrap_or(DEFAULT_CACHE_MAX)) {
        Ok(pruned) => {
            match format {
                Format::Json => output::json(&json!({
                    "removed": pruned.removed, "removed_bytes": pruned.removed_bytes,
                    "kept": pruned.kept, "kept_bytes": pruned.kept_bytes,
                })),
                Format::Text => output::line(&format!(
                    "removed {} compiled component(s) ({}), kept {} ({}) in {}",
                    pruned.removed,
                    bytesize(pruned.removed_bytes),
                    pruned.kept,
                    bytesize(pruned.kept_bytes),
                    dir.display()
                )),
            }
            0
        }
        Err(error) => {
            output::error(&format!("cannot prune the compile cache {}: {error}", dir.display()));
            exit::USAGE
        }
    }
}

fn bytesize(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}
