//! Finding task components on disk and naming their tasks the Celery way.
//!
//! `tasks.wasm` serves `tasks.<name>` for every name its `task.tasks()` export
//! returns; a nested `billing/invoices.wasm` serves `billing.invoices.<name>`. A
//! single `.wasm` file may be given instead of a directory. A file that cannot be
//! used (not wasm, a core module, a component for another world, imports the
//! worker does not grant, a broken `tasks()`) is reported with its path and
//! reason and skipped; the other files still load.

use std::path::{Path, PathBuf};

use super::bounds::{MAX_TASK_NAME_LEN, escape_controls};

/// A file that could not be loaded, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

impl std::fmt::Display for LoadError {
    /// One line: the path (a file name can hold a newline) and the reason, escaped.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.path.display().to_string();
        write!(f, "{}: {}", escape_controls(&path), escape_controls(&self.reason))
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
    /// The tenant: the subdirectory of the tasks directory it is in (`acme`
    /// for `acme/billing.wasm`), whose name starts every task name it serves.
    pub tenant: Option<String>,
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
        found.push(Candidate { path: root.to_path_buf(), prefix: stem, display, tenant: None });
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
                let tenant = (segments.len() > 1).then(|| segments[0].clone());
                found.push(Candidate { path, prefix, display, tenant });
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
    // A file outside a tenant's directory cannot serve names in its namespace
    // (`acme.billing.wasm` beside `acme/`): the tenant's quotas and grants
    // follow its directory.
    // Every directory is a tenant's (every candidate's tenant among them),
    // whatever it holds now: a component may be deployed there later.
    let tenants: std::collections::HashSet<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.retain(|c| {
        // A tenant is one name part: `acme.x/` would serve names in acme's namespace.
        if let Some(t) = c.tenant.as_deref().filter(|t| t.contains('.')) {
            errors.push(LoadError {
                path: c.path.clone(),
                reason: format!("the tenant directory {t:?} has a '.' in its name; a tenant is one name part"),
            });
            return false;
        }
        let first = c.prefix.split('.').next().unwrap_or_default();
        if c.tenant.is_some() || !tenants.contains(first) {
            return true;
        }
        errors.push(LoadError {
            path: c.path.clone(),
            reason: format!(
                "task prefix {:?} is in the namespace of tenant {first:?} (the directory {first}/); \
                 move the file into that directory",
                c.prefix
            ),
        });
        false
    });
    (found, errors)
}

/// Where `make tasks` puts the example components, relative to the project.
pub const BUILT_TASKS_DIR: &str = "target/tasks";

/// Why `-A` names nothing a worker can load: what was looked for, what was
/// found, and what to do. Each variant's text is the whole message.
#[derive(Debug, thiserror::Error)]
pub enum AppDirError {
    /// Nothing exists at the path (often a Python module name: `-A tasks`).
    #[error("-A {given}: no such directory or .wasm file (looked for {looked}).{found}\n{next}")]
    Missing {
        /// The path as given.
        given: String,
        /// The absolute path looked at.
        looked: String,
        /// What was found nearby (a Python module of that name), as a sentence.
        found: String,
        /// What to do.
        next: String,
    },
    /// A file that is not a `.wasm` component (a Python module: `-A tasks.py`).
    #[error("-A {given}: {looked} is {kind}, not a WebAssembly component.\n{next}")]
    NotAComponent {
        /// The path as given.
        given: String,
        /// The absolute path.
        looked: String,
        /// What it is: "a Python module", "a file".
        kind: String,
        /// What to do.
        next: String,
    },
    /// A directory without any `.wasm` file in it.
    #[error("-A {given}: no .wasm component in {looked} ({found}).\n{next}")]
    NoComponents {
        /// The path as given.
        given: String,
        /// The absolute path.
        looked: String,
        /// What the directory holds.
        found: String,
        /// What to do.
        next: String,
    },
}

