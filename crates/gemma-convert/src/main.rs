//! `gemma-convert`: command-line entry point (spec/cli-contract.md).
//!
//! A thin clap dispatcher, one module per command. Without a subcommand the flags are the build
//! command (`gemma-convert --model … --variant … --out …`). `--model` resolution lives in
//! [`model_source`]. Exit status: 0 success, 1 a check or an internal step failed, 2 bad input or
//! usage (the message names the file, tensor or flag), 130 / 143 interrupted by SIGINT / SIGTERM
//! (unfinished output removed). Errors are printed, never panicked.

mod bench;
mod build_cmd;
mod compile;
mod estimate;
mod exit;
mod fidelity;
mod inspect;
mod model_source;
mod parity;
mod placement;
mod publish;
mod run;
mod sets;
mod side_check;
mod stateful_cmd;
mod synth;
mod verify_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Convert Hugging Face Gemma 4 checkpoints into chunked Core ML packages, and check them.
///
/// Without a subcommand, builds a chunk set:
/// `gemma-convert --model DIR --variant swa4 --nbits 4 --ctx 2048 --out OUT`.
#[derive(Debug, Parser)]
#[command(
    name = "gemma-convert",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    build: build_cmd::BuildArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compare a chunk set's logits with a golden file or the reference forward.
    Parity(parity::ParityArgs),
    /// Measure decode tokens/s and milliseconds per chunk call.
    Bench(bench::BenchArgs),
    /// Check a chunk set against its manifest, its model_config.json and the contract (files,
    /// sha256, packages and their I/O, side files); nothing is run.
    Verify(verify_cmd::VerifyArgs),
    /// fp16 fidelity: many sequences vs an fp64 HF forward, paired with HF's own fp16.
    Fidelity(fidelity::FidelityArgs),
    /// Write the checkpoint of exactly the weights a set's graphs compute with.
    GraphWeights(fidelity::GraphWeightsArgs),
    /// Print a package's (or set's) functions, I/O, op counts and weight storage.
    Inspect(inspect::InspectArgs),
    /// Compare two chunk sets file by file (sha256).
    Compare(sets::CompareArgs),
    /// Join `--only` parts into one chunk set.
    Assemble(sets::AssembleArgs),
    /// Rebuild a set from the command recorded in its manifest.json and check it is identical.
    Rebuild(sets::RebuildArgs),
    /// Lay out a set as the repository the CoreML-LLM app's downloader fetches (swa/, prefill/,
    /// side files, hf_model/), with a per-file manifest of sizes and hashes.
    Publish(publish::PublishArgs),
    /// Run the reference forward on token ids and print the greedy continuation.
    Run(run::RunArgs),
    /// Compile a set's packages with Core ML's compiler into `.mlmodelc` beside them (macOS,
    /// feature `coreml`; exits 2 elsewhere).
    Compile(compile::CompileArgs),
    /// Write a random-weight checkpoint with the tensor shapes of a config (performance work).
    Synth(synth::SynthArgs),
}

/// SIGINT / SIGTERM: remove this run's staging directories and lock files (after a swap in
/// progress has finished), then exit with 128 + the signal number (130 / 143).
fn install_signal_handlers() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let removed = mlpackage::publish::interrupt_cleanup();
            let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
            eprintln!(
                "\ninterrupted ({name}){}",
                if removed.is_empty() {
                    String::new()
                } else {
                    format!(
                        ": removed the unfinished output {}",
                        removed
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            );
            std::process::exit(128 + sig);
        }
    });
}

/// The error chain as one line, each message once (a cause whose text the previous message
/// already ends with, e.g. an OS error quoted by its wrapper, is not repeated).
fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if line.ends_with(&s) || line.contains(&format!("{s}: ")) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&s);
    }
    line
}

fn main() -> ExitCode {
    install_signal_handlers();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // help / version go to stdout with status 0; usage errors to stderr with status 2
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let result = match &cli.command {
        None => build_cmd::run(&cli.build),
        Some(Command::Parity(a)) => parity::run(a),
        Some(Command::Bench(a)) => bench::run(a),
        Some(Command::Verify(a)) => verify_cmd::run(a),
        Some(Command::Fidelity(a)) => fidelity::run(a),
        Some(Command::GraphWeights(a)) => fidelity::graph_weights(a),
        Some(Command::Inspect(a)) => inspect::run(a),
        Some(Command::Compare(a)) => sets::compare(a),
        Some(Command::Assemble(a)) => sets::assemble(a),
        Some(Command::Rebuild(a)) => sets::rebuild(a),
        Some(Command::Publish(a)) => publish::run(a),
        Some(Command::Run(a)) => run::run(a),
        Some(Command::Compile(a)) => compile::run(a),
        Some(Command::Synth(a)) => synth::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_line(&e));
            ExitCode::from(exit::status_of(&e))
        }
    }
}
