//! Task projects in any guest language: `celeriac new` scaffolds one from a
//! template, `celeriac build` turns one into a task component (issue #12).
//!
//! Each language has one module ([`rust`], [`python`], [`js`], [`c`], [`zig`])
//! with a `scaffold(dir, name)` that writes its template (embedded in the
//! binary with `include_str!`, from `templates/<lang>/`) and a `build(project,
//! out)` that calls that language's toolchain (cargo, componentize-py, ...).
//! This module picks the language ([`detect`]), checks the arguments, and
//! writes the output through a hidden temporary file in the output's directory
//! that is then renamed, so a worker watching that directory never loads a
//! half-written component.
//!
//! A toolchain that is not installed is a [`ToolchainError::Missing`] whose
//! message is the command that installs it; [`run`] is the one place that runs
//! a tool and makes that error.

mod c;
mod js;
mod python;
mod rust;
mod zig;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// The WIT contract every task component targets (`wit/task.wit`).
pub(crate) const TASK_WIT: &str = include_str!("../../../wit/task.wit");

/// A guest language `celeriac new` and `celeriac build` know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// Rust, with the `celeriac-sdk` crate (cargo, target wasm32-wasip2).
    Rust,
    /// Python, with the `celeriac` package (componentize-py).
    Python,
    /// JavaScript.
    Js,
    /// C (clang and wasi-libc).
    C,
    /// Zig.
    Zig,
}

