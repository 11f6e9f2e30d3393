//! Finding task components on disk and naming their tasks the Celery way.
//!
//! `tasks.wasm` serves `tasks.<name>` for every name its `task.tasks()` export
//! returns; a nested `billing/invoices.wasm` serves `billing.invoices.<name>`. A
//! single `.wasm` file may be given instead of a directory. A file that cannot be
//! used (not wasm, a core module, a component for another world, imports the
//! worker does not grant, a broken `tasks()`) is reported with its path and
//! reason and skipped; the other files still load.

use std::path::{Path, PathBuf};

use super::bounds::MAX_TASK_NAME_LEN;

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
///
/// Dotfiles (and so editors' and `make`'s temporary files) are ignored, and so
/// are names that do not end in `.wasm` (`tasks.wasm.tmp`): write a component
/// under another name, then rename it into place. Directory symlinks are not
/// followed. A file whose path cannot be a Celery task prefix (characters other
/// than `[A-Za-z0-9_-]` in a segment) is refused, and so is every file of a
/// prefix served by more than one file (`billing/invoices.wasm` and
/// `billing.invoices.wasm`): one tenant cannot take over another's names.
pub fn discover(root: &Path) -> (Vec<Candidate>, Vec<LoadError>) {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    let meta = std::fs::symlink_metadata(root);
    if meta.as_ref().is_ok_and(|m| !m.is_dir()) || root.extension().is_some_and(|e| e == "wasm") {
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
            // The entry itself, not what a symlink points to.
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "wasm") {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                let display = rel.to_string_lossy().into_owned();
                let segments: Vec<String> =
                    rel.with_extension("").iter().map(|c| c.to_string_lossy().into_owned()).collect();
                let prefix = segments.join(".");
                if let Some(bad) = segments.iter().flat_map(|s| s.split('.')).find(|s| !valid_task_name(s)) {
                    errors.push(LoadError {
                        path,
                        reason: format!(
                            "its path cannot name Celery tasks: the part {:?} is not made of letters, digits, \
                             '_' and '-'",
                            bad
                        ),
                    });
                    continue;
                }
                found.push(Candidate { path, prefix, display });
            }
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    let mut owners: std::collections::HashMap<&str, Vec<&Candidate>> = std::collections::HashMap::new();
    for c in &found {
        owners.entry(c.prefix.as_str()).or_default().push(c);
    }
    let contested: std::collections::HashSet<String> =
        owners.iter().filter(|(_, cs)| cs.len() > 1).map(|(p, _)| p.to_string()).collect();
    for c in found.iter().filter(|c| contested.contains(&c.prefix)) {
        let others: Vec<&str> =
            owners[c.prefix.as_str()].iter().filter(|o| o.path != c.path).map(|o| o.display.as_str()).collect();
        errors.push(LoadError {
            path: c.path.clone(),
            reason: format!(
                "task prefix {:?} is claimed by this file and by {}; refusing all of them (rename one)",
                c.prefix,
                others.join(", ")
            ),
        });
    }
    found.retain(|c| !contested.contains(&c.prefix));
    (found, errors)
}

