//! Per-row symmetric INT8 quantization for the embedding side files (reference runtime recipe).
//!
//! For each row `r` of a row-major `[rows, cols]` matrix:
//!
//! * `s = max_c |w[r, c]|` (in `f32`), stored as fp16 `s16 = fp16(s)` (round to nearest even) —
//!   the *max*, not divided by 127;
//! * `q[r, c] = clamp(round_half_even((w · 127) / f32(s16)), −127, 127)` in `f32` arithmetic
//!   (`np.round` semantics); the clamp matters when `s16` rounded below `s`;
//! * `s16 == 0` (all-zero row, or `s` below the smallest fp16 subnormal) → the row is all zeros;
//! * dequantization: `w ≈ q · (f32(s16) / 127)`.
//!
//! Non-finite inputs and rows whose max exceeds the fp16 range are errors. Work is split into
//! blocks of rows run as rayon tasks with no cross-row arithmetic, so the output is identical for
//! any thread count. [`quantize_rows_into`] writes into caller buffers so very large tables (the
//! 262144 × 8960 per-layer embedding) can be processed a slab at a time.

use crate::error::PalettizeError;
use half::f16;
use rayon::prelude::*;

/// Rows per rayon task.
const ROWS_PER_TASK: usize = 64;

/// An INT8 matrix with one fp16 scale (row max) per row.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Rows {
    /// Row count.
    pub rows: usize,
    /// Column count.
    pub cols: usize,
    /// Quantized values, row-major.
    pub q: Vec<i8>,
    /// Per-row max |w| as fp16.
    pub scales: Vec<f16>,
}

impl Int8Rows {
    /// Dequantize one row (`None` if `row >= rows`).
    pub fn dequantize_row(&self, row: usize) -> Option<Vec<f32>> {
        let s = *self.scales.get(row)?;
        let q = self.q.get(row * self.cols..(row + 1) * self.cols)?;
        let step = s.to_f32() / 127.0;
        Some(q.iter().map(|v| f32::from(*v) * step).collect())
    }

    /// Dequantize the whole matrix.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.q.len());
        for (row, s) in self.scales.iter().enumerate() {
            let step = s.to_f32() / 127.0;
            let q = &self.q[row * self.cols..(row + 1) * self.cols];
            out.extend(q.iter().map(|v| f32::from(*v) * step));
        }
        out
    }

    /// The quantized values as raw bytes (two's complement), as written to `*_q8.bin`.
    pub fn q_bytes(&self) -> Vec<u8> {
        self.q.iter().map(|v| *v as u8).collect()
    }

    /// The scales as little-endian fp16 bytes, as written to `*_scales.bin`.
    pub fn scale_bytes(&self) -> Vec<u8> {
        self.scales.iter().flat_map(|s| s.to_le_bytes()).collect()
    }
}

/// Element types accepted by the quantizer.
pub trait RowElem: Copy + Send + Sync {
    /// The value as `f32` (exact for fp16/bf16/f32).
    fn to_f32(self) -> f32;
}

impl RowElem for f32 {
    fn to_f32(self) -> f32 {
        self
    }
}

