//! The `celeriac` command.

/// mimalloc: the worker allocates and frees many small buffers per task
/// (messages, JSON values); glibc's malloc cost ~15% of its CPU under load. Built without transparent
/// huge pages (`no_thp` in Cargo.toml), which would otherwise double the worker's resident memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    celeriac::cli::main()
}