/// Read a component file, checked before and while reading: it must be a
/// regular file (a symlink must resolve to one inside `root`, the task
/// directory) of at most `max` bytes. FIFOs, devices and sockets are refused
/// without blocking (the file is opened non-blocking and checked by its open
/// descriptor, so it cannot be swapped between the check and the read), and at
/// most `max` bytes are ever read.
pub fn read_component(path: &Path, root: &Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

    let link = std::fs::symlink_metadata(path).map_err(|e| format!("cannot read file: {e}"))?;
    if link.file_type().is_symlink() {
        let target =
            std::fs::canonicalize(path).map_err(|e| format!("is a symbolic link that cannot be followed: {e}"))?;
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        let inside = if root.is_dir() { target.starts_with(&root) } else { target == root };
        if !inside {
            return Err(format!("is a symbolic link to {} outside the task directory", target.display()));
        }
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot read file: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read file: {e}"))?;
    let t = meta.file_type();
    if !t.is_file() {
        let kind = if t.is_fifo() {
            "a FIFO"
        } else if t.is_char_device() || t.is_block_device() {
            "a device"
        } else if t.is_socket() {
            "a socket"
        } else if t.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(format!("is {kind}, not a regular file"));
    }
    if meta.len() > max {
        return Err(format!("is {} bytes; the limit is {max} bytes (max_component_size)", meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read file: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!("grew past {max} bytes while being read (max_component_size)"));
    }
    Ok(bytes)
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

/// Whether a task name returned by a component (or one segment of a component's
/// path) is acceptable: 1 to [`MAX_TASK_NAME_LEN`] characters of
/// `[A-Za-z0-9_-]`. No separators (`.` and `:` would let one component claim
/// names under another's prefix), no control characters, no spaces.
pub fn valid_task_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TASK_NAME_LEN
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-'))
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
    fn a_prefix_with_two_owners_is_refused_for_both() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("billing")).unwrap();
        std::fs::write(dir.path().join("billing/invoices.wasm"), b"").unwrap();
        std::fs::write(dir.path().join("billing.invoices.wasm"), b"").unwrap();
        std::fs::write(dir.path().join("tasks.wasm"), b"").unwrap();
        std::fs::write(dir.path().join("bad name.wasm"), b"").unwrap();
        std::fs::write(dir.path().join(".hidden.wasm"), b"").unwrap();
        std::fs::write(dir.path().join("tasks.wasm.tmp"), b"").unwrap();
        let (found, errors) = discover(dir.path());
        assert_eq!(found.iter().map(|c| c.prefix.as_str()).collect::<Vec<_>>(), ["tasks"]);
        let reasons: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(reasons.iter().filter(|r| r.contains("claimed by this file and by")).count(), 2, "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("bad name.wasm") && r.contains("cannot name Celery tasks")));
    }

    #[test]
    fn only_bounded_regular_files_inside_the_directory_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("ok.wasm"), b"\0asm").unwrap();
        assert_eq!(read_component(&root.join("ok.wasm"), root, 100).unwrap(), b"\0asm");
        let big = std::fs::File::create(root.join("big.wasm")).unwrap();
        big.set_len(2 << 30).unwrap(); // sparse: nothing is written
        assert!(read_component(&root.join("big.wasm"), root, 100).unwrap_err().contains("the limit is 100 bytes"));
        std::os::unix::fs::symlink("/dev/zero", root.join("zero.wasm")).unwrap();
        assert!(read_component(&root.join("zero.wasm"), root, 100).unwrap_err().contains("outside the task directory"));
        std::os::unix::fs::symlink("ok.wasm", root.join("alias.wasm")).unwrap();
        assert!(read_component(&root.join("alias.wasm"), root, 100).is_ok());
        let fifo = std::ffi::CString::new(root.join("pipe.wasm").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(read_component(&root.join("pipe.wasm"), root, 100).unwrap_err().contains("a FIFO"));
        assert!(read_component(Path::new("/dev/zero"), Path::new("/dev/zero"), 100).unwrap_err().contains("a device"));
    }

    #[test]
    fn task_names_have_no_separators() {
        assert!(valid_task_name("add") && valid_task_name("send-mail_2"));
        for bad in ["", "a.b", "a:b", "a b", "a\nb", &"x".repeat(MAX_TASK_NAME_LEN + 1)] {
            assert!(!valid_task_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn headers_tell_modules_from_components() {
        assert_eq!(binary_kind(b"\0asm\x01\0\0\0"), BinaryKind::CoreModule);
        assert_eq!(binary_kind(b"\0asm\x0d\0\x01\0"), BinaryKind::Component);
        assert_eq!(binary_kind(b"hello world"), BinaryKind::NotWasm);
    }
}
