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

/// Exit status for an error chain.
pub fn status_of(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.is::<UsageError>() || cause.is::<SourceError>() {
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
