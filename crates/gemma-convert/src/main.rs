//! `gemma-convert`: command-line entry point (spec/cli-contract.md).
//!
//! A thin clap dispatcher: one module per subcommand, `--model` resolution in
//! [`model_source`]. Exit status: 0 success, 1 a check or an internal step failed, 2 bad input
//! or usage (the message names the file, tensor or flag). Errors are printed, never panicked.

mod exit;
mod model_source;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Convert Hugging Face Gemma 4 checkpoints into chunked Core ML packages, and check them.
#[derive(Debug, Parser)]
#[command(name = "gemma-convert", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the reference forward on token ids and print the greedy continuation.
    Run(run::RunArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // help / version go to stdout with status 0; usage errors to stderr with status 2
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let result = match cli.command {
        Command::Run(args) => run::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::status_of(&e))
        }
    }
}
