//! Row-wise comparison of two `[rows, width]` f32 arrays (logits or hidden states) and named
//! tolerances.
//!
//! Reports max / mean absolute difference and top-1 (argmax) agreement over rows. A non-finite
//! value on either side counts as an infinite difference, so a check can never pass on NaN.

use crate::error::{Error, Result};

/// Result of comparing two arrays row by row.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Rows compared.
    pub rows: usize,
    /// Largest |got − want| (∞ if any value is non-finite).
    pub max_abs: f32,
    /// Mean |got − want| over all elements.
    pub mean_abs: f64,
    /// Fraction of rows whose argmax agrees (0..1).
    pub top1_agreement: f64,
    /// Row holding `max_abs`.
    pub worst_row: usize,
}

/// Pass/fail thresholds for a [`Comparison`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Largest allowed max abs difference.
    pub max_abs: f32,
    /// Smallest allowed top-1 agreement.
    pub min_top1: f64,
}

impl Tolerance {
    /// fp32 ports against fp32 HF goldens (spec §5: atol 2e-3, all argmaxes agree).
    pub const FP32: Tolerance = Tolerance {
        max_abs: 2e-3,
        min_top1: 1.0,
    };
}

/// A comparison that broke its tolerance.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "{what}: max abs diff {max_abs} (limit {limit_abs}) at row {worst_row}, top-1 agreement {top1:.4} (limit {limit_top1})"
)]
pub struct ToleranceExceeded {
    /// What was compared.
    pub what: String,
    /// Observed max abs difference.
    pub max_abs: f32,
    /// Allowed max abs difference.
    pub limit_abs: f32,
    /// Observed top-1 agreement.
    pub top1: f64,
    /// Allowed top-1 agreement.
    pub limit_top1: f64,
    /// Row of the max difference.
    pub worst_row: usize,
}

impl Comparison {
    /// `Ok` if within `tol`, else the failure naming `what`.
    pub fn check(&self, what: &str, tol: Tolerance) -> std::result::Result<(), ToleranceExceeded> {
        if self.max_abs <= tol.max_abs && self.top1_agreement >= tol.min_top1 {
            Ok(())
        } else {
            Err(ToleranceExceeded {
                what: what.to_string(),
                max_abs: self.max_abs,
                limit_abs: tol.max_abs,
                top1: self.top1_agreement,
                limit_top1: tol.min_top1,
                worst_row: self.worst_row,
            })
        }
    }
}

fn argmax(row: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in row.iter().enumerate() {
        if !v.is_finite() {
            return None;
        }
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// Compare `got` with `want`, both row-major `[rows, width]`.
pub fn compare_rows(got: &[f32], want: &[f32], width: usize) -> Result<Comparison> {
    if width == 0 || got.len() != want.len() || !got.len().is_multiple_of(width) {
        return Err(Error::BadInput {
            reason: format!(
                "cannot compare arrays of {} and {} values with row width {width}",
                got.len(),
                want.len()
            ),
        });
    }
    let rows = got.len() / width;
    let mut max_abs = 0f32;
    let mut worst_row = 0;
    let mut sum = 0f64;
    let mut agree = 0usize;
    for r in 0..rows {
        let g = &got[r * width..(r + 1) * width];
        let w = &want[r * width..(r + 1) * width];
        for (a, b) in g.iter().zip(w) {
            let d = (a - b).abs();
            let d = if d.is_finite() { d } else { f32::INFINITY };
            if d > max_abs {
                max_abs = d;
                worst_row = r;
            }
            sum += f64::from(d);
        }
        if let (Some(x), Some(y)) = (argmax(g), argmax(w))
            && x == y
        {
            agree += 1;
        }
    }
    let n = got.len().max(1) as f64;
    Ok(Comparison {
        rows,
        max_abs,
        mean_abs: sum / n,
        top1_agreement: if rows == 0 {
            1.0
        } else {
            agree as f64 / rows as f64
        },
        worst_row,
    })
}