impl RowElem for f16 {
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

impl RowElem for half::bf16 {
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
}

/// Quantize a `[rows, cols]` matrix (see the module docs). `pool`: rayon pool to run in.
pub fn quantize_rows<T: RowElem>(
    name: &str,
    w: &[T],
    rows: usize,
    cols: usize,
    pool: Option<&rayon::ThreadPool>,
) -> Result<Int8Rows, PalettizeError> {
    let n = check_len(name, w.len(), rows, cols)?;
    let mut q = vec![0i8; n];
    let mut scales = vec![f16::ZERO; rows];
    quantize_rows_into(name, w, cols, &mut q, &mut scales, 0, pool)?;
    Ok(Int8Rows {
        rows,
        cols,
        q,
        scales,
    })
}

/// Quantize `w` (`scales.len()` rows of `cols`) into caller buffers; `first_row` only offsets
/// the row numbers in error messages (for slab-wise processing).
pub fn quantize_rows_into<T: RowElem>(
    name: &str,
    w: &[T],
    cols: usize,
    q: &mut [i8],
    scales: &mut [f16],
    first_row: usize,
    pool: Option<&rayon::ThreadPool>,
) -> Result<(), PalettizeError> {
    let rows = scales.len();
    let n = check_len(name, w.len(), rows, cols)?;
    if q.len() != n {
        return Err(PalettizeError::RowsMismatch {
            tensor: name.to_owned(),
            rows,
            cols,
            expected: n,
            actual: q.len(),
        });
    }
    if n == 0 {
        return Ok(());
    }
    let block = ROWS_PER_TASK * cols;
    let mut run = || {
        q.par_chunks_mut(block)
            .zip(scales.par_chunks_mut(ROWS_PER_TASK))
            .zip(w.par_chunks(block))
            .enumerate()
            .try_for_each(|(b, ((qb, sb), wb))| {
                for (r, ((qr, s), wr)) in qb
                    .chunks_mut(cols)
                    .zip(sb.iter_mut())
                    .zip(wb.chunks(cols))
                    .enumerate()
                {
                    let row = first_row + b * ROWS_PER_TASK + r;
                    *s = quantize_row(name, row, wr, qr)?;
                }
                Ok(())
            })
    };
    match pool {
        Some(p) => p.install(run),
        None => run(),
    }
}

fn check_len(name: &str, len: usize, rows: usize, cols: usize) -> Result<usize, PalettizeError> {
    match rows.checked_mul(cols) {
        Some(n) if n == len => Ok(n),
        other => Err(PalettizeError::RowsMismatch {
            tensor: name.to_owned(),
            rows,
            cols,
            expected: other.unwrap_or(usize::MAX),
            actual: len,
        }),
    }
}

fn quantize_row<T: RowElem>(
    name: &str,
    row: usize,
    w: &[T],
    q: &mut [i8],
) -> Result<f16, PalettizeError> {
    let mut max = 0f32;
    for v in w {
        let a = v.to_f32().abs();
        if !a.is_finite() {
            return Err(PalettizeError::NonFiniteRow {
                tensor: name.to_owned(),
                row,
            });
        }
        max = max.max(a);
    }
    let s16 = f16::from_f32(max);
    if !s16.is_finite() {
        return Err(PalettizeError::ScaleOverflow {
            tensor: name.to_owned(),
            row,
            max_abs: max,
        });
    }
    let s = s16.to_f32();
    if s == 0.0 {
        q.fill(0);
        return Ok(f16::ZERO);
    }
    for (o, v) in q.iter_mut().zip(w) {
        let x = round_half_even((v.to_f32() * 127.0) / s);
        *o = x.clamp(-127.0, 127.0) as i8;
    }
    Ok(s16)
}

/// `f32::round_ties_even` without the libm call it becomes on baseline x86-64: adding and
/// subtracting 1.5·2^23 rounds to an integer in the default (nearest-even) mode for
/// `|x| < 2^22`; larger values are clamped by the caller anyway.
#[inline]
fn round_half_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    if x.abs() < 4_194_304.0 {
        (x + MAGIC) - MAGIC
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_by_hand() {
        let w = [0.5f32, -1.0, 0.25, 0.0, /* row 1 */ 0.0, 0.0, 0.0, 0.0];
        let r = quantize_rows("t", &w, 2, 4, None).unwrap();
        assert_eq!(r.scales, [f16::from_f32(1.0), f16::ZERO]);
        // 0.5*127 = 63.5 -> 64 (ties to even), 0.25*127 = 31.75 -> 32
        assert_eq!(r.q, [64, -127, 32, 0, 0, 0, 0, 0]);
        assert_eq!(r.dequantize_row(0).unwrap()[1], -1.0);
        assert_eq!(r.dequantize()[4..], [0.0; 4]);
        assert_eq!(r.q_bytes()[1], 0x81);
        assert_eq!(r.scale_bytes(), [0x00, 0x3c, 0x00, 0x00]);
    }

    #[test]
    fn magic_rounding_matches_std() {
        let mut x = -300.0f32;
        while x < 300.0 {
            assert_eq!(round_half_even(x), x.round_ties_even(), "{x}");
            x += 0.125;
        }
        for x in [
            0.5f32,
            1.5,
            2.5,
            -0.5,
            -2.5,
            126.5,
            0.49999997,
            1e7,
            -1e7,
            4_194_303.5,
        ] {
            assert_eq!(round_half_even(x), x.round_ties_even(), "{x}");
        }
    }

    #[test]
    fn clamp_when_scale_rounds_down() {
        // 1.0004883 (= 1 + 2^-11) rounds to fp16 1.0 (tie to even): w·127/s > 127 -> clamp.
        let m = 1.0f32 + 2f32.powi(-11);
        let r = quantize_rows("t", &[m, -m, 0.1], 1, 3, None).unwrap();
        assert_eq!(r.scales[0], f16::from_f32(1.0));
        assert_eq!(r.q, [127, -127, 13]);
    }

    #[test]
    fn errors_name_tensor_and_row() {
        let e = quantize_rows("emb", &[1.0f32, f32::NAN, 0.0, 0.0], 2, 2, None).unwrap_err();
        assert_eq!(
            e,
            PalettizeError::NonFiniteRow {
                tensor: "emb".into(),
                row: 0
            }
        );
        assert!(e.to_string().contains("emb"));
        let e = quantize_rows("emb", &[1.0f32, 1e6], 1, 2, None).unwrap_err();
        assert!(matches!(e, PalettizeError::ScaleOverflow { row: 0, .. }));
        assert!(quantize_rows("emb", &[1.0f32; 5], 2, 2, None).is_err());
    }
}