impl Language {
    /// The name used on the command line: `rust`, `python`, `js`, `c`, `zig`.
    pub fn name(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::Js => "js",
            Language::C => "c",
            Language::Zig => "zig",
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why scaffolding or building a task project failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolchainError {
    /// A tool the language needs is not installed (or not on `PATH`).
    #[error("{tool} is not installed; install it with: {install}")]
    Missing {
        /// The tool, e.g. `componentize-py`.
        tool: String,
        /// The command that installs it, e.g. `pip install componentize-py==0.25.1`.
        install: String,
    },
    /// A tool ran and failed.
    #[error("`{command}` failed ({status}):\n{output}")]
    Failed {
        /// The command line, for the user to run again by hand.
        command: String,
        /// How it ended.
        status: ExitStatus,
        /// The tail of what it printed (stderr, then stdout).
        output: String,
    },
    /// The directory holds no project of a known language.
    #[error(
        "{} is not a task project: no Cargo.toml, package.json, build.zig, *.zig, *.c or *.py file in it \
         (create one with `celeriac new NAME --lang rust|python|js|c|zig`)",
        dir.display()
    )]
    NotAProject {
        /// The directory.
        dir: PathBuf,
    },
    /// `celeriac new` would overwrite something.
    #[error("{} already exists and is not empty; choose a new directory", dir.display())]
    Exists {
        /// The directory.
        dir: PathBuf,
    },
    /// A project name that cannot name a component (and, in Rust, a crate).
    #[error(
        "{name:?} cannot name a task project: use letters, digits, `_` and `-`, starting with a letter \
         (it becomes the component's file name and the tasks' prefix, e.g. {name}.add)"
    )]
    BadName {
        /// The name given.
        name: String,
    },
    /// A project file whose name the build needs for itself.
    #[error("{} would shadow a module of the Celeriac SDK or of the build; rename it", path.display())]
    Reserved {
        /// The file.
        path: PathBuf,
    },
    /// This build of celeriac does not build this language.
    #[error("celeriac build for {language} is not implemented in this build")]
    NotYet {
        /// The language.
        language: Language,
    },
    /// The Rust SDK (`celeriac-sdk`, not on crates.io) was not found.
    #[error(
        "the Rust SDK (crate celeriac-sdk, not published on crates.io) was not found at {}; set CELERIAC_SDK to \
         the sdk/ directory of a Celeriac checkout",
        tried.display()
    )]
    SdkNotFound {
        /// Where it was looked for.
        tried: PathBuf,
    },
    /// The toolchain ran but left no component where it should be.
    #[error("`{command}` succeeded but produced no component: {detail}")]
    NoOutput {
        /// The command.
        command: String,
        /// What was missing.
        detail: String,
    },
    /// The output is not a WebAssembly component.
    #[error(
        "{} is not a WebAssembly component (a core module or something else); the worker loads only \
         components",
        path.display()
    )]
    NotAComponent {
        /// The file that was built.
        path: PathBuf,
    },
    /// Encoding a component in-process failed.
    #[error("cannot encode the component: {0}")]
    Encode(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    File {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Any other I/O failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl ToolchainError {
    /// A [`ToolchainError::File`] for `path`.
    pub(crate) fn file(path: &Path) -> impl FnOnce(std::io::Error) -> ToolchainError + '_ {
        move |source| ToolchainError::File { path: path.to_path_buf(), source }
    }
}

/// The language of the project in `project`, from its files, checked in this
/// order: `Cargo.toml` (Rust), `package.json` (JS), `build.zig` or any `*.zig`
/// (Zig), any `*.c` (C), any `*.py` (Python).
pub fn detect(project: &Path) -> Result<Language, ToolchainError> {
    let entries = std::fs::read_dir(project).map_err(ToolchainError::file(project))?;
    let mut names = Vec::new();
    for e in entries {
        let e = e.map_err(ToolchainError::file(project))?;
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    let has = |name: &str| names.iter().any(|n| n == name);
    let has_ext = |ext: &str| names.iter().any(|n| n.ends_with(ext) && n.len() > ext.len());
    if has("Cargo.toml") {
        Ok(Language::Rust)
    } else if has("package.json") {
        Ok(Language::Js)
    } else if has("build.zig") || has_ext(".zig") {
        Ok(Language::Zig)
    } else if has_ext(".c") {
        Ok(Language::C)
    } else if has_ext(".py") {
        Ok(Language::Python)
    } else {
        Err(ToolchainError::NotAProject { dir: project.to_path_buf() })
    }
}

/// Check a project name: letters, digits, `_` and `-`, starting with a letter.
pub fn check_name(name: &str) -> Result<(), ToolchainError> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok { Ok(()) } else { Err(ToolchainError::BadName { name: name.to_string() }) }
}

/// The project name of `dir`: its last path component (of the absolute path,
/// so `.` names the current directory).
pub fn project_name(dir: &Path) -> Result<String, ToolchainError> {
    let abs = std::path::absolute(dir).map_err(ToolchainError::file(dir))?;
    let abs = abs.components().collect::<PathBuf>();
    let name = abs.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    check_name(&name)?;
    Ok(name)
}

/// Write the template of `lang` into `dir` (created; it must not exist or be
/// empty), for a project called `name`: its tasks are served as `name.add`
/// once built as `name.wasm`.
pub fn scaffold(lang: Language, dir: &Path, name: &str) -> Result<(), ToolchainError> {
    check_name(name)?;
    if let Ok(mut entries) = std::fs::read_dir(dir)
        && entries.next().is_some()
    {
        return Err(ToolchainError::Exists { dir: dir.to_path_buf() });
    }
    let existed = dir.exists();
    std::fs::create_dir_all(dir).map_err(ToolchainError::file(dir))?;
    let written = match lang {
        Language::Rust => rust::scaffold(dir, name),
        Language::Python => python::scaffold(dir, name),
        Language::Js => js::scaffold(dir, name),
        Language::C => c::scaffold(dir, name),
        Language::Zig => zig::scaffold(dir, name),
    };
    if written.is_err() && !existed {
        // Nothing of a half-made project stays behind.
        let _ = std::fs::remove_dir_all(dir);
    }
    written
}

/// Build the project in `project`, written in `lang`, into the component
/// `out`. `out`'s directory is created; `out` itself is replaced only once the
/// component is complete (written to a hidden temporary file beside it, then
/// renamed).
pub fn build(lang: Language, project: &Path, out: &Path) -> Result<(), ToolchainError> {
    if !project.is_dir() {
        return Err(ToolchainError::NotAProject { dir: project.to_path_buf() });
    }
    write_atomically(out, |tmp| match lang {
        Language::Rust => rust::build(project, tmp),
        Language::Python => python::build(project, tmp),
        Language::Js => js::build(project, tmp),
        Language::C => c::build(project, tmp),
        Language::Zig => zig::build(project, tmp),
    })
}

/// Let `make` write a component to a hidden temporary file in `out`'s
/// directory, check it is a component, and rename it to `out`. On failure
/// nothing is left behind and an existing `out` is untouched.
fn write_atomically(out: &Path, make: impl FnOnce(&Path) -> Result<(), ToolchainError>) -> Result<(), ToolchainError> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(ToolchainError::file(&dir))?;
    let file_name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "task.wasm".into());
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let built = make(&tmp)
        .and_then(|()| check_component(&tmp))
        .and_then(|()| std::fs::rename(&tmp, out).map_err(ToolchainError::file(out)));
    if built.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    built
}

