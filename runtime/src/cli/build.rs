//! `celeriac new NAME --lang L` and `celeriac build DIR [-o OUT.wasm]`.
//!
//! MINIMAL STAND-IN on the `lang-native` branch (C, Zig and JS only), so the
//! language tests can drive the same command shape; the real commands come
//! from the `lang-python` branch (`cli/new.rs`, `cli/build.rs`) on merge.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::toolchain::{self, Language};

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The project directory to create (its last component is the project name).
    pub name: PathBuf,
    /// The language of the task code.
    #[arg(long, value_enum)]
    pub lang: Language,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The project directory.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The component to write (default: DIR/out/tasks.wasm).
    #[arg(short, long, value_name = "OUT.wasm")]
    pub out: Option<PathBuf>,
}

pub fn new(args: NewArgs) -> anyhow::Result<()> {
    let name = args.name.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "tasks".into());
    toolchain::scaffold(args.lang, &args.name, &name)
        .with_context(|| format!("scaffolding {}", args.name.display()))?;
    println!(
        "created {} ({:?}); build it with: celeriac build {}",
        args.name.display(),
        args.lang,
        args.name.display()
    );
    Ok(())
}

pub fn build(args: BuildArgs) -> anyhow::Result<()> {
    let lang = toolchain::detect(&args.dir)?;
    let out = args.out.unwrap_or_else(|| args.dir.join("out").join("tasks.wasm"));
    toolchain::build(lang, &args.dir, &out)?;
    println!("built {}", out.display());
    Ok(())
}
