//! The `celeriac` command.

fn main() -> std::process::ExitCode {
    celeriac::cli::main()
}
