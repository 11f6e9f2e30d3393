//! Building task components from a project in any supported language
//! (`celeriac new` / `celeriac build`).
//!
//! MINIMAL STAND-IN written on the `lang-native` branch so the C, Zig and JS
//! builders compile and can be tested: the real module (the `Language` enum,
//! detection, dispatch) comes from the `lang-python` branch and replaces this
//! file on merge. What is here follows the agreed shape: the shared
//! [`ToolchainError`] and the [`run`] helper, plus `detect`/`scaffold`/`build`
//! for the three languages of this branch.

pub(crate) mod c;
pub(crate) mod js;
pub(crate) mod zig;

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

/// Why a project could not be scaffolded or built.
#[derive(Debug, thiserror::Error)]
pub enum ToolchainError {
    /// A tool the build needs is not installed.
    #[error("{tool} is not installed; install it with: {install}")]
    Missing { tool: String, install: String },
    /// A tool ran and failed.
    #[error("`{command}` failed ({status}):\n{output}")]
    Failed { command: String, status: ExitStatus, output: String },
    /// The directory holds no project of a known language.
    #[error("{} is not a task project (no Cargo.toml, package.json, *.zig, *.c or *.py)", dir.display())]
    NotAProject { dir: PathBuf },
    /// Reading or writing files.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Generating bindings or encoding the component in process.
    #[error("component encoding failed: {0}")]
    Encode(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The languages of this branch (the merged enum has Rust and Python too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    Js,
    C,
    Zig,
}

/// The language of the project in `project`, from its files.
pub fn detect(project: &Path) -> Result<Language, ToolchainError> {
    if project.join("package.json").is_file() {
        return Ok(Language::Js);
    }
    let has_ext = |ext: &str| -> Result<bool, ToolchainError> {
        for entry in std::fs::read_dir(project)? {
            if entry?.path().extension().is_some_and(|e| e == ext) {
                return Ok(true);
            }
        }
        Ok(false)
    };
    if project.join("build.zig").is_file() || has_ext("zig")? {
        return Ok(Language::Zig);
    }
    if has_ext("c")? {
        return Ok(Language::C);
    }
    Err(ToolchainError::NotAProject { dir: project.to_path_buf() })
}

/// Writes the template of `lang` into `dir`, for a project called `name`.
pub fn scaffold(lang: Language, dir: &Path, name: &str) -> Result<(), ToolchainError> {
    std::fs::create_dir_all(dir)?;
    match lang {
        Language::Js => js::scaffold(dir, name),
        Language::C => c::scaffold(dir, name),
        Language::Zig => zig::scaffold(dir, name),
    }
}

/// Builds the component of `project` (language `lang`) into `out`.
pub fn build(lang: Language, project: &Path, out: &Path) -> Result<(), ToolchainError> {
    match lang {
        Language::Js => js::build(project, out),
        Language::C => c::build(project, out),
        Language::Zig => zig::build(project, out),
    }
}

/// How many bytes of a failed tool's stderr a [`ToolchainError::Failed`] keeps.
const OUTPUT_TAIL: usize = 4000;

/// Runs a tool to completion: a tool that is not there is [`ToolchainError::Missing`]
/// (with a generic install hint; callers that know better map it), a non-zero exit
/// [`ToolchainError::Failed`] with the tail of its stderr (and stdout).
pub(crate) fn run(cmd: &mut Command) -> Result<(), ToolchainError> {
    let command = format!("{cmd:?}").replace('"', "");
    let output = match cmd.output() {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let tool = cmd.get_program().to_string_lossy().into_owned();
            return Err(ToolchainError::Missing { install: format!("install `{tool}` and put it on the PATH"), tool });
        }
        Err(e) => return Err(e.into()),
    };
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    let start = text.len().saturating_sub(OUTPUT_TAIL);
    let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
    Err(ToolchainError::Failed { command, status: output.status, output: text[start..].to_string() })
}
