//! On-disk cache of compiled components.
//!
//! Compiling a component with Cranelift costs from ~0.1 s (a small Rust guest) to
//! 10-17 s (an interpreter such as componentize-py's CPython). The compiled
//! artifact is stored under a key made of the component's SHA-256 and the
//! engine's compatibility hash, which covers the wasmtime version and every
//! code-generation setting (fuel and epoch settings change the machine code),
//! so a restart deserialises in milliseconds instead of recompiling, and an
//! upgraded or reconfigured engine never loads a stale artifact.
//!
//! Safety: deserialising trusts the artifact, so the cache directory must be
//! writable only by the worker's own user (the default lives in the user's
//! cache directory). A corrupt or incompatible artifact is recompiled.
//!
//! Pruning: every artifact ever compiled would stay forever (each new build
//! of a component, each wasmtime upgrade leaves one behind), so after loading,
//! [`ArtifactCache::prune`] removes artifacts unused for longer than
//! `cache_max_age` and then, oldest first, those over `cache_max_size` —
//! never the ones this process uses. A hit refreshes the artifact's time, so
//! "age" is the time since it was last used.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Bumped when the cache layout changes.
const FORMAT: &str = "celeriac-cwasm-1";

/// Default `cache_max_size`: 1 GiB of compiled components.
pub const DEFAULT_MAX_SIZE: u64 = 1 << 30;

/// Default `cache_max_age`: 30 days since an artifact was last used.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Where compiled components are kept (or nowhere).
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: Option<PathBuf>,
    /// Artifacts this process loaded or wrote: never pruned.
    in_use: Arc<Mutex<HashSet<PathBuf>>>,
}

/// What [`ArtifactCache::prune`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Artifacts removed.
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
    /// What is left.
    pub kept_bytes: u64,
}

impl ArtifactCache {
    /// A cache in `dir`, or a disabled cache for `None`.
    pub fn new(dir: Option<PathBuf>) -> Self {
        ArtifactCache { dir, in_use: Arc::default() }
    }

    fn mark_in_use(&self, path: &Path) {
        self.in_use.lock().unwrap_or_else(|p| p.into_inner()).insert(path.to_path_buf());
    }

