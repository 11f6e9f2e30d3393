//! `celeriac build [DIR] [-o OUT.wasm]`: build a task project into a component
//! with its language's toolchain (issue #12). The language comes from the
//! project's files (`--lang` overrides); OUT defaults to `DIR/dist/NAME.wasm`,
//! NAME being the project directory's name, so `celeriac run -A DIR/dist
//! NAME.add 4 4` runs it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;

use crate::toolchain::{self, Language};

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The project directory (default: the current directory).
    #[arg(value_name = "DIR", default_value = ".")]
    dir: PathBuf,
    /// The component to write (default: DIR/dist/NAME.wasm). Its file name sets the task prefix:
    /// out/t.wasm serves t.add.
    #[arg(short = 'o', long = "output", value_name = "OUT.wasm")]
    out: Option<PathBuf>,
    /// The project's language, instead of detecting it from its files.
    #[arg(long, value_enum)]
    lang: Option<Language>,
}

pub fn build(a: BuildArgs) -> anyhow::Result<ExitCode> {
    let lang = match a.lang {
        Some(l) => l,
        None => toolchain::detect(&a.dir)?,
    };
    let out = match a.out {
        Some(o) => o,
        None => a.dir.join("dist").join(format!("{}.wasm", toolchain::project_name(&a.dir)?)),
    };
    eprintln!("building {} ({lang}) into {}", a.dir.display(), out.display());
    let started = Instant::now();
    toolchain::build(lang, &a.dir, &out)?;
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    let prefix = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    eprintln!(
        "built {} ({}) in {:.1}s; it serves {prefix}.<task>: celeriac tasks -A {}",
        out.display(),
        bytesize::ByteSize::b(size).display().iec(),
        started.elapsed().as_secs_f64(),
        out.parent().filter(|p| !p.as_os_str().is_empty()).map(|p| p.display().to_string()).unwrap_or(".".into()),
    );
    Ok(ExitCode::SUCCESS)
}
