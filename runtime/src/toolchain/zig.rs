//! Zig task projects: a placeholder until the Zig toolchain lands (helper
//! "lang-native" of issue #12 replaces this file). Scaffolding and building
//! both answer that this build of celeriac does not do Zig yet.

use std::path::Path;

use super::{Language, ToolchainError};

pub(crate) fn scaffold(_dir: &Path, _name: &str) -> Result<(), ToolchainError> {
    Err(ToolchainError::NotYet { language: Language::Zig })
}

pub(crate) fn build(_project: &Path, _out: &Path) -> Result<(), ToolchainError> {
    Err(ToolchainError::NotYet { language: Language::Zig })
}