/// Fail unless `path` starts like a WebAssembly component (not a core module).
fn check_component(path: &Path) -> Result<(), ToolchainError> {
    let mut head = [0u8; 8];
    let mut f = std::fs::File::open(path).map_err(ToolchainError::file(path))?;
    let n = f.read(&mut head).map_err(ToolchainError::file(path))?;
    // `\0asm`, then the component-model layer: version 0x0d, layer 1.
    if n == 8 && head[..4] == *b"\0asm" && head[6..8] == [1, 0] {
        Ok(())
    } else {
        Err(ToolchainError::NotAComponent { path: path.to_path_buf() })
    }
}

/// How to install the tools the language modules run, for
/// [`ToolchainError::Missing`]: `(program, install command)`.
const INSTALL: &[(&str, &str)] = &[
    ("cargo", "curl --proto '=https' -sSf https://sh.rustup.rs | sh && rustup target add wasm32-wasip2"),
    ("componentize-py", "pip install componentize-py==0.25.1"),
    ("python3", "apt-get install -y python3 python3-venv"),
    ("node", "apt-get install -y nodejs npm"),
    ("npm", "apt-get install -y nodejs npm"),
    ("npx", "apt-get install -y nodejs npm"),
    ("clang", "apt-get install -y clang lld wasi-libc libclang-rt-dev-wasm32"),
    ("wasm-ld", "apt-get install -y clang lld wasi-libc libclang-rt-dev-wasm32"),
];

/// The command that installs `program`.
pub(crate) fn install_hint(program: &str) -> String {
    INSTALL
        .iter()
        .find(|(p, _)| *p == program)
        .map(|(_, i)| (*i).to_string())
        .unwrap_or_else(|| format!("install {program} and put it on PATH"))
}

/// How many bytes of a failed tool's output [`ToolchainError::Failed`] keeps.
const OUTPUT_TAIL: usize = 6000;

/// A command line as the user could type it again.
pub(crate) fn command_line(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            s.push_str(&format!(" '{}'", a.replace('\'', "'\\''")));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

/// Run a tool to completion, without stdin, capturing its output. A program
/// that is not found is [`ToolchainError::Missing`] (with [`install_hint`]); a
/// non-zero exit is [`ToolchainError::Failed`] with the tail of its output.
pub(crate) fn run(cmd: &mut Command) -> Result<(), ToolchainError> {
    run_output(cmd).map(drop)
}

/// [`run`], returning what the tool printed on stdout.
pub(crate) fn run_output(cmd: &mut Command) -> Result<Vec<u8>, ToolchainError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let output = match cmd.stdin(Stdio::null()).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tool = Path::new(&program).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or(program);
            let install = install_hint(&tool);
            return Err(ToolchainError::Missing { tool, install });
        }
        Err(e) => return Err(ToolchainError::File { path: PathBuf::from(program), source: e }),
    };
    if output.status.success() {
        return Ok(output.stdout);
    }
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !stdout.trim().is_empty() {
        text.push_str(&stdout);
    }
    Err(ToolchainError::Failed { command: command_line(cmd), status: output.status, output: tail(&text, OUTPUT_TAIL) })
}

/// The last `max` bytes of `text` (cut at a line start when possible).
pub(crate) fn tail(text: &str, max: usize) -> String {
    let text = text.trim_end();
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let cut = &text[start..];
    let cut = cut.find('\n').map(|i| &cut[i + 1..]).unwrap_or(cut);
    format!("[...]\n{cut}")
}

