//! Housekeeping: `host delete`, `host prune`, `host cache prune`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use serde_json::json;
use stepbox::config::parse_size;
use stepbox::journal::Journal;
use stepbox::operate::{self, Deletion};
use stepbox::wasm::{DEFAULT_CACHE_MAX, default_cache_dir, prune};

use crate::exit::{self, fail};
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

/// `host delete ID…`: each workflow and its rows in one transaction; running ones refused.
pub async fn delete(ids: &[String], journal: &str, format: Format) -> u8 {
    let journal = match Journal::open_existing(journal).await {
        Ok(journal) => journal,
        Err(error) => return fail(&error),
    };
    let mut code = 0;
    let mut deleted = Vec::new();
    for id in ids {
        match operate::delete(&journal, id).await {
            Ok(()) => {
                deleted.push(id.clone());
                if format == Format::Text {
                    output::line(&format!("deleted {id}"));
                }
            }
            Err(error) => code = code.max(fail(&error)),
        }
    }
    if format == Format::Json {
        output::json(&Deletion { deleted });
    }
    code
}

/// `host prune --finished-before DURATION`.
pub async fn prune_journal(finished_before: Duration, journal: &str, format: Format) -> u8 {
    let journal = match Journal::open_existing(journal).await {
        Ok(journal) => journal,
        Err(error) => return fail(&error),
    };
    match operate::prune(&journal, finished_before).await {
        Ok(pruned) => {
            match format {
                Format::Json => output::json(&pruned),
                Format::Text => output::line(&format!(
                    "deleted {} workflow(s) finished more than {} ago",
                    pruned.deleted,
                    humantime::format_duration(finished_before)
                )),
            }
            0
        }
        Err(error) => fail(&error),
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
