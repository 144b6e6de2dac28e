//! `gemma4`: the Gemma 4 text decoder on the Rust side of gemma-convert.
//!
//! * [`config`]: `config.json` in both serialisations → validated [`Gemma4Config`] with
//!   per-layer accessors (layer type, head dim, KV heads, MLP width, KV source, RoPE).
//! * [`layout`]: the tensor names and shapes a checkpoint must hold.
//! * [`checkpoint`]: inventory from safetensors headers (single file or sharded), prefix
//!   detection, shape checks, lazy mmap loading one tensor at a time.
//! * [`rope`]: HF-exact inverse frequencies and cos/sin tables per layer type.
//! * [`reference`]: our candle implementation of spec/gemma4-text.md: prefill and cached decode
//!   with explicit KV state and per-layer taps.
//! * [`golden`], [`compare`]: HF golden files and row-wise logit comparison with tolerances.
//!
//! Architecture invariant: this crate knows nothing about MIL or Core ML packages; the exporter
//! and the interpreter are checked against it (and against HF goldens) independently.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod compare;
pub mod config;
mod error;
pub mod golden;
pub mod layout;
pub mod reference;
pub mod rope;
pub mod st;

pub use candle_core::{DType, Device, Tensor};
pub use checkpoint::Checkpoint;
pub use compare::{Comparison, Tolerance, ToleranceExceeded, compare_rows};
pub use config::{Gemma4Config, KvSource, LayerConfig, LayerType, RopeParams, RopeType};
pub use error::{Error, Result};
pub use golden::Golden;
pub use reference::{KvState, Reference, Taps};
pub use rope::RopeTable;