    /// Remove artifacts last used longer than `max_age` ago, then the oldest
    /// until the rest fit in `max_size` bytes; a zero bound is no bound.
    /// Artifacts this process uses are kept, and so is anything that is not
    /// a `.cwasm` file of ours. Errors (a read-only cache, a file another
    /// worker removed first) skip the file.
    pub fn prune(&self, max_size: u64, max_age: Duration) -> Pruned {
        let Some(dir) = &self.dir else { return Pruned::default() };
        let Ok(entries) = std::fs::read_dir(dir) else { return Pruned::default() };
        let in_use = self.in_use.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let now = SystemTime::now();
        let mut artifacts: Vec<(SystemTime, u64, PathBuf)> = entries
            .flatten()
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".cwasm") && !n.starts_with('.')))
            .filter_map(|e| {
                let meta = e.metadata().ok().filter(|m| m.is_file())?;
                Some((meta.modified().unwrap_or(now), meta.len(), e.path()))
            })
            .collect();
        // Oldest first.
        artifacts.sort();
        let mut total: u64 = artifacts.iter().map(|a| a.1).sum();
        let mut pruned = Pruned::default();
        for (modified, len, path) in &artifacts {
            if in_use.contains(path) {
                continue;
            }
            let too_old = !max_age.is_zero() && now.duration_since(*modified).is_ok_and(|age| age > max_age);
            let too_big = max_size > 0 && total > max_size;
            if (too_old || too_big) && std::fs::remove_file(path).is_ok() {
                pruned.files += 1;
                pruned.bytes += len;
                total -= len;
            }
        }
        pruned.kept_bytes = total;
        pruned
    }

    /// The default location: `$XDG_CACHE_HOME/celeriac` or `~/.cache/celeriac`.
    pub fn default_dir() -> Option<PathBuf> {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| d.join("celeriac"))
    }

    /// The cache key of `wasm` for `engine`.
    fn key(engine: &Engine, wasm: &[u8]) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let mut sha = Sha256::new();
        sha.update(FORMAT.as_bytes());
        sha.update(env!("CARGO_PKG_VERSION").as_bytes());
        sha.update(h.finish().to_le_bytes());
        sha.update(wasm);
        let digest = sha.finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Where the artifact of `wasm` for `engine` lives; `None` when the cache
    /// is disabled.
    pub fn path_for(&self, engine: &Engine, wasm: &[u8]) -> Option<PathBuf> {
        self.dir.as_ref().map(|dir| dir.join(format!("{}.cwasm", Self::key(engine, wasm))))
    }

    /// The cached component at `path`, if there is a usable one.
    pub fn lookup(&self, engine: &Engine, path: &Path) -> Option<Component> {
        if !path.is_file() {
            return None;
        }
        // SAFETY: the artifact was written by `precompile_component` of an
        // engine with the same compatibility hash (part of the key), into a
        // directory only this user writes; wasmtime checks the header and
        // engine settings again and refuses a mismatch.
        // Read, not mapped: a noexec mount would refuse to map it executable.
        let bytes = std::fs::read(path).ok()?;
        match unsafe { Component::deserialize(engine, &bytes) } {
            Ok(c) => {
                self.mark_in_use(path);
                // Its age is the time since it was last used (best effort: the cache may be read-only).
                if let Ok(f) = std::fs::File::options().append(true).open(path) {
                    let _ = f.set_modified(SystemTime::now());
                }
                Some(c)
            }
            Err(e) => {
                tracing::warn!("ignoring unusable cached artifact {}: {e:#}", path.display());
                None
            }
        }
    }

    /// Store a compiled artifact at `path` (from [`ArtifactCache::path_for`]);
    /// a cache that cannot be written is only warned about.
    pub fn store(&self, path: &Path, compiled: &[u8]) {
        let tag = uuid::Uuid::new_v4().to_string();
        self.mark_in_use(path);
        if let Err(e) = super::compile::write_atomically(path, compiled, &tag) {
            tracing::warn!("could not write compiled artifact to {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(dir: &Path, name: &str, len: usize, age: Duration) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, vec![0u8; len]).unwrap();
        let f = std::fs::File::options().append(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
        path
    }

    #[test]
    fn pruning_removes_old_artifacts_then_the_oldest_over_the_size_but_never_those_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let day = Duration::from_secs(24 * 3600);
        let ancient = artifact(dir.path(), "a.cwasm", 100, 40 * day);
        let old_in_use = artifact(dir.path(), "b.cwasm", 100, 50 * day);
        let older = artifact(dir.path(), "c.cwasm", 100, 3 * day);
        let newer = artifact(dir.path(), "d.cwasm", 100, day);
        let newest = artifact(dir.path(), "e.cwasm", 100, Duration::ZERO);
        let other = artifact(dir.path(), "notes.txt", 1000, 90 * day);
        let cache = ArtifactCache::new(Some(dir.path().to_path_buf()));
        cache.mark_in_use(&old_in_use);
        // 30 days, 300 bytes: `a` is too old; then c goes (the oldest not in use), leaving b, d and e.
        let pruned = cache.prune(300, 30 * day);
        assert_eq!(pruned, Pruned { files: 2, bytes: 200, kept_bytes: 300 });
        assert!(!ancient.exists() && !older.exists());
        assert!(old_in_use.exists() && newer.exists() && newest.exists() && other.exists());
        // Zero bounds prune nothing.
        assert_eq!(cache.prune(0, Duration::ZERO).files, 0);
        assert_eq!(ArtifactCache::new(None).prune(1, day), Pruned::default());
    }
}
