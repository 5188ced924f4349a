//! The `sweep` binary: everything lives in the `sweep_cli` library.

fn main() -> std::process::ExitCode {
    sweep_cli::main()
}
