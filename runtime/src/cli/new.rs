//! `celeriac new NAME --lang rust|python|js|c|zig`: a task project from the
//! language's template (issue #12), serving `NAME.add(x, y)` once built.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::toolchain::{self, Language};

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The project directory to create; its name becomes the component's (NAME.wasm serves NAME.add).
    #[arg(value_name = "NAME")]
    dir: PathBuf,
    /// The language of the tasks.
    #[arg(long, value_enum)]
    lang: Language,
}

pub fn new(a: NewArgs) -> anyhow::Result<ExitCode> {
    let name = toolchain::project_name(&a.dir)?;
    toolchain::scaffold(a.lang, &a.dir, &name)?;
    let dir = a.dir.display();
    eprintln!("created {dir}/, a {} task project serving {name}.add", a.lang);
    eprintln!("next: celeriac build {dir} && celeriac run -A {dir}/dist {name}.add 4 4");
    Ok(ExitCode::SUCCESS)
}
