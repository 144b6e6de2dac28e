//! Typed errors of the exporter; each names the chunk, function, layer, tensor or file involved.
//!
//! Two classes matter to a caller ([`ExportError::is_bad_input`]): the input is at fault (the model
//! is unsupported, the checkpoint is broken, an option is out of range: the CLI exits 2), or an
//! internal step failed (building, optimising, writing or reading back a package: exit 1).

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
    /// An error while building or writing one chunk (and function): the context is added once,
    /// where emission or packaging of the chunk starts.
    #[error("chunk {chunk}{}: {source}", function.as_deref().map(|f| format!(", function {f}")).unwrap_or_default())]
    InChunk {
        chunk: String,
        function: Option<String>,
        #[source]
        source: Box<ExportError>,
    },
    #[error("building the MIL graph: {0}")]
    Mil(Box<mil::MilError>),
    #[error("the program does not validate: {0}")]
    Invalid(Box<mil::validate::ValidationError>),
    #[error(transparent)]
    Pass(#[from] mil::passes::PassError),
    #[error("model description: {0}")]
    Description(#[from] mlpackage::DescriptionError),
    #[error(transparent)]
    Package(#[from] mlpackage::PackageError),
    #[error(transparent)]
    Bundle(Box<mlpackage::BundleError>),
    #[error(transparent)]
    Contract(#[from] chunkset::ContractError),
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
    /// Publishing the output (target guard, lock, swap).
    #[error(transparent)]
    Publish(#[from] mlpackage::publish::PublishError),
    /// The model uses something the exporter does not convert (yet).
    #[error("{0}")]
    Unsupported(String),
    /// A build option or its value is out of range.
    #[error("{0}")]
    BadOption(String),
    /// An internal step broke one of its own invariants (a bug, not the input).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<mlpackage::BundleError> for ExportError {
    fn from(e: mlpackage::BundleError) -> Self {
        ExportError::Bundle(Box::new(e))
    }
}

impl From<mil::MilError> for ExportError {
    fn from(e: mil::MilError) -> ExportError {
        ExportError::Mil(Box::new(e))
    }
}

impl From<mil::validate::ValidationError> for ExportError {
    fn from(e: mil::validate::ValidationError) -> ExportError {
        ExportError::Invalid(Box::new(e))
    }
}

impl ExportError {
    /// Add the chunk (and function) this error happened in.
    pub fn in_chunk(self, chunk: &str, function: Option<&str>) -> ExportError {
        ExportError::InChunk {
            chunk: chunk.to_string(),
            function: function.map(str::to_string),
            source: Box::new(self),
        }
    }

    /// The error behind the chunk context.
    pub fn root(&self) -> &ExportError {
        match self {
            ExportError::InChunk { source, .. } => source.root(),
            e => e,
        }
    }

    /// True if the input is at fault — the model is unsupported, the checkpoint or a set given to
    /// read is malformed, an option is out of range — rather than an internal step.
    pub fn is_bad_input(&self) -> bool {
        match self.root() {
            ExportError::Plan(_)
            | ExportError::Shape { .. }
            | ExportError::Unsupported(_)
            | ExportError::BadOption(_) => true,
            // A failing candle op is our problem, everything else is about the checkpoint.
            ExportError::Checkpoint(g) => !matches!(g, gemma4::Error::Candle { .. }),
            ExportError::Contract(c) => c.is_malformed(),
            // a refused or locked output target; I/O failures while writing are not the input
            ExportError::Publish(p) => p.is_usage(),
            _ => false,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = ExportError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_or_an_internal_step_is_at_fault_through_the_chunk_context() {
        let shape = ExportError::Shape {
            tensor: "w".into(),
            expected: vec![2],
            found: vec![3],
        };
        let e = shape.in_chunk("chunk2", Some("decode_q1"));
        assert_eq!(
            e.to_string(),
            "chunk chunk2, function decode_q1: tensor `w`: expected shape [2], found [3]"
        );
        assert!(e.is_bad_input());
        assert!(ExportError::Unsupported("attention_k_eq_v".into()).is_bad_input());
        let internal =
            ExportError::Internal("output `x` was not produced".into()).in_chunk("c", None);
        assert_eq!(
            internal.to_string(),
            "chunk c: internal error: output `x` was not produced"
        );
        assert!(!internal.is_bad_input());
        let mil = ExportError::from(mil::MilError::Argument {
            op: "concat".into(),
            name: "x".into(),
            msg: "bad".into(),
        });
        assert!(!mil.in_chunk("c", Some("verify_qK")).is_bad_input());
    }
}
