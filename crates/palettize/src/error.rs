//! Typed errors of the palettize crate.
//!
//! Every variant that concerns a weight carries the tensor name given by the caller, so a message
//! such as `tensor "model.layers.0.mlp.up_proj.weight": ...` can be printed as is.

use thiserror::Error;

/// Errors of LUT fitting, int8 quantization and thread-pool setup.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum PalettizeError {
    /// `nbits` outside 1..=8.
    #[error("tensor {tensor:?}: unsupported nbits {nbits} (expected 1..=8)")]
    UnsupportedNbits {
        /// Tensor name given by the caller.
        tensor: String,
        /// The rejected bit width.
        nbits: u8,
    },
    /// The data length does not match the product of the shape.
    #[error("tensor {tensor:?}: shape {shape:?} has {expected} elements but {actual} were given")]
    ShapeMismatch {
        /// Tensor name given by the caller.
        tensor: String,
        /// Declared shape.
        shape: Vec<usize>,
        /// Product of `shape`.
        expected: usize,
        /// Length of the data slice.
        actual: usize,
    },
    /// Rank-0 tensors, zero-sized dimensions or an element count that overflows `usize`.
    #[error("tensor {tensor:?}: shape {shape:?} cannot be palettized ({why})")]
    BadShape {
        /// Tensor name given by the caller.
        tensor: String,
        /// Declared shape.
        shape: Vec<usize>,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The output-channel dimension is not a multiple of the group size.
    #[error(
        "tensor {tensor:?}: output-channel dim {channels} is not divisible by group_size {group_size}"
    )]
    GroupSizeMismatch {
        /// Tensor name given by the caller.
        tensor: String,
        /// Size of axis 0.
        channels: usize,
        /// Requested output channels per LUT.
        group_size: usize,
    },
    /// A NaN or infinity was found (k-means is undefined on them).
    #[error("tensor {tensor:?}: non-finite value (fp16 bits {bits:#06x}) at flat index {index}")]
    NonFinite {
        /// Tensor name given by the caller.
        tensor: String,
        /// Row-major flat index of the first offending element.
        index: usize,
        /// Its fp16 bit pattern.
        bits: u16,
    },
    /// int8 row quantization: `rows * cols` does not match the data length.
    #[error(
        "tensor {tensor:?}: {rows} rows x {cols} cols = {expected} elements but {actual} given"
    )]
    RowsMismatch {
        /// Tensor name given by the caller.
        tensor: String,
        /// Declared rows.
        rows: usize,
        /// Declared columns.
        cols: usize,
        /// `rows * cols` (saturating).
        expected: usize,
        /// Length of the data slice.
        actual: usize,
    },
    /// int8 row quantization of a row containing NaN or infinity.
    #[error("tensor {tensor:?}: non-finite value in row {row}")]
    NonFiniteRow {
        /// Tensor name given by the caller.
        tensor: String,
        /// Offending row.
        row: usize,
    },
    /// int8 row quantization: the row max does not fit in fp16.
    #[error("tensor {tensor:?}: row {row} max |w| = {max_abs} overflows the fp16 scale")]
    ScaleOverflow {
        /// Tensor name given by the caller.
        tensor: String,
        /// Offending row.
        row: usize,
        /// The row's max |w|.
        max_abs: f32,
    },
    /// Dequantization inputs are inconsistent (wrong LUT length, index out of range, ...).
    #[error("tensor {tensor:?}: inconsistent palettized data: {why}")]
    Inconsistent {
        /// Tensor name given by the caller.
        tensor: String,
        /// Description of the inconsistency.
        why: String,
    },
    /// Sub-byte packing error.
    #[error("tensor {tensor:?}: {source}")]
    Pack {
        /// Tensor name given by the caller.
        tensor: String,
        /// Underlying packing error.
        #[source]
        source: PackError,
    },
    /// Invalid input to [`crate::kmeans::cluster`].
    #[error("invalid k-means input: {why}")]
    KMeansInput {
        /// What is wrong.
        why: String,
    },
    /// rayon could not build a thread pool.
    #[error("cannot build a rayon thread pool with {threads} threads: {message}")]
    ThreadPool {
        /// Requested thread count.
        threads: usize,
        /// rayon's message.
        message: String,
    },
}

/// Errors of [`crate::pack`].
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PackError {
    /// `nbits` outside 1..=8.
    #[error("unsupported bit width {nbits} (expected 1..=8)")]
    UnsupportedNbits {
        /// The rejected bit width.
        nbits: u8,
    },
    /// A value does not fit in `nbits` bits.
    #[error("value {value} at index {index} does not fit in {nbits} bits")]
    ValueTooLarge {
        /// Flat index of the value.
        index: usize,
        /// The value.
        value: u8,
        /// Bit width.
        nbits: u8,
    },
    /// The packed buffer has the wrong length for `n` elements.
    #[error("{n} elements of {nbits} bits need {expected} bytes, got {actual}")]
    WrongLength {
        /// Element count.
        n: usize,
        /// Bit width.
        nbits: u8,
        /// `ceil(n * nbits / 8)`.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
}
