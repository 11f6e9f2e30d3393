//! Rust task projects: a standalone Cargo crate (`cdylib`) using `celeriac-sdk`,
//! built with `cargo build --release --target wasm32-wasip2`, which yields a
//! component directly.
//!
//! The SDK is not published on crates.io, so the template depends on it by
//! path: the `sdk/` directory named by `CELERIAC_SDK`, else the one of the
//! checkout this binary was built from (when it still exists). Its other
//! dependencies (wit-bindgen, serde, ...) come from crates.io.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{ToolchainError, run_output, write_files};

const CARGO_TOML: &str = include_str!("../../../templates/rust/Cargo.toml");
const LIB_RS: &str = include_str!("../../../templates/rust/src/lib.rs");
const GITIGNORE: &str = include_str!("../../../templates/rust/gitignore");

/// The Rust target whose output is a component.
const TARGET: &str = "wasm32-wasip2";

/// Where the Rust SDK is: `$CELERIAC_SDK`, else this checkout's `sdk/`.
fn sdk_dir() -> Result<PathBuf, ToolchainError> {
    let dir = match std::env::var_os("CELERIAC_SDK") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("sdk"),
    };
    match std::fs::canonicalize(&dir) {
        Ok(d) if d.join("Cargo.toml").is_file() => Ok(d),
        _ => Err(ToolchainError::SdkNotFound { tried: dir }),
    }
}

pub(crate) fn scaffold(dir: &Path, name: &str) -> Result<(), ToolchainError> {
    let sdk = sdk_dir()?;
    // A TOML basic string: backslashes and quotes escaped.
    let sdk = sdk.to_string_lossy().replace('\\', "\\\\").replace('"', "\\\"");
    let fill = |t: &str| t.replace("{{name}}", name).replace("{{sdk}}", &sdk);
    write_files(dir, &[("Cargo.toml", &fill(CARGO_TOML)), ("src/lib.rs", &fill(LIB_RS)), (".gitignore", GITIGNORE)])
}

pub(crate) fn build(project: &Path, out: &Path) -> Result<(), ToolchainError> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(project).args([
        "build",
        "--release",
        "--target",
        TARGET,
        "--message-format=json-render-diagnostics",
        "--color=never",
    ]);
    let stdout = match run_output(&mut cmd) {
        Err(ToolchainError::Failed { output, .. }) if target_missing(&output) => {
            return Err(ToolchainError::Missing {
                tool: format!("the Rust target {TARGET}"),
                install: format!("rustup target add {TARGET}"),
            });
        }
        other => other?,
    };
    let wasm = built_component(&stdout).ok_or_else(|| ToolchainError::NoOutput {
        command: super::command_line(&cmd),
        detail: "cargo reported no .wasm artifact (is the crate a `cdylib` with `crate-type = [\"cdylib\"]`?)".into(),
    })?;
    std::fs::copy(&wasm, out).map_err(ToolchainError::file(&wasm))?;
    Ok(())
}

/// Whether cargo failed because the wasm target is not installed.
fn target_missing(output: &str) -> bool {
    output.contains("target may not be installed") || output.contains("can't find crate for `core`")
}

/// The `.wasm` file of the package's `cdylib`, from cargo's JSON messages.
fn built_component(stdout: &[u8]) -> Option<PathBuf> {
    let mut found = None;
    for line in stdout.split(|b| *b == b'\n') {
        let Ok(msg) = serde_json::from_slice::<serde_json::Value>(line) else { continue };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let is_cdylib = msg["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "cdylib"));
        if !is_cdylib {
            continue;
        }
        let files = msg["filenames"].as_array().into_iter().flatten().filter_map(|f| f.as_str());
        if let Some(f) = files.into_iter().find(|f| f.ends_with(".wasm")) {
            found = Some(PathBuf::from(f));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_component_is_found_in_cargos_json_messages() {
        let out =
            br#"{"reason":"compiler-artifact","target":{"kind":["proc-macro"],"name":"m"},"filenames":["/t/libm.so"]}
{"reason":"compiler-artifact","target":{"kind":["cdylib"],"name":"t"},"filenames":["/t/wasm32-wasip2/release/t.wasm"]}
{"reason":"build-finished","success":true}
"#;
        assert_eq!(built_component(out), Some(PathBuf::from("/t/wasm32-wasip2/release/t.wasm")));
        assert_eq!(built_component(b"{\"reason\":\"build-finished\"}\nnot json\n"), None);
    }

    #[test]
    fn the_template_depends_on_the_sdk_by_an_absolute_path() {
        let dir = tempfile::tempdir().unwrap();
        scaffold(dir.path(), "billing").unwrap();
        let toml = std::fs::read_to_string(dir.path().join("Cargo.toml")).unwrap();
        assert!(toml.contains("name = \"billing\""), "{toml}");
        let sdk = sdk_dir().unwrap();
        assert!(toml.contains(&format!("celeriac-sdk = {{ path = \"{}\" }}", sdk.display())), "{toml}");
        assert!(!toml.contains("{{"), "{toml}");
        assert!(std::fs::read_to_string(dir.path().join("src/lib.rs")).unwrap().contains("fn add("));
    }
}
