//! Mapping of errors to exit statuses (spec/cli-contract.md): 2 for bad input or usage,
//! 1 for everything else (failed checks, internal failures).

use crate::model_source::SourceError;

/// Bad command-line input detected by a subcommand after parsing (message names the flag).
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {reason}")]
pub struct UsageError {
    /// The flag involved, e.g. `--ids`.
    pub flag: &'static str,
    /// What is wrong.
    pub reason: String,
}

/// A check that ran and failed (parity outside tolerance, sets that differ): exit status 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CheckFailed(pub String);

/// Exit status for an error chain.
pub fn status_of(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.is::<CheckFailed>() {
            return 1;
        }
        if cause.is::<UsageError>() || cause.is::<SourceError>() {
            return 2;
        }
        if let Some(x) = cause.downcast_ref::<gemma4_export::ExportError>() {
            // The exporter says whether the input or an internal step is at fault.
            return if x.is_bad_input() { 2 } else { 1 };
        }
        if let Some(x) = cause.downcast_ref::<mil_runtime::chunkset::ChunkSetError>() {
            use mil_runtime::chunkset::ChunkSetError as E;
            match x {
                E::Io { .. }
                | E::Contract(_)
                | E::SideFile { .. }
                | E::BadToken { .. }
                | E::Stateful(_)
                | E::ContextFull { .. } => return 2,
                _ => {}
            }
        }
        if let Some(c) = cause.downcast_ref::<chunkset::ContractError>()
            && c.is_malformed()
        {
            // A set or part given to read does not follow the contract.
            return 2;
        }
        if let Some(g) = cause.downcast_ref::<gemma4::Error>() {
            // A failing candle op is our problem, everything else is about the input.
            return if matches!(g, gemma4::Error::Candle { .. }) {
                1
            } else {
                2
            };
        }
    }
    1
}
