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

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Bumped when the cache layout changes.
const FORMAT: &str = "celeriac-cwasm-1";

/// Where compiled components are kept (or nowhere).
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: Option<PathBuf>,
}

impl ArtifactCache {
    /// A cache in `dir`, or a disabled cache for `None`.
    pub fn new(dir: Option<PathBuf>) -> Self {
        ArtifactCache { dir }
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

    /// Load the compiled form of `wasm` from the cache, or compile it (and store
    /// it). Returns the component and whether it came from the cache.
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
        match unsafe { Component::deserialize_file(engine, path) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("ignoring unusable cached artifact {}: {e:#}", path.display());
                None
            }
        }
    }
}
