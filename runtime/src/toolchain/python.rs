//! Python task projects: a directory of modules using the `celeriac` package
//! (`from celeriac import task`), built into a component by componentize-py
//! 0.25.1 (PyPI; it bundles CPython 3.14, so nothing is downloaded at build
//! or run time).
//!
//! The `celeriac` package (`sdk-python/celeriac/`), the WIT contract and the
//! world Python components target (`sdk-python/wit/`: the contract plus
//! `wasi:http/outgoing-handler` for `celeriac.http`, with the WASI packages it
//! references) are embedded in this binary and written to a temporary directory for the build,
//! next to a generated entry module that imports every top-level module of the
//! project (tests excepted) and exports the SDK's `Task` class as the WIT
//! `task` interface. So a project holds only its own code.
//!
//! componentize-py is looked up as `componentize-py` on `PATH`, else as the
//! `componentize_py` module of `python3` (e.g. after `pip install --user`
//! without `~/.local/bin` on `PATH`). With a virtualenv active (`VIRTUAL_ENV`),
//! componentize-py also bundles the pure-Python packages installed there.

use std::path::Path;
use std::process::Command;

use super::{TASK_WIT, ToolchainError, run, write_files};

const TASKS_PY: &str = include_str!("../../../templates/python/tasks.py");
const GITIGNORE: &str = include_str!("../../../templates/python/gitignore");

/// The `celeriac` package, as files under the build's Python path.
const SDK: &[(&str, &str)] = &[
    ("celeriac/__init__.py", include_str!("../../../sdk-python/celeriac/__init__.py")),
    ("celeriac/_component.py", include_str!("../../../sdk-python/celeriac/_component.py")),
    ("celeriac/http.py", include_str!("../../../sdk-python/celeriac/http.py")),
];

/// The world a Python component targets: the task contract plus wasi:http's
/// outgoing handler (`celeriac.http`), written beside `task.wit` with the WASI
/// packages it references (`sdk-python/wit/`).
const WORLD: &str = "task-component-python";
const WIT: &[(&str, &str)] = &[
    ("python.wit", include_str!("../../../sdk-python/wit/python.wit")),
    ("deps/cli.wit", include_str!("../../../sdk-python/wit/deps/cli.wit")),
    ("deps/clocks.wit", include_str!("../../../sdk-python/wit/deps/clocks.wit")),
    ("deps/filesystem.wit", include_str!("../../../sdk-python/wit/deps/filesystem.wit")),
    ("deps/http.wit", include_str!("../../../sdk-python/wit/deps/http.wit")),
    ("deps/io.wit", include_str!("../../../sdk-python/wit/deps/io.wit")),
    ("deps/random.wit", include_str!("../../../sdk-python/wit/deps/random.wit")),
    ("deps/sockets.wit", include_str!("../../../sdk-python/wit/deps/sockets.wit")),
];

/// The generated entry module (componentize-py's "app"): not the world's name.
const ENTRY: &str = "celeriac_app";

/// The componentize-py release the SDK is written and tested against.
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

/// Runs componentize-py's command line from its module, for `python3 -c`.
const VIA_PYTHON: &str =
    "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())";

pub(crate) fn scaffold(dir: &Path, name: &str) -> Result<(), ToolchainError> {
    write_files(dir, &[("tasks.py", &TASKS_PY.replace("{{name}}", name)), (".gitignore", GITIGNORE)])
}

pub(crate) fn build(project: &Path, out: &Path) -> Result<(), ToolchainError> {
    let modules = task_modules(project)?;
    let work = tempfile::Builder::new().prefix("celeriac-build-").tempdir()?;
    let sdk = work.path().join("python");
    let wit = work.path().join("wit");
    write_files(&sdk, SDK)?;
    write_files(&sdk, &[(&format!("{ENTRY}.py"), &entry_module(&modules))])?;
    write_files(&wit, &[("task.wit", TASK_WIT)])?;
    write_files(&wit, WIT)?;

    let mut cmd = componentize_py()?;
    cmd.arg("-d").arg(&wit).args(["-w", WORLD, "componentize", "-p"]).arg(&sdk).arg("-p").arg(project);
    cmd.arg(ENTRY).arg("-o").arg(out);
    run(&mut cmd)
}

