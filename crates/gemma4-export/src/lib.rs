//! `gemma4-export`: Gemma 4 text decoder → chunked Core ML MIL programs.
//!
//! * [`layout`]: the model facts planning needs ([`ModelLayout`]).
//! * [`plan`]: the [`ChunkPlan`] of a variant (chunk boundaries, cache policies, KV slot maps; the
//!   I/O of every function follows through the contract's `chunkset::IoContract`).
//! * [`emit`]: MIL emission, one per-layer code path for S query positions (the stateful sets'
//!   functions in [`emit::stateful`]).
//! * [`weights`]: checkpoint tensors → dense or palettized literals, with the keep/palettize record.
//! * [`bundle`]: side files with `model_config.json`, and the chunk-set manifest, written through the
//!   contract's types (`chunkset`).
//! * [`build`]: the phase list of a conversion (`inventory → … → publish`), `--only` parts, assembly.
//! * [`numerics`]: numerics choices of the emitted graphs (RMSNorm gain, `layer_scalar`), measured
//!   with the fidelity benchmark.
//! * [`dequant`]: a checkpoint of exactly the weights a build's graphs use (parity of INT4 graphs).

pub mod build;
pub mod bundle;
pub mod dequant;
pub mod emit;
pub mod error;
pub mod layout;
pub mod numerics;
pub mod plan;
pub mod weights;

pub use chunkset::{Compression, GraphForms, LutConfig, NBits, Precision, Taps};
pub use emit::stateful::{PrefillRows, emit_stateful_with};
pub use emit::{DECODE_FN, LOGITS, PREFILL_FN, VERIFY_FN, emit_function};
pub use error::{ExportError, Result};
pub use layout::{LayerInfo, LayerKind, ModelLayout};
pub use numerics::{LayerScalar, NormGain, Numerics, Rope};
pub use plan::{
    AttentionForm, CachePolicy, ChunkPlan, ChunkSpec, FunctionKind, IoDType, IoTensor, KvSlot,
    PlanError, PlanOptions, PrefillKv, Variant,
};
pub use weights::{WeightSource, Weights};
