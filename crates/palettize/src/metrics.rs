//! Error metrics of a palettized (or quantized) weight: per group, then per tensor.
//!
//! All sums are `f64`, taken over the distinct fp16 values of a group in ascending order (weighted
//! by their counts) — so they do not depend on element order or thread count. Tensor totals
//! combine the groups in group order. Definitions (`w` original fp16 value, `ŵ` dequantized):
//!
//! * `sse = Σ (ŵ − w)²`, `mse = sse / elements`;
//! * `signal = Σ w²` (signal energy);
//! * `sqnr_db = 10·log10(signal / sse)` (`+inf` when lossless, reported as `None` in summaries);
//! * `max_abs_error = max |ŵ − w|`.

use serde::{Deserialize, Serialize};

/// Error statistics of one LUT group.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GroupStats {
    /// Elements in the group.
    pub elements: u64,
    /// Distinct fp16 values in the group (`-0.0` counted as `+0.0`).
    pub distinct: u32,
    /// LUT entries actually used by the fit (`min(2^nbits, distinct)`).
    pub clusters: u32,
    /// Sum of squared errors against the fp16 input.
    pub sse: f64,
    /// Sum of squared input values.
    pub signal: f64,
    /// Largest absolute error.
    pub max_abs_error: f64,
}

impl GroupStats {
    /// Mean squared error (`0` for an empty group).
    pub fn mse(&self) -> f64 {
        if self.elements == 0 {
            0.0
        } else {
            self.sse / self.elements as f64
        }
    }

    /// Signal-to-quantization-noise ratio in dB (`+inf` if lossless).
    pub fn sqnr_db(&self) -> f64 {
        sqnr_db(self.signal, self.sse)
    }
}

/// Error statistics of one palettized tensor (groups in order plus combined totals).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PalStats {
    /// Per-group statistics, group 0 first.
    pub groups: Vec<GroupStats>,
    /// Total elements.
    pub elements: u64,
    /// Total squared error (groups summed in order).
    pub sse: f64,
    /// Total signal energy.
    pub signal: f64,
    /// Largest absolute error over all groups.
    pub max_abs_error: f64,
}

impl PalStats {
    /// Combine group statistics in the given (group) order.
    pub fn from_groups(groups: Vec<GroupStats>) -> Self {
        let mut elements = 0u64;
        let mut sse = 0.0;
        let mut signal = 0.0;
        let mut max_abs_error: f64 = 0.0;
        for g in &groups {
            elements += g.elements;
            sse += g.sse;
            signal += g.signal;
            max_abs_error = max_abs_error.max(g.max_abs_error);
        }
        PalStats {
            groups,
            elements,
            sse,
            signal,
            max_abs_error,
        }
    }

    /// Mean squared error over the tensor.
    pub fn mse(&self) -> f64 {
        if self.elements == 0 {
            0.0
        } else {
            self.sse / self.elements as f64
        }
    }

    /// SQNR in dB over the tensor (`+inf` if lossless).
    pub fn sqnr_db(&self) -> f64 {
        sqnr_db(self.signal, self.sse)
    }

    /// Largest per-group MSE.
    pub fn worst_group_mse(&self) -> f64 {
        self.groups.iter().map(GroupStats::mse).fold(0.0, f64::max)
    }
}

/// `10·log10(signal / noise)`; `+inf` when `noise == 0`.
pub fn sqnr_db(signal: f64, noise: f64) -> f64 {
    if noise <= 0.0 {
        f64::INFINITY
    } else {
        10.0 * (signal / noise).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combine_in_order() {
        let g = |elements, sse, signal, max| GroupStats {
            elements,
            distinct: 3,
            clusters: 2,
            sse,
            signal,
            max_abs_error: max,
        };
        let s = PalStats::from_groups(vec![g(10, 1.0, 100.0, 0.5), g(30, 3.0, 300.0, 0.25)]);
        assert_eq!(s.elements, 40);
        assert_eq!(s.mse(), 0.1);
        assert!((s.sqnr_db() - 20.0).abs() < 1e-12);
        assert_eq!(s.max_abs_error, 0.5);
        assert_eq!(s.worst_group_mse(), 0.1);
        assert_eq!(g(0, 0.0, 0.0, 0.0).mse(), 0.0);
        assert!(g(4, 0.0, 1.0, 0.0).sqnr_db().is_infinite());
    }
}