/// The command that runs componentize-py (see the module doc).
fn componentize_py() -> Result<Command, ToolchainError> {
    if on_path("componentize-py") {
        return Ok(Command::new("componentize-py"));
    }
    let importable =
        Command::new("python3").args(["-c", "import componentize_py"]).output().is_ok_and(|o| o.status.success());
    if importable {
        let mut cmd = Command::new("python3");
        cmd.args(["-c", VIA_PYTHON]);
        return Ok(cmd);
    }
    Err(ToolchainError::Missing { tool: "componentize-py".into(), install: format!("pip install {COMPONENTIZE_PY}") })
}

/// Whether an executable `program` is in a `PATH` directory.
fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else { return false };
    std::env::split_paths(&path)
        .any(|d| std::fs::metadata(d.join(program)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// The project's task modules: its top-level `*.py` files, tests excepted
/// (`test_*.py`, `*_test.py`, `conftest.py`, `setup.py`), sorted.
fn task_modules(project: &Path) -> Result<Vec<String>, ToolchainError> {
    let mut modules = Vec::new();
    for e in std::fs::read_dir(project).map_err(ToolchainError::file(project))? {
        let path = e.map_err(ToolchainError::file(project))?.path();
        let Some(stem) = module_name(&path) else { continue };
        if stem.starts_with("test_") || stem.ends_with("_test") || stem == "conftest" || stem == "setup" {
            continue;
        }
        if stem == "celeriac" || stem == ENTRY || stem == "wit_world" || stem.starts_with("componentize_py") {
            return Err(ToolchainError::Reserved { path });
        }
        modules.push(stem);
    }
    if modules.is_empty() {
        return Err(ToolchainError::NotAProject { dir: project.to_path_buf() });
    }
    modules.sort();
    Ok(modules)
}

/// `Some(module)` for `path` = `<module>.py`, a Python identifier.
fn module_name(path: &Path) -> Option<String> {
    if path.extension().is_none_or(|e| e != "py") || !path.is_file() {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    let ident = stem.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    ident.then(|| stem.to_string())
}

/// The entry module: imports the task modules (which fill the registry at
/// build time, before componentize-py snapshots the interpreter), then the
/// exported `Task` class.
fn entry_module(modules: &[String]) -> String {
    let mut s = String::from(
        "\"\"\"Entry module generated by `celeriac build`: the project's task modules, then the export.\"\"\"\n\n",
    );
    for m in modules {
        s.push_str(&format!("import {m}  # noqa: F401\n"));
    }
    s.push_str("from celeriac._component import Task  # noqa: F401\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_top_level_module_but_the_tests_is_imported_by_the_entry_module() {
        let dir = tempfile::tempdir().unwrap();
        for m in ["tasks", "billing", "test_tasks", "tasks_test", "conftest", "setup"] {
            std::fs::write(dir.path().join(format!("{m}.py")), "").unwrap();
        }
        std::fs::write(dir.path().join("not-a-module.py"), "").unwrap();
        std::fs::create_dir(dir.path().join("pkg.py")).unwrap();
        let modules = task_modules(dir.path()).unwrap();
        assert_eq!(modules, ["billing", "tasks"]);
        let entry = entry_module(&modules);
        assert!(entry.contains("import billing  # noqa: F401\nimport tasks  # noqa: F401\n"), "{entry}");
        assert!(entry.ends_with("from celeriac._component import Task  # noqa: F401\n"), "{entry}");
    }

    #[test]
    fn a_module_that_would_shadow_the_sdk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("celeriac.py"), "").unwrap();
        assert!(matches!(task_modules(dir.path()), Err(ToolchainError::Reserved { .. })));
    }

    #[test]
    fn a_directory_with_only_tests_is_not_a_project() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("test_x.py"), "").unwrap();
        assert!(matches!(task_modules(dir.path()), Err(ToolchainError::NotAProject { .. })));
    }
}
