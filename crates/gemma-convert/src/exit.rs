//! Mapping of errors to exit statuses (spec/cli-contract.md): 2 for bad input or usage (the
//! output target refused or locked, a malformed checkpoint, config, golden, chunk set or package,
//! a model the exporter does not support), 1 for a check that failed and for internal failures
//! (an op failing inside a backend, a filesystem error while writing). SIGINT / SIGTERM exit with
//! 130 / 143 (see `main.rs`). `tests/exit_status.rs` drives every path through the binary.

use crate::model_source::SourceError;
use mil_runtime::RuntimeError;

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

/// Whether a runtime error loading or binding a package means the package (or the set around it)
/// is malformed or does not match — bad input — rather than a failure while computing.
fn runtime_input_error(e: &RuntimeError) -> bool {
    use RuntimeError as R;
    matches!(
        e,
        R::Load { .. }
            | R::UnsupportedOp { .. }
            | R::UndefinedValue { .. }
            | R::DuplicateValue { .. }
            | R::UndefinedOutput { .. }
            | R::UnsupportedInputType { .. }
            | R::UnknownFunction { .. }
            | R::MissingInput { .. }
            | R::UnexpectedInput { .. }
            | R::InputShape { .. }
            | R::InputDtype { .. }
            | R::InvalidTensor(_)
    )
}

/// Exit status for an error chain.
pub fn status_of(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.is::<CheckFailed>() {
            return 1;
        }
        if cause.is::<UsageError>() {
            return 2;
        }
        // a package that cannot be read (the CLI only reads packages it is given)
        if cause.is::<mlpackage::PackageError>()
            || cause.is::<mlpackage::DescriptionError>()
            || cause.is::<mlpackage::BundleError>()
        {
            return 2;
        }
        if let Some(p) = cause.downcast_ref::<crate::publish::PublishSetError>() {
            return if p.is_bad_input() { 2 } else { 1 };
        }
        if let Some(p) = cause.downcast_ref::<mlpackage::publish::PublishError>() {
            return if p.is_usage() { 2 } else { 1 };
        }
        if let Some(s) = cause.downcast_ref::<SourceError>() {
            return if s.is_bad_input() { 2 } else { 1 };
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
                | E::ContextFull { .. }
                | E::Unbound { .. }
                | E::Output { .. } => return 2,
                E::Chunk { source, .. } if runtime_input_error(source) => return 2,
                _ => {}
            }
        }
        if let Some(c) = cause.downcast_ref::<chunkset::ContractError>()
            && c.is_malformed()
        {
            // A set or part given to read does not follow the contract.
            return 2;
        }
        if let Some(r) = cause.downcast_ref::<RuntimeError>()
            && runtime_input_error(r)
        {
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
