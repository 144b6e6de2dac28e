//! Weight compression for gemma-convert: exact k-means LUT palettization in the
//! `constexpr_lut_to_dense` (iOS18) layout, sub-byte index packing, per-row INT8 quantization and
//! error metrics. Pure numeric crate (no MIL, no candle).
//!
//! | module | what |
//! |---|---|
//! | [`lut`] | [`palettize_f16`] / [`palettize_f32`] / [`palettize_batch`]: per-group LUT fit along axis 0, packed indices, LUT tensor, dequantization |
//! | [`kmeans`] | exact weighted 1-D k-means (Lagrangian fast path, layered DP reference) |
//! | [`pack`] | LSB-first sub-byte packing (1–8 bits), byte-compatible with `weight.bin` |
//! | [`policy`] | coremltools' eligibility rules with serialisable keep reasons and manifest records |
//! | [`int8`] | per-row INT8 with fp16 row-max scales (embedding side files) |
//! | [`metrics`] | per-group and per-tensor MSE / SQNR / max error |
//! | [`fp16`] | correctly rounded f64 → fp16 |
//!
//! Architecture invariant: every result is bit-identical for any thread count — work is split
//! into independent groups / row blocks, and metrics are combined in a fixed order afterwards.
//!
//! ```
//! use half::f16;
//! use palettize::{palettize_f16, LutConfig};
//! let w: Vec<f16> = (0..64 * 64).map(|i| f16::from_f32(((i * 37) % 101) as f32 / 100.0)).collect();
//! let pool = palettize::thread_pool(2).unwrap();
//! let p = palettize_f16("w", &w, &[64, 64], &LutConfig::new(4, 32), Some(&pool)).unwrap();
//! assert_eq!(p.lut_shape, [2, 1, 16, 1]);
//! assert_eq!(p.indices_packed.len(), 64 * 64 / 2);
//! assert_eq!(p.dequantize("w").unwrap().len(), 64 * 64);
//! ```

pub mod error;
pub mod fp16;
mod histogram;
pub mod int8;
pub mod kmeans;
pub mod lut;
pub mod metrics;
pub mod pack;
pub mod policy;

pub use error::{PackError, PalettizeError};
pub use int8::{Int8Rows, quantize_rows, quantize_rows_into};
pub use lut::{
    Assignment, LutConfig, Palettized, WeightRef, dequantize, lut_shape, palettize_batch,
    palettize_f16, palettize_f32,
};
pub use metrics::{GroupStats, PalStats};
pub use policy::{Decision, KeepReason, Outcome, Policy, TensorRecord, decide, decide_named};

/// A rayon pool with `threads` workers (`0` = rayon's default, the number of CPUs).
pub fn thread_pool(threads: usize) -> Result<rayon::ThreadPool, PalettizeError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| PalettizeError::ThreadPool {
            threads,
            message: e.to_string(),
        })
}
