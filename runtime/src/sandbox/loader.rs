//! Finding task components on disk and naming their tasks the Celery way.
//!
//! `tasks.wasm` serves `tasks.<name>` for every name its `task.tasks()` export
//! returns; a nested `billing/invoices.wasm` serves `billing.invoices.<name>`. A
//! single `.wasm` file may be given instead of a directory. A file that cannot be
//! used (not wasm, a core module, a component for another world, imports the
//! worker does not grant, a broken `tasks()`) is reported with its path and
//! reason and skipped; the other files still load.

use std::path::{Path, PathBuf};

/// A file that could not be loaded, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// A candidate component file and the task-name prefix it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The `.wasm` file.
    pub path: PathBuf,
    /// `tasks` for `tasks.wasm`, `billing.invoices` for `billing/invoices.wasm`.
    pub prefix: String,
    /// The name shown in tracebacks and listings (path relative to the tasks directory).
    pub display: String,
}

/// Every `.wasm` file under `root` (or `root` itself if it is a file), sorted,
/// with its prefix. Unreadable directories are reported as load errors.
pub fn discover(root: &Path) -> (Vec<Candidate>, Vec<LoadError>) {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    if root.is_file() {
        let stem = root.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let display = root.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        found.push(Candidate { path: root.to_path_buf(), prefix: stem, display });
        return (found, errors);
    }
    if !root.is_dir() {
        errors.push(LoadError { path: root.to_path_buf(), reason: "no such file or directory".into() });
        return (found, errors);
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                errors.push(LoadError { path: dir, reason: format!("cannot read directory: {e}") });
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "wasm") {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                let display = rel.to_string_lossy().into_owned();
                let prefix = rel
                    .with_extension("")
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(".");
                found.push(Candidate { path, prefix, display });
            }
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    (found, errors)
}

/// What kind of WebAssembly binary `bytes` is, judged by its header.
#[derive(Debug, PartialEq, Eq)]
pub enum BinaryKind {
    /// A component (layer 1).
    Component,
    /// A core module (layer 0): not loadable as a task.
    CoreModule,
    /// Not WebAssembly at all.
    NotWasm,
}

/// Classify a binary from its 8-byte header.
pub fn binary_kind(bytes: &[u8]) -> BinaryKind {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return BinaryKind::NotWasm;
    }
    // Bytes 6..8 are the layer: 0 for a core module, 1 for a component.
    match (bytes[6], bytes[7]) {
        (0, 0) => BinaryKind::CoreModule,
        _ => BinaryKind::Component,
    }
}

/// Whether a task name returned by a component is acceptable.
pub fn valid_task_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_files_get_dotted_prefixes() {
        let dir = std::env::temp_dir().join(format!("celeriac-discover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("billing")).unwrap();
        std::fs::write(dir.join("tasks.wasm"), b"").unwrap();
        std::fs::write(dir.join("billing/invoices.wasm"), b"").unwrap();
        std::fs::write(dir.join("notes.txt"), b"").unwrap();
        let (found, errors) = discover(&dir);
        assert!(errors.is_empty());
        let prefixes: Vec<_> = found.iter().map(|c| c.prefix.as_str()).collect();
        assert_eq!(prefixes, ["billing.invoices", "tasks"]);
        let (single, _) = discover(&dir.join("tasks.wasm"));
        assert_eq!(single[0].prefix, "tasks");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn headers_tell_modules_from_components() {
        assert_eq!(binary_kind(b"\0asm\x01\0\0\0"), BinaryKind::CoreModule);
        assert_eq!(binary_kind(b"\0asm\x0d\0\x01\0"), BinaryKind::Component);
        assert_eq!(binary_kind(b"hello world"), BinaryKind::NotWasm);
    }
}
