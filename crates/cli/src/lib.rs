//! `sweep`: submit hyperparameter sweeps, watch them, read their tables,
//! resume them. This crate owns the command line, logging and output
//! formats; the work is the scheduler's, the numbers are `sweep-results`'.
//!
//! The binary (`src/main.rs`) is one call to [`main`]; the library exists so
//! that the top-level `tests/` package can build the same program as its own
//! binary target and drive it end to end.

mod alloc;
mod args;
mod commands;
mod output;
mod progress;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::output::printable_lines;

/// Exit codes: 0 success, 1 a failure while working, 2 bad input (sweep
/// file, arguments), 128 + the signal's number when stopped by one (130
/// SIGINT, 143 SIGTERM, 129 SIGHUP).
enum Outcome {
    Success,
    Failure,
    Interrupted(u8),
}

/// Runs the `sweep` command line: parses the arguments, does the work,
/// and returns the process's exit code.
pub fn main() -> ExitCode {
    alloc::keep_freed_memory();
    let cli = Cli::parse();
    init_tracing(cli.global.verbose, cli.global.quiet);
    let result = match &cli.command {
        Command::Run(args) => commands::run::run(&cli.global, args),
        Command::Resume(args) => commands::run::resume(&cli.global, args),
        Command::Submit(args) => commands::worker::submit(&cli.global, args),
        Command::Worker(args) => commands::worker::worker(&cli.global, args),
        Command::Slurm(args) => commands::slurm::slurm(&cli.global, args),
        Command::Plan(args) => commands::plan::plan(&cli.global, args),
        Command::Split(args) => commands::split::split(&cli.global, args),
        Command::Table(args) => commands::table::table(&cli.global, args),
        Command::Best(args) => commands::best::best(&cli.global, args),
        Command::Show(args) => commands::table::show(&cli.global, args),
        Command::Status(args) => commands::table::status(&cli.global, args),
        Command::Plot(args) => commands::plot::plot(&cli.global, args),
        Command::Export(args) => commands::export::export(&cli.global, args),
        Command::Synth(args) => commands::synth::synth(args),
        Command::SynthFeatures(args) => commands::synth::synth_features(args),
        Command::Bench(args) => commands::bench::bench(args),
        Command::Serve(args) => commands::serve::serve(&cli.global, args),
        Command::Importance(args) => commands::importance::importance(&cli.global, args),
        Command::Schema => commands::plan::schema(),
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failure) => ExitCode::from(1),
        Ok(Outcome::Interrupted(code)) => ExitCode::from(code),
        Err(err) => {
            // A sweep file's problems come one per line; everything else is one line.
            if let Some(spec) = err.downcast_ref::<sweep_scheduler::SpecErrors>() {
                for e in &spec.0 {
                    eprintln!("error: {}", printable_lines(&e.to_string()));
                }
                return ExitCode::from(2);
            }
            if let Some(sweep_scheduler::Error::Spec(spec)) = err.downcast_ref::<sweep_scheduler::Error>() {
                for e in &spec.0 {
                    eprintln!("error: {}", printable_lines(&e.to_string()));
                }
                return ExitCode::from(2);
            }
            // Every bad image of a data set, one per line, found before any backbone work.
            let bad_images = match err.downcast_ref::<sweep_scheduler::Error>() {
                Some(sweep_scheduler::Error::Worker(sweep_worker::Error::BadImages(bad))) => Some(bad),
                _ => None,
            };
            if let Some(bad) = bad_images.filter(|b| b.images.len() > 1) {
                for line in bad.to_string().lines() {
                    eprintln!("error: {}", line.trim_start());
                }
                return ExitCode::from(1);
            }
            let bad_input =
                matches!(err.downcast_ref::<sweep_scheduler::Error>(), Some(sweep_scheduler::Error::TooManyJobs(_)))
                    || err.downcast_ref::<sweep_scheduler::TooManyJobs>().is_some();
            eprintln!("error: {}", printable_lines(&one_line(&err)));
            ExitCode::from(if bad_input { 2 } else { 1 })
        }
    }
}

/// The error and its causes on one line, without repeating a cause that the
/// message already quotes.
fn one_line(err: &anyhow::Error) -> String {
    let mut out = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !out.contains(&cause) {
            out.push_str(": ");
            out.push_str(&cause);
        }
    }
    out
}

fn init_tracing(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only on a terminal; lines go above any progress bars. The
    // formatter escapes ESC, BEL and the C1 controls in logged values
    // (tracing-subscriber >= 0.3.20), so a logged name cannot drive the terminal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(progress::LogWriter)
        .with_ansi(ansi)
        .with_target(false)
        .init();
}
