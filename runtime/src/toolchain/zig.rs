//! Zig task projects: `celeriac new --lang zig` and `celeriac build` for a
//! directory with `tasks.zig` (or `build.zig` / any `*.zig`).
//!
//! Zig reuses the C path ([`super::c`]): the same generated C bindings and the
//! same SDK header, `celeriac.h`, which `zig translate-c` turns into the Zig
//! module `celeriac` that the task code imports (Zig 0.16+ has no `@cImport`).
//! The Zig code exports the task table (`celeriac_task_table`), `zig
//! build-obj` compiles it, `zig cc` links it with the bindings and the SDK
//! implementation against Zig's own wasi-libc (built once with translate-c, 1-2 min, then cached),
//! and [`super::c::encode`] makes the component. Zig comes from PyPI
//! (`pip install ziglang`): `zig` on the PATH, or `python3 -m ziglang`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::c::{self, write_new};
use super::{ToolchainError, run};

/// `celeriac new --lang zig` writes this.
const TEMPLATE: &str = include_str!("../../../templates/zig/tasks.zig");
/// The Zig release the SDK and templates are written for.
pub(crate) const ZIG_VERSION: &str = "0.17.1";

/// Writes the Zig template (`tasks.zig`, serving `add`) into `dir`.
pub(crate) fn scaffold(dir: &Path, _name: &str) -> Result<(), ToolchainError> {
    write_new(&dir.join("tasks.zig"), TEMPLATE)
}

/// Builds the component of the Zig project in `project` into `out`.
pub(crate) fn build(project: &Path, out: &Path) -> Result<(), ToolchainError> {
    // Zig runs in the build directory: every path it gets is absolute.
    let root = std::path::absolute(root_source(project)?)?;
    let zig = find_zig()?;
    let work = tempfile::Builder::new().prefix("celeriac-build-zig-").tempdir()?;
    let generated = c::write_bindings(work.path())?;

    // celeriac.h -> the Zig module `celeriac`.
    let header_zig = work.path().join("celeriac.zig");
    let mut translate = zig.command();
    translate
        .args(["translate-c", "-target", "wasm32-wasi", "-lc", "-I"])
        .arg(work.path())
        .arg(work.path().join("celeriac.h"));
    let translated = output_of(&mut translate)?;
    std::fs::write(&header_zig, translated)?;

    // The task code -> one wasm object.
    let object = work.path().join("tasks_zig.o");
    let mut compile = zig.command();
    compile
        .args(["build-obj", "-target", "wasm32-wasi", "-O", "ReleaseSmall", "-lc", "--dep", "celeriac"])
        .arg(flag("-Mroot=", &root))
        .arg(flag("-Mceleriac=", &header_zig))
        .arg(flag("-femit-bin=", &object))
        .current_dir(work.path());
    run(&mut compile)?;

    // Link with the C bindings and the SDK implementation: a WASI reactor.
    // A 1 MiB stack (zig cc's default reserves more than a small memory cap).
    let core = work.path().join("core.wasm");
    let mut link = zig.command();
    link.args(["cc", "--target=wasm32-wasi", "-mexec-model=reactor", "-O2", "-g0"])
        .arg("-Wl,-z,stack-size=1048576")
        .arg("-I")
        .arg(work.path())
        .arg("-o")
        .arg(&core)
        .arg(&object)
        .args(&generated)
        .current_dir(work.path());
    run(&mut link)?;
    let component = c::encode(&std::fs::read(&core)?)?;
    c::write_output(out, &component)
}

/// The file the Zig build starts from: `tasks.zig`, `src/tasks.zig`, or the
/// only `*.zig` file besides `build.zig`.
fn root_source(project: &Path) -> Result<PathBuf, ToolchainError> {
    for candidate in [project.join("tasks.zig"), project.join("src").join("tasks.zig")] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let mut sources = c::files_with_extension(project, "zig")?;
    sources.retain(|p| p.file_name().is_none_or(|n| n != "build.zig"));
    match sources.len() {
        1 => Ok(sources.remove(0)),
        _ => Err(ToolchainError::NotAProject { dir: project.to_path_buf() }),
    }
}

/// How to run Zig: a program plus leading arguments (`python3 -m ziglang`).
struct Zig {
    program: OsString,
    prefix: Vec<OsString>,
}

impl Zig {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.prefix);
        cmd
    }
}

/// `$CELERIAC_ZIG` (a zig executable), else `zig` on the PATH, else the
/// `ziglang` package of `python3` (or of the active virtualenv's python).
fn find_zig() -> Result<Zig, ToolchainError> {
    let mut candidates: Vec<Zig> = Vec::new();
    if let Some(zig) = std::env::var_os("CELERIAC_ZIG") {
        candidates.push(Zig { program: zig, prefix: vec![] });
    }
    candidates.push(Zig { program: "zig".into(), prefix: vec![] });
    let module = vec![OsString::from("-m"), OsString::from("ziglang")];
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        let python = Path::new(&venv).join("bin").join("python");
        candidates.push(Zig { program: python.into(), prefix: module.clone() });
    }
    candidates.push(Zig { program: "python3".into(), prefix: module });
    for zig in candidates {
        let mut probe = zig.command();
        probe.arg("version").stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        if probe.status().is_ok_and(|s| s.success()) {
            return Ok(zig);
        }
    }
    Err(ToolchainError::Missing {
        tool: "zig".into(),
        install: format!("python3 -m pip install ziglang=={ZIG_VERSION} (or put `zig` on the PATH)"),
    })
}

/// Runs a tool like [`run`] and returns its stdout.
fn output_of(cmd: &mut Command) -> Result<Vec<u8>, ToolchainError> {
    let out_file = tempfile::tempfile()?;
    cmd.stdout(out_file.try_clone()?);
    run(cmd)?;
    let mut file = out_file;
    let mut bytes = Vec::new();
    std::io::Seek::rewind(&mut file)?;
    std::io::Read::read_to_end(&mut file, &mut bytes)?;
    Ok(bytes)
}

/// `-Mroot=` + a path, as one argument.
fn flag(name: &str, path: &Path) -> OsString {
    let mut arg = OsString::from(name);
    arg.push(path.as_os_str());
    arg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_source_is_tasks_zig_not_build_zig() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("build.zig"), "").unwrap();
        std::fs::write(dir.path().join("other.zig"), "").unwrap();
        assert_eq!(root_source(dir.path()).unwrap(), dir.path().join("other.zig"));
        std::fs::write(dir.path().join("tasks.zig"), "").unwrap();
        assert_eq!(root_source(dir.path()).unwrap(), dir.path().join("tasks.zig"));
    }

    #[test]
    fn a_project_with_only_build_zig_has_no_root_source() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("build.zig"), "").unwrap();
        assert!(matches!(root_source(dir.path()), Err(ToolchainError::NotAProject { .. })));
    }
}