/// Check that `-A`'s `root` can hold task components before anything is
/// loaded, so a Celery habit (`-A tasks`, `-A proj.tasks`, `-A tasks.py`: a
/// Python module) or a build not yet made gets an answer that says what to
/// do instead of an empty worker. `cwd` is where relative paths start.
pub fn check_app_dir(root: &Path, cwd: &Path) -> Result<(), AppDirError> {
    let given = root.display().to_string();
    let path = cwd.join(root);
    let looked = path.display().to_string();
    let next = next_step(cwd);
    let meta = std::fs::metadata(&path);
    let given_s = given.as_str();
    // `-A proj.tasks` is the module proj/tasks.py; `-A tasks` is tasks.py.
    let module = if given_s.ends_with(".py") {
        PathBuf::from(given_s)
    } else {
        PathBuf::from(format!("{}.py", given_s.replace('.', "/")))
    };
    let module_file = Some(module).filter(|p| cwd.join(p).is_file());
    match meta {
        Err(_) => {
            let found = match &module_file {
                Some(m) => format!(
                    " Found {}, a Python module: -A names Python modules for Celery, but Celeriac runs tasks \
                     compiled to WebAssembly components and -A takes the directory that holds them.",
                    m.display()
                ),
                None if !given_s.contains('/') && !given_s.ends_with(".wasm") => " -A is not a Python module name \
                     for Celeriac: it takes the directory that holds the task components (.wasm files)."
                    .to_string(),
                None => String::new(),
            };
            Err(AppDirError::Missing { given, looked, found, next })
        }
        Ok(m) if m.is_file() && root.extension().is_none_or(|e| e != "wasm") => {
            let kind = if root.extension().is_some_and(|e| e == "py") { "a Python module" } else { "a file" };
            Err(AppDirError::NotAComponent { given, looked, kind: kind.into(), next })
        }
        Ok(m) if m.is_dir() => {
            let (found, errors) = discover(&path);
            if !found.is_empty() || !errors.is_empty() {
                return Ok(());
            }
            Err(AppDirError::NoComponents { given, looked, found: describe_dir(&path), next })
        }
        Ok(_) => Ok(()),
    }
}

/// What a directory without components holds, for [`AppDirError::NoComponents`]:
/// "it is empty", or "it holds tasks.py, __init__.py".
fn describe_dir(dir: &Path) -> String {
    const SHOWN: usize = 5;
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().map(|e| escape_controls(&e.file_name().to_string_lossy()).into_owned()).collect()
        })
        .unwrap_or_default();
    names.sort();
    if names.is_empty() {
        return "it is empty".into();
    }
    let more = names.len().saturating_sub(SHOWN);
    names.truncate(SHOWN);
    let python = names.iter().any(|n| n.ends_with(".py"));
    format!(
        "it holds {}{}{}",
        names.join(", "),
        if more > 0 { format!(" and {more} more") } else { String::new() },
        if python { ": Python files, which Celeriac does not run" } else { "" }
    )
}

/// The next step after a bad `-A`: point at the built components if they
/// are there, else say how to build them.
fn next_step(cwd: &Path) -> String {
    let built = cwd.join(BUILT_TASKS_DIR);
    let (found, _) = if built.is_dir() { discover(&built) } else { (Vec::new(), Vec::new()) };
    if found.is_empty() {
        format!(
            "Build the task components first (`make tasks` builds {BUILT_TASKS_DIR}/tasks.wasm from \
             example-tasks/; see example-tasks/README.md), then point -A at the directory of .wasm files: \
             -A {BUILT_TASKS_DIR}"
        )
    } else {
        let files: Vec<&str> = found.iter().map(|c| c.display.as_str()).take(3).collect();
        format!("{BUILT_TASKS_DIR} holds {}: use -A {BUILT_TASKS_DIR}", files.join(", "))
    }
}

