//! Histogram of distinct fp16 values of one group (counting sort over the 65 536 bit patterns).
//!
//! Input: fp16 bit patterns. Output: the distinct values in ascending numeric order, their counts
//! and bit patterns; `-0.0` and `+0.0` are one value (`+0.0`), as with `np.unique`. NaN / ±inf are
//! rejected (the caller turns the position into an error).
//!
//! Cost: a max-magnitude pass and a counting pass over the data, then a scan of the bit patterns
//! with magnitude `<= max` (negatives by descending magnitude, zero, positives), which also clears
//! the table so the scratch can be reused without re-zeroing 256 KiB per group.

use crate::fp16::{f16_bits_to_f64, is_non_finite};

/// Reusable per-worker scratch: a zeroed count table indexed by fp16 bit pattern, and the output
/// buffers (kept at their largest length so they are never re-zeroed; `len` marks the valid part).
pub(crate) struct HistScratch {
    counts: Vec<u32>,
    bits: Vec<u16>,
    values: Vec<f64>,
    weights: Vec<f64>,
}

impl HistScratch {
    /// A fresh, all-zero table.
    pub(crate) fn new() -> Self {
        HistScratch {
            counts: vec![0; 1 << 16],
            bits: Vec::new(),
            values: Vec::new(),
            weights: Vec::new(),
        }
    }
}

/// Distinct values of a group, ascending (borrowed from the scratch).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Histogram<'a> {
    /// fp16 bit patterns of the distinct values (ascending by value; zero is `+0.0`).
    pub bits: &'a [u16],
    /// The distinct values as `f64` (exact).
    pub values: &'a [f64],
    /// How many elements of the group have each value (exact integers in `f64`).
    pub counts: &'a [f64],
}

/// Build the histogram of `data` (fp16 bit patterns). On a NaN/inf returns `Err(position of the
/// first one)`. The count table is left all-zero in both cases.
pub(crate) fn build<'a>(
    data: &[u16],
    scratch: &'a mut HistScratch,
) -> Result<Histogram<'a>, usize> {
    // Largest magnitude bit pattern bounds the table range to scan (vectorisable pass).
    let max_mag = data.iter().fold(0u16, |m, b| m.max(b & 0x7fff));
    if max_mag >= 0x7c00 {
        return Err(data.iter().position(|b| is_non_finite(*b)).unwrap_or(0));
    }
    let HistScratch {
        counts,
        bits,
        values,
        weights,
    } = scratch;
    for &b in data {
        counts[b as usize] += 1;
    }
    // Branch-free compaction: every scanned pattern is written at `len`, which only advances
    // for non-zero counts (occupancy is ~50% near zero, so a branch would mispredict a lot).
    // Scan order: negatives by descending magnitude, zero (both signs), positives ascending.
    let cap = 2 * max_mag as usize + 2;
    if bits.len() < cap {
        bits.resize(cap, 0);
        values.resize(cap, 0.0);
        weights.resize(cap, 0.0);
    }
    let mut len = 0usize;
    let mut emit = |b: u16, c: u32| {
        bits[len] = b;
        values[len] = f16_bits_to_f64(b);
        weights[len] = f64::from(c);
        len += usize::from(c != 0);
    };
    for m in (1..=max_mag).rev() {
        let c = &mut counts[0x8000 | m as usize];
        emit(0x8000 | m, *c);
        *c = 0;
    }
    emit(0, counts[0] + counts[0x8000]);
    counts[0] = 0;
    counts[0x8000] = 0;
    for m in 1..=max_mag {
        let c = &mut counts[m as usize];
        emit(m, *c);
        *c = 0;
    }
    Ok(Histogram {
        bits: &bits[..len],
        values: &values[..len],
        counts: &weights[..len],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    #[test]
    fn distinct_sorted_with_signed_zero_merged() {
        let vals = [1.0f32, -2.0, 0.0, -0.0, 1.0, 0.5, -2.0, -2.0];
        let bits: Vec<u16> = vals.iter().map(|v| f16::from_f32(*v).to_bits()).collect();
        let mut s = HistScratch::new();
        let h = build(&bits, &mut s).unwrap();
        assert_eq!(h.values, vec![-2.0, 0.0, 0.5, 1.0]);
        assert_eq!(h.counts, vec![3.0, 2.0, 1.0, 2.0]);
        assert_eq!(h.counts.iter().sum::<f64>(), 8.0);
        let h2 = build(&bits[..2], &mut s).unwrap();
        assert_eq!(h2.values, vec![-2.0, 1.0]);
        assert_eq!(h2.bits, vec![0xc000, 0x3c00]);
    }

    #[test]
    fn every_finite_pattern_sorted() {
        let all: Vec<u16> = (0..=u16::MAX).filter(|b| !is_non_finite(*b)).collect();
        let mut s = HistScratch::new();
        let h = build(&all, &mut s).unwrap();
        assert_eq!(h.values.len(), all.len() - 1); // -0.0 merged into +0.0
        assert!(h.values.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(h.counts.iter().filter(|c| **c == 2.0).count(), 1);
        assert!(s.counts.iter().all(|c| *c == 0));
    }

    #[test]
    fn non_finite_reported_and_scratch_clean() {
        let bits = [0x3c00u16, 0x4000, 0x7e00, 0x3c00];
        let mut s = HistScratch::new();
        assert_eq!(build(&bits, &mut s).unwrap_err(), 2);
        assert!(s.counts.iter().all(|c| *c == 0));
        assert_eq!(build(&[0xfc00], &mut s).unwrap_err(), 0);
        assert!(build(&[], &mut s).unwrap().values.is_empty());
    }
}
