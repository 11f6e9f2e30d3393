//! The `celeriac` command.

/// mimalloc: the worker allocates and frees many small buffers per task
/// (messages, JSON values); glibc's malloc cost ~15% of its CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    celeriac::cli::main()
}