/// The component file that would serve task `name`, and the prefix it
/// serves: `proj/tasks.wasm` (or `proj.tasks.wasm`) for `proj.tasks.add`.
/// `None` for a name without a prefix (`add`).
pub fn component_for(name: &str) -> Option<(String, &str)> {
    let (prefix, _) = name.rsplit_once('.')?;
    Some((format!("{}.wasm", prefix.replace('.', "/")), prefix))
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

    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let inside = |target: &Path| if root.is_dir() { target.starts_with(&root) } else { target == root };
    let outside = |target: &Path| format!("is a symbolic link to {} outside the task directory", target.display());
    let link = std::fs::symlink_metadata(path).map_err(|e| format!("cannot read file: {e}"))?;
    if link.file_type().is_symlink() {
        let target =
            std::fs::canonicalize(path).map_err(|e| format!("is a symbolic link that cannot be followed: {e}"))?;
        if !inside(&target) {
            return Err(outside(&target));
        }
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot read file: {e}"))?;
    // Checked again on what was opened: a link re-pointed between the check
    // above and the open is caught here (Linux: the descriptor's own path).
    let opened = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file)));
    if let Ok(target) = opened
        && !inside(&target)
    {
        return Err(outside(&target));
    }
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
    fn a_file_outside_a_tenants_directory_cannot_serve_names_in_its_namespace() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("acme")).unwrap();
        std::fs::write(dir.path().join("acme/billing.wasm"), b"").unwrap();
        std::fs::write(dir.path().join("acme.other.wasm"), b"").unwrap();
        std::fs::write(dir.path().join("acme.wasm"), b"").unwrap();
        std::fs::write(dir.path().join("tasks.wasm"), b"").unwrap();
        let (found, errors) = discover(dir.path());
        let found: Vec<_> = found.iter().map(|c| (c.prefix.as_str(), c.tenant.as_deref())).collect();
        assert_eq!(found, [("acme.billing", Some("acme")), ("tasks", None)]);
        let reasons: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(reasons.iter().filter(|r| r.contains("namespace of tenant \"acme\"")).count(), 2, "{reasons:?}");
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
    fn a_missing_app_names_the_python_module_found_and_the_next_step() {
        let cwd = tempfile::tempdir().unwrap();
        std::fs::write(cwd.path().join("tasks.py"), b"from celery import Celery\n").unwrap();
        let e = check_app_dir(Path::new("tasks"), cwd.path()).unwrap_err().to_string();
        assert!(e.starts_with("-A tasks: no such directory or .wasm file (looked for "), "{e}");
        assert!(e.contains("Found tasks.py, a Python module"), "{e}");
        assert!(e.contains("make tasks") && e.contains("-A target/tasks"), "{e}");
        std::fs::create_dir_all(cwd.path().join("proj")).unwrap();
        std::fs::write(cwd.path().join("proj/tasks.py"), b"").unwrap();
        let e = check_app_dir(Path::new("proj.tasks"), cwd.path()).unwrap_err().to_string();
        assert!(e.contains("Found proj/tasks.py, a Python module"), "{e}");
        let e = check_app_dir(&cwd.path().join("tasks.py"), cwd.path()).unwrap_err().to_string();
        assert!(e.contains("is a Python module, not a WebAssembly component"), "{e}");
        let e = check_app_dir(Path::new("nothing/here"), cwd.path()).unwrap_err().to_string();
        assert!(e.contains("no such directory") && !e.contains("Found"), "{e}");
    }

    #[test]
    fn an_app_directory_without_components_says_what_it_holds() {
        let cwd = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(cwd.path().join("empty")).unwrap();
        let e = check_app_dir(Path::new("empty"), cwd.path()).unwrap_err().to_string();
        assert!(e.contains("no .wasm component in") && e.contains("(it is empty)"), "{e}");
        std::fs::create_dir_all(cwd.path().join("proj")).unwrap();
        std::fs::write(cwd.path().join("proj/tasks.py"), b"").unwrap();
        let e = check_app_dir(Path::new("proj"), cwd.path()).unwrap_err().to_string();
        assert!(e.contains("it holds tasks.py: Python files"), "{e}");
        // Once built, the message points at the built directory.
        std::fs::create_dir_all(cwd.path().join(BUILT_TASKS_DIR)).unwrap();
        std::fs::write(cwd.path().join(BUILT_TASKS_DIR).join("tasks.wasm"), b"").unwrap();
        let e = check_app_dir(Path::new("proj"), cwd.path()).unwrap_err().to_string();
        assert!(e.ends_with("target/tasks holds tasks.wasm: use -A target/tasks"), "{e}");
        assert!(check_app_dir(Path::new(BUILT_TASKS_DIR), cwd.path()).is_ok());
    }

    #[test]
    fn a_task_name_maps_to_the_file_that_would_serve_it() {
        assert_eq!(component_for("proj.tasks.add"), Some(("proj/tasks.wasm".to_string(), "proj.tasks")));
        assert_eq!(component_for("tasks.add"), Some(("tasks.wasm".to_string(), "tasks")));
        assert_eq!(component_for("add"), None);
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