/// Write `files` (`(path relative to dir, contents)`) under `dir`, creating
/// directories as needed.
pub(crate) fn write_files(dir: &Path, files: &[(&str, &str)]) -> Result<(), ToolchainError> {
    for (rel, text) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(ToolchainError::file(parent))?;
        }
        std::fs::write(&path, text).map_err(ToolchainError::file(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        dir
    }

    #[test]
    fn detect_reads_the_language_from_the_project_files_in_the_agreed_order() {
        let cases: &[(&[&str], Language)] = &[
            (&["Cargo.toml", "package.json", "x.py"], Language::Rust),
            (&["package.json", "x.c", "x.py"], Language::Js),
            (&["build.zig", "x.c"], Language::Zig),
            (&["task.zig", "x.py"], Language::Zig),
            (&["app.c", "helper.py"], Language::C),
            (&["tasks.py", "README.md"], Language::Python),
        ];
        for (files, lang) in cases {
            assert_eq!(detect(project(files).path()).unwrap(), *lang, "{files:?}");
        }
    }

    #[test]
    fn detect_refuses_a_directory_without_project_files_and_says_how_to_make_one() {
        let dir = project(&["README.md", ".py"]);
        let e = detect(dir.path()).unwrap_err();
        assert!(matches!(e, ToolchainError::NotAProject { .. }), "{e:?}");
        assert!(e.to_string().contains("celeriac new NAME --lang"), "{e}");
    }

    #[test]
    fn a_missing_tool_is_reported_with_the_command_that_installs_it() {
        let e = run(&mut Command::new("componentize-py-definitely-not-installed")).unwrap_err();
        assert!(matches!(e, ToolchainError::Missing { .. }), "{e:?}");
        let e = run(&mut Command::new("/nonexistent/componentize-py")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "componentize-py is not installed; install it with: pip install componentize-py==0.25.1"
        );
    }

    #[test]
    fn a_failing_tool_is_reported_with_its_command_line_and_output() {
        let e = run(Command::new("sh").args(["-c", "echo oops >&2; exit 3"])).unwrap_err();
        let ToolchainError::Failed { command, status, output } = &e else { panic!("{e:?}") };
        assert_eq!(command, "sh -c 'echo oops >&2; exit 3'");
        assert_eq!(status.code(), Some(3));
        assert_eq!(output, "oops");
    }

    #[test]
    fn project_names_must_be_usable_as_file_and_crate_names() {
        for ok in ["t", "my_tasks", "billing-invoices2"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "2fast", "a b", "../x", "a.b", "ü"] {
            assert!(matches!(check_name(bad), Err(ToolchainError::BadName { .. })), "{bad:?}");
        }
    }

    #[test]
    fn scaffold_refuses_a_directory_that_is_not_empty() {
        let dir = project(&["keep.txt"]);
        let e = scaffold(Language::Python, dir.path(), "t").unwrap_err();
        assert!(matches!(e, ToolchainError::Exists { .. }), "{e:?}");
        assert!(dir.path().join("keep.txt").exists());
    }

    #[test]
    fn scaffolded_projects_are_detected_as_their_language() {
        let root = tempfile::tempdir().unwrap();
        for lang in [Language::Rust, Language::Python] {
            let dir = root.path().join(lang.name());
            // Rust needs the SDK of this checkout, which the test build has.
            scaffold(lang, &dir, "t").unwrap();
            assert_eq!(detect(&dir).unwrap(), lang);
        }
    }

    #[test]
    fn a_build_that_yields_no_component_keeps_the_old_output_and_leaves_no_temporary_file() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out").join("p.wasm");
        let component = b"\0asm\x0d\x00\x01\x00";
        write_atomically(&out, |tmp| Ok(std::fs::write(tmp, component)?)).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), component);
        let e = write_atomically(&out, |tmp| Ok(std::fs::write(tmp, b"\0asm\x01\x00\x00\x00")?)).unwrap_err();
        assert!(matches!(e, ToolchainError::NotAComponent { .. }), "{e:?}");
        let e = write_atomically(&out, |tmp| {
            std::fs::write(tmp, b"half")?;
            Err(ToolchainError::NotYet { language: Language::Zig })
        })
        .unwrap_err();
        assert!(matches!(e, ToolchainError::NotYet { .. }), "{e:?}");
        assert_eq!(std::fs::read(&out).unwrap(), component, "the old component is untouched");
        let names: Vec<_> = std::fs::read_dir(out.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["p.wasm"]);
    }

    #[test]
    fn check_component_tells_a_component_from_a_core_module() {
        let dir = tempfile::tempdir().unwrap();
        let comp = dir.path().join("c.wasm");
        std::fs::write(&comp, b"\0asm\x0d\x00\x01\x00").unwrap();
        check_component(&comp).unwrap();
        let core = dir.path().join("m.wasm");
        std::fs::write(&core, b"\0asm\x01\x00\x00\x00").unwrap();
        assert!(matches!(check_component(&core), Err(ToolchainError::NotAComponent { .. })));
    }

    #[test]
    fn tail_keeps_the_end_of_long_output_from_a_line_start() {
        let text = (0..1000).map(|i| format!("line {i}")).collect::<Vec<_>>().join("\n");
        let t = tail(&text, 100);
        assert!(t.starts_with("[...]\nline "), "{t}");
        assert!(t.ends_with("line 999"));
        assert!(t.len() < 120);
        assert_eq!(tail("short\n", 100), "short");
    }
}
