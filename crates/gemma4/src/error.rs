//! Typed errors of the `gemma4` crate.
//!
//! Every variant names what it is about: the config field, the file, the tensor, the layer or
//! the operation. Nothing in this crate panics on user input or file contents; all such problems
//! surface as one of these variants.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while reading a Gemma 4 checkpoint or running the reference.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened, read or mapped.
    #[error("{path}: {source}")]
    Io {
        /// File involved.
        path: PathBuf,
        /// Underlying OS error.
        source: std::io::Error,
    },

    /// A JSON file (config or shard index) is not valid JSON.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// File involved.
        path: PathBuf,
        /// Parser error.
        source: serde_json::Error,
    },

    /// A required config field is absent (or null).
    #[error("config field `{field}` is missing")]
    MissingField {
        /// Dotted field path, e.g. `text_config.hidden_size`.
        field: String,
    },

    /// A config field has a value that is not allowed.
    #[error("config field `{field}`: {reason}")]
    InvalidField {
        /// Dotted field path.
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// `layer_types` contains a string that is not a known attention type.
    #[error(
        "config field `layer_types[{index}]`: unknown layer type {value:?} (expected \"sliding_attention\" or \"full_attention\")"
    )]
    UnknownLayerType {
        /// Layer index.
        index: usize,
        /// The offending string.
        value: String,
    },

    /// The config asks for a feature this crate does not implement.
    #[error("unsupported: {feature}")]
    Unsupported {
        /// Which feature (and, where it helps, why).
        feature: String,
    },

    /// The checkpoint directory holds no weights file this crate knows.
    #[error("{dir}: no model.safetensors or model.safetensors.index.json found")]
    NoWeights {
        /// The checkpoint directory.
        dir: PathBuf,
    },

    /// The safetensors header of a file is unreadable (too short, bad length, bad JSON, bad entry).
    #[error("{file}: bad safetensors header: {reason}")]
    Header {
        /// File involved.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A tensor's data range lies outside the file, or disagrees with its shape and dtype.
    #[error("{file}: tensor `{tensor}`: {reason}")]
    DataOutOfBounds {
        /// File involved.
        file: PathBuf,
        /// Full tensor name as stored.
        tensor: String,
        /// What is wrong.
        reason: String,
    },

    /// A tensor the config requires is not in the checkpoint.
    #[error("{location}: missing tensor `{tensor}`")]
    MissingTensor {
        /// Checkpoint directory or file that was searched.
        location: PathBuf,
        /// Full tensor name (with prefix).
        tensor: String,
    },

    /// A tensor is present but has the wrong shape for the config.
    #[error("{file}: tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    WrongShape {
        /// File holding the tensor.
        file: PathBuf,
        /// Full tensor name.
        tensor: String,
        /// Shape the config implies.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },

    /// The same tensor name appears twice (in two shards, or index and shard disagree).
    #[error("{file}: tensor `{tensor}`: {reason}")]
    Inconsistent {
        /// File involved.
        file: PathBuf,
        /// Full tensor name.
        tensor: String,
        /// What disagrees.
        reason: String,
    },

    /// A loaded tensor holds NaN or infinity.
    #[error("{file}: tensor `{tensor}` holds a non-finite value ({value}) at flat index {index}")]
    NonFinite {
        /// File holding the tensor.
        file: PathBuf,
        /// Full tensor name.
        tensor: String,
        /// Flat element index of the first bad value.
        index: usize,
        /// The value, as text (`NaN`, `inf`, `-inf`).
        value: String,
    },

    /// A tensor's storage dtype cannot be converted to a float dtype.
    #[error(
        "{file}: tensor `{tensor}` has dtype {dtype}, which cannot be loaded (supported: F32, F16, BF16)"
    )]
    UnsupportedDtype {
        /// File holding the tensor.
        file: PathBuf,
        /// Full tensor name.
        tensor: String,
        /// Dtype string from the header.
        dtype: String,
    },

    /// A name passed to the checkpoint API is not in the inventory.
    #[error("no tensor `{tensor}` in checkpoint {dir}")]
    UnknownTensor {
        /// Checkpoint directory.
        dir: PathBuf,
        /// Name as asked (after the prefix).
        tensor: String,
    },

    /// Bad input to the reference forward (token ids, dtype, state of another model).
    #[error("bad input: {reason}")]
    BadInput {
        /// What is wrong.
        reason: String,
    },

    /// A candle operation failed.
    #[error("candle op `{op}` failed: {source}")]
    Candle {
        /// Which step (e.g. `layer 3 attention scores`).
        op: String,
        /// The candle error.
        source: candle_core::Error,
    },
}

/// Attach an operation name to a candle result.
pub(crate) trait CandleContext<T> {
    /// Wrap the candle error into [`Error::Candle`] naming `op`.
    fn ctx(self, op: impl FnOnce() -> String) -> Result<T>;
}

impl<T> CandleContext<T> for std::result::Result<T, candle_core::Error> {
    fn ctx(self, op: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Candle { op: op(), source })
    }
}
