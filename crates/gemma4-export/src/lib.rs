//! `gemma4-export`: Gemma 4 text decoder → chunked Core ML MIL programs.
//!
//! * [`layout`]: the model facts planning needs ([`ModelLayout`]).
//! * [`plan`]: variants as data and the [`ChunkPlan`] (chunk boundaries, KV slot maps, I/O contract).

pub mod build;
pub mod bundle;
pub mod dequant;
pub mod emit;
pub mod error;
pub mod layout;
pub mod plan;
pub mod weights;

pub use error::{ExportError, Result};
pub use layout::{LayerInfo, LayerKind, ModelLayout};
pub use plan::{
    AttentionForm, CachePolicy, ChunkPlan, ChunkSpec, IoDType, IoTensor, KvSlot, PlanError,
    PlanOptions, Variant,
};
pub use weights::{Quant, WeightSource, Weights};
