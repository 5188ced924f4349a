//! The `sweep` program, exactly as `crates/cli/src/main.rs` builds it, for
//! the end-to-end tests in `it/`.

fn main() -> std::process::ExitCode {
    sweep_cli::main()
}
