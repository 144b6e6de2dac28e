//! Typed errors of the exporter; each names the chunk, layer, tensor or file involved.

use std::path::PathBuf;

/// Everything that can go wrong while exporting a chunk set.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    #[error(transparent)]
    Checkpoint(#[from] gemma4::Error),
    #[error("tensor `{tensor}`: expected shape {expected:?}, found {found:?}")]
    Shape {
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("chunk {chunk}: building the MIL graph failed: {source}")]
    Mil {
        chunk: String,
        #[source]
        source: Box<mil::MilError>,
    },
    #[error("chunk {chunk}: the emitted program does not validate: {source}")]
    Invalid {
        chunk: String,
        #[source]
        source: Box<mil::validate::ValidationError>,
    },
    #[error("palettizing `{tensor}`: {source}")]
    Palettize {
        tensor: String,
        #[source]
        source: palettize::PalettizeError,
    },
    #[error("literal for `{tensor}`: {source}")]
    Value {
        tensor: String,
        #[source]
        source: mil::ValueError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    BadOption(String),
}

/// Result alias of this crate.
pub type Result<T, E = ExportError> = std::result::Result<T, E>;
