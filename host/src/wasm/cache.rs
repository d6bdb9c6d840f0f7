//! Loading components: validation with a clear error, and an on-disk compile
//! cache keyed by the component's digest and the engine's compatibility hash,
//! so a second run of the same file does not recompile.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::journal::digest;

/// A compiled component and where it came from.
#[derive(Clone)]
pub struct LoadedComponent {
    /// The file given on the command line.
    pub path: PathBuf,
    /// Hex SHA-256 of the file, recorded in the journal.
    pub digest: String,
    pub component: Component,
}

/// A file that cannot be used as a component.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a WebAssembly file (it does not start with the `\\0asm` header)")]
    NotWasm { path: PathBuf },
    #[error(
        "{path} is a core WebAssembly module, not a component; build it for `wasm32-wasip2` \
         (cargo build --target wasm32-wasip2) or wrap it with `wasm-tools component new`"
    )]
    CoreModule { path: PathBuf },
    #[error("{path} is not a valid component: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// How large the compile cache may grow before its least recently used
/// entries are removed (a Python component compiles to ~35 MB).
pub const DEFAULT_CACHE_MAX: u64 = 2 << 30;

/// Compiles components through the on-disk cache.
#[derive(Clone)]
pub struct ComponentLoader {
    engine: Engine,
    cache_dir: Option<PathBuf>,
    engine_key: String,
    cache_max: u64,
}

impl ComponentLoader {
    /// A loader caching in `cache_dir` (`None` compiles every time), keeping
    /// it under [`DEFAULT_CACHE_MAX`].
    pub fn new(engine: &Engine, cache_dir: Option<PathBuf>) -> Self {
        let mut hasher = Sha256Hasher::default();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key =
            format!("{:016x}", u64::from_be_bytes(hasher.0.finalize()[..8].try_into().unwrap_or_default()));
        Self { engine: engine.clone(), cache_dir, engine_key, cache_max: DEFAULT_CACHE_MAX }
    }

    /// Keeps the cache under `bytes` instead.
    pub fn with_cache_max(mut self, bytes: u64) -> Self {
        self.cache_max = bytes;
        self
    }

    /// The engine components are compiled for.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Reads, validates and compiles `path`, or loads its compiled form from the cache.
    pub fn load(&self, path: &Path) -> Result<LoadedComponent, LoadError> {
        let bytes = fs::read(path).map_err(|source| LoadError::Read { path: path.to_owned(), source })?;
        self.load_bytes(path, &bytes)
    }

    /// Validates and compiles `bytes` (named `path` in messages), or loads
    /// their compiled form from the cache.
    pub fn load_bytes(&self, path: &Path, bytes: &[u8]) -> Result<LoadedComponent, LoadError> {
        if wasmparser::Parser::is_core_wasm(bytes) {
            return Err(LoadError::CoreModule { path: path.to_owned() });
        }
        if !wasmparser::Parser::is_component(bytes) {
            return Err(LoadError::NotWasm { path: path.to_owned() });
        }
        let digest = digest(bytes);
        let cached = self.cache_dir.as_ref().map(|dir| dir.join(format!("{digest}-{}.cwasm", self.engine_key)));
        if let Some(component) = cached.as_deref().and_then(|file| self.cached_component(file)) {
            return Ok(LoadedComponent { path: path.to_owned(), digest, component });
        }
        let started = Instant::now();
        let component = Component::new(&self.engine, bytes)
            .map_err(|error| LoadError::Invalid { path: path.to_owned(), message: format!("{error:#}") })?;
        tracing::debug!("compiled {} in {:?}", path.display(), started.elapsed());
        if let Some(file) = cached {
            self.store(&component, &file);
        }
        Ok(LoadedComponent { path: path.to_owned(), digest, component })
    }

    fn cached_component(&self, file: &Path) -> Option<Component> {
        if !file.exists() {
            return None;
        }
        let started = Instant::now();
        // SAFETY: the file was written by `store` below from `Component::serialize`
        // for an engine with the same compatibility hash (it is in the file name),
        // and is only ever replaced atomically by rename.
        match unsafe { Component::deserialize_file(&self.engine, file) } {
            Ok(component) => {
                // Marks it recently used, for the size cap.
                let _ = fs::File::open(file).and_then(|entry| entry.set_modified(std::time::SystemTime::now()));
                tracing::debug!("loaded {} from the compile cache in {:?}", file.display(), started.elapsed());
                Some(component)
            }
            Err(error) => {
                tracing::warn!("ignoring unusable compile cache entry {} ({error:#})", file.display());
                None
            }
        }
    }

    /// Writes the compiled component atomically; a failure only costs the next run a compile.
    fn store(&self, component: &Component, file: &Path) {
        let result = (|| -> anyhow::Result<()> {
            let dir = file.parent().unwrap_or(Path::new("."));
            fs::create_dir_all(dir)?;
            let mut temp = tempfile::NamedTempFile::new_in(dir)?;
            temp.write_all(&component.serialize()?)?;
            temp.persist(file)?;
            Ok(())
        })();
        if let Err(error) = result {
            tracing::warn!("cannot write the compile cache entry {} ({error:#})", file.display());
        }
        if let Some(dir) = file.parent() {
            match prune(dir, self.cache_max) {
                Ok(pruned) if pruned.removed > 0 => tracing::debug!(
                    "compile cache over {} bytes: removed {} entries ({} bytes)",
                    self.cache_max,
                    pruned.removed,
                    pruned.removed_bytes
                ),
                Ok(_) => {}
                Err(error) => tracing::warn!("cannot prune the compile cache {} ({error})", dir.display()),
            }
        }
    }
}

/// What a prune of the compile cache did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub removed: usize,
    pub removed_bytes: u64,
    pub kept: usize,
    pub kept_bytes: u64,
}

/// Removes the least recently used compiled components of `dir` until the
/// rest take at most `max_bytes` (0 empties it).
pub fn prune(dir: &Path, max_bytes: u64) -> std::io::Result<Pruned> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.path().extension().is_some_and(|extension| extension == "cwasm") {
            let metadata = entry.metadata()?;
            entries.push((metadata.modified()?, metadata.len(), entry.path()));
        }
    }
    // Newest first: keep them while they fit.
    entries.sort_by_key(|entry| std::cmp::Reverse(entry.0));
    let mut pruned = Pruned::default();
    for (_, size, path) in entries {
        if pruned.kept_bytes + size <= max_bytes {
            pruned.kept += 1;
            pruned.kept_bytes += size;
        } else {
            fs::remove_file(&path)?;
            pruned.removed += 1;
            pruned.removed_bytes += size;
        }
    }
    Ok(pruned)
}

/// Where compiled components are kept unless `--cache-dir` says otherwise.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .map(|base| base.join("stepbox"))
}

/// Feeds `Hash` output into SHA-256, so the engine key is stable across processes.
#[derive(Default)]
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().unwrap_or_default())
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}
