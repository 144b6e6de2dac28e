//! iOS18 weight decompression ops, evaluated once when a program is loaded.
//!
//! * `constexpr_lut_to_dense(indices, lut, vector_axis?)`: indices uint1/2/3/4/6/8 of shape
//!   [D_0 … D_{K−1}] (packed LSB-first), lut [G_0 … G_{K−1}, 2^bits, V] of fp16/fp32/int8/uint8.
//!   `out[i] = lut[i_0/(D_0/G_0), …, i_{K−1}/(D_{K−1}/G_{K−1}), indices[i], :]`. With V = 1 the
//!   output has the indices' shape; with V > 1 dimension `vector_axis` of the output is V times
//!   larger and each index expands to V consecutive values along it.
//! * `constexpr_blockwise_shift_scale(data, scale, offset?)`: data int4/uint4/int8/uint8/fp16/
//!   fp32, scale fp16/fp32 of the same rank with `data.shape[k] % scale.shape[k] == 0`, offset of
//!   the scale's shape (data dtype or float). `out = scale[blk]·(data − offset[blk])` with
//!   `blk_k = i_k / (data.shape[k]/scale.shape[k])`, computed in f32 and rounded once to the
//!   scale dtype.
//!
//! Outputs keep the LUT / scale dtype (an fp16 palettized weight expands to fp16, never f32).
//! Work is split over rows of the output with rayon (no cross-row arithmetic: deterministic).
//!
//! Not covered: `constexpr_sparse_to_dense`, `constexpr_sparse_blockwise_shift_scale`,
//! `constexpr_cast`, and the iOS16 versions of these ops.

use crate::error::KernelError;
use crate::tensor::Shared;
use crate::tensor::{Tensor, TensorData};
use half::f16;
use mil::{DType, TensorValue};
use rayon::prelude::*;

fn index_bits(d: DType) -> Option<usize> {
    match d {
        DType::U1 => Some(1),
        DType::U2 => Some(2),
        DType::U3 => Some(3),
        DType::U4 => Some(4),
        DType::U6 => Some(6),
        DType::U8 => Some(8),
        _ => None,
    }
}

/// Unpack `out.len()` values of `bits` bits starting at element `start` of an LSB-first stream.
fn unpack_into(bytes: &[u8], bits: usize, start: usize, out: &mut [u8]) {
    if bits == 8 {
        out.copy_from_slice(&bytes[start..start + out.len()]);
        return;
    }
    if bits == 4 && start.is_multiple_of(2) {
        // fast path: two nibbles per byte, low nibble first
        let src = &bytes[start / 2..];
        for (pair, &b) in out.chunks_mut(2).zip(src) {
            pair[0] = b & 0x0f;
            if let Some(hi) = pair.get_mut(1) {
                *hi = b >> 4;
            }
        }
        return;
    }
    let mask = (1u16 << bits) - 1;
    for (j, o) in out.iter_mut().enumerate() {
        let bit = (start + j) * bits;
        let (b, sh) = (bit / 8, bit % 8);
        let lo = u16::from(bytes.get(b).copied().unwrap_or(0));
        let hi = u16::from(bytes.get(b + 1).copied().unwrap_or(0));
        *o = (((lo | (hi << 8)) >> sh) & mask) as u8;
    }
}

fn raw<'a>(t: &'a TensorValue, param: &str) -> Result<&'a [u8], KernelError> {
    t.bytes()
        .map(|b| b.as_bytes())
        .ok_or_else(|| KernelError::bad(param, "expected a numeric tensor"))
}

/// Per-dimension block sizes `data.shape[k] / groups.shape[k]` (checked divisible).
fn block_sizes(dshape: &[usize], gshape: &[usize], param: &str) -> Result<Vec<usize>, KernelError> {
    if dshape.len() != gshape.len() {
        return Err(KernelError::bad(
            param,
            format!("rank of {gshape:?} does not match data {dshape:?}"),
        ));
    }
    dshape
        .iter()
        .zip(gshape)
        .map(|(&d, &g)| {
            if g == 0 || d % g != 0 {
                Err(KernelError::bad(
                    param,
                    format!("{gshape:?} does not divide data shape {dshape:?}"),
                ))
            } else {
                Ok(d / g)
            }
        })
        .collect()
}

/// The output seen as rows: trailing dims that hold a single group are merged into one row
/// (so a conv weight [O, I, 1, 1] has rows of I elements, not 1), the leading dims index rows.
struct RowView {
    lead: Vec<usize>,
    lead_blk: Vec<usize>,
    lead_groups: Vec<usize>,
    /// Elements per row.
    row: usize,
    /// Elements per group within a row.
    lblk: usize,
    /// Groups per row.
    row_groups: usize,
}

fn row_view(shape: &[usize], gshape: &[usize], blk: &[usize]) -> RowView {
    let k = shape.len();
    let t = (0..k).rev().take_while(|&d| gshape[d] == 1).count();
    let (lead_n, row, lblk, row_groups) = if t >= 1 || k == 0 {
        let row: usize = shape[k - t..].iter().product();
        (k - t, row, row.max(1), 1)
    } else {
        (k - 1, shape[k - 1], blk[k - 1].max(1), gshape[k - 1])
    };
    RowView {
        lead: shape[..lead_n].to_vec(),
        lead_blk: blk[..lead_n].to_vec(),
        lead_groups: gshape[..lead_n].to_vec(),
        row,
        lblk,
        row_groups,
    }
}

/// Flattened index (over the group shape) of the first group of row `r`.
fn row_group_base(r: usize, v: &RowView) -> usize {
    let mut rem = r;
    let mut gi = 0usize;
    let mut gstride = v.row_groups;
    for d in (0..v.lead.len()).rev() {
        let i = rem % v.lead[d];
        rem /= v.lead[d];
        gi += (i / v.lead_blk[d]) * gstride;
        gstride *= v.lead_groups[d];
    }
    gi
}

/// Fill an output of `n` elements row by row: `f(row_index, row_out)`; rows are batched into
/// parallel tasks of at least ~16 K elements.
fn rows_par<T: Send + Clone + Default>(
    n: usize,
    row: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) -> Vec<T> {
    let mut out = vec![T::default(); n];
    if n == 0 || row == 0 {
        return out;
    }
    let per_task = (16384 / row).max(1);
    out.par_chunks_mut(row * per_task)
        .enumerate()
        .for_each(|(t, chunk)| {
            for (i, o) in chunk.chunks_mut(row).enumerate() {
                f(t * per_task + i, o);
            }
        });
    out
}

#[allow(clippy::too_many_arguments)]
fn expand_lut<T: Copy + Send + Sync + Default>(
    lut: &[T],
    idx_bytes: &[u8],
    bits: usize,
    shape: &[usize],
    gshape: &[usize],
    blk: &[usize],
    vec: usize,
    vector_axis: usize,
) -> (Vec<T>, Vec<usize>) {
    let k = shape.len();
    let entries = 1usize << bits;
    if vec == 1 {
        let view = row_view(shape, gshape, blk);
        let n: usize = shape.iter().product();
        let out = rows_par(n, view.row, |r, o: &mut [T]| {
            let base = row_group_base(r, &view);
            let mut ix = vec![0u8; o.len()];
            unpack_into(idx_bytes, bits, r * view.row, &mut ix);
            // the group changes every `lblk` elements of the row
            for (c, (dst, src)) in o
                .chunks_mut(view.lblk)
                .zip(ix.chunks(view.lblk))
                .enumerate()
            {
                let table = &lut[(base + c) * entries..(base + c + 1) * entries];
                for (d, &i) in dst.iter_mut().zip(src) {
                    *d = table[usize::from(i)];
                }
            }
        });
        return (out, shape.to_vec());
    }
    // vector palettization: each index expands to `vec` values along `vector_axis`
    let mut oshape = shape.to_vec();
    oshape[vector_axis] *= vec;
    let ost = super::util::strides(&oshape);
    let n: usize = shape.iter().product();
    let mut ix = vec![0u8; n];
    unpack_into(idx_bytes, bits, 0, &mut ix);
    let mut out = vec![T::default(); n * vec];
    let gst = super::util::strides(gshape);
    let mut pos = vec![0usize; k];
    for &i in &ix {
        let mut g = 0usize;
        let mut o = 0usize;
        for d in 0..k {
            g += (pos[d] / blk[d]) * gst[d];
            let c = if d == vector_axis {
                pos[d] * vec
            } else {
                pos[d]
            };
            o += c * ost[d];
        }
        for v in 0..vec {
            out[o + v * ost[vector_axis]] = lut[(g * entries + usize::from(i)) * vec + v];
        }
        for d in (0..k).rev() {
            pos[d] += 1;
            if pos[d] < shape[d] {
                break;
            }
            pos[d] = 0;
        }
    }
    (out, oshape)
}

/// Evaluate `constexpr_lut_to_dense`.
pub fn lut_to_dense(
    indices: &TensorValue,
    lut: &TensorValue,
    vector_axis: Option<i64>,
) -> Result<Tensor, KernelError> {
    let bits = index_bits(indices.dtype()).ok_or_else(|| {
        KernelError::bad(
            "indices",
            format!("dtype {} is not uint1/2/3/4/6/8", indices.dtype()),
        )
    })?;
    let shape = indices.shape();
    let k = shape.len();
    let lshape = lut.shape();
    if lshape.len() != k + 2 {
        return Err(KernelError::bad(
            "lut",
            format!(
                "rank {} must be rank(indices) + 2 = {}",
                lshape.len(),
                k + 2
            ),
        ));
    }
    if lshape[k] != 1 << bits {
        return Err(KernelError::bad(
            "lut",
            format!(
                "has {} entries, {}-bit indices need {}",
                lshape[k],
                bits,
                1 << bits
            ),
        ));
    }
    let vec = lshape[k + 1];
    let gshape = &lshape[..k];
    let blk = block_sizes(&shape, gshape, "lut")?;
    let vaxis = if vec > 1 {
        let v = vector_axis.ok_or_else(|| KernelError::MissingParam("vector_axis".into()))?;
        super::util::norm_axis(v, k, "vector_axis")?
    } else {
        0
    };
    let ib = raw(indices, "indices")?;
    if ib.len() < (shape.iter().product::<usize>() * bits).div_ceil(8) {
        return Err(KernelError::bad("indices", "too few bytes"));
    }
    let lt = Tensor::from_value(lut).map_err(|e| KernelError::bad("lut", e.to_string()))?;
    let data = match lt.data() {
        TensorData::F16(l) => {
            let (v, s) = expand_lut(l, ib, bits, &shape, gshape, &blk, vec, vaxis);
            (TensorData::F16(Shared::new(v)), s)
        }
        TensorData::F32(l) => {
            let (v, s) = expand_lut(l, ib, bits, &shape, gshape, &blk, vec, vaxis);
            (TensorData::F32(Shared::new(v)), s)
        }
        TensorData::I8(l) => {
            let (v, s) = expand_lut(l, ib, bits, &shape, gshape, &blk, vec, vaxis);
            (TensorData::I8(Shared::new(v)), s)
        }
        TensorData::U8(l) => {
            let (v, s) = expand_lut(l, ib, bits, &shape, gshape, &blk, vec, vaxis);
            (TensorData::U8(Shared::new(v)), s)
        }
        _ => {
            return Err(KernelError::bad(
                "lut",
                format!("dtype {} is not fp16/fp32/int8/uint8", lut.dtype()),
            ));
        }
    };
    Ok(Tensor::from_parts(data.1, data.0))
}

/// Read `len` elements of a data tensor starting at `start` as f32 (sub-byte unpacked).
fn data_row(dtype: DType, bytes: &[u8], start: usize, out: &mut [f32], scratch: &mut [u8]) {
    match dtype {
        DType::I4 | DType::U4 => {
            unpack_into(bytes, 4, start, scratch);
            for (o, &u) in out.iter_mut().zip(scratch.iter()) {
                *o = if dtype == DType::I4 {
                    f32::from(((u << 4) as i8) >> 4)
                } else {
                    f32::from(u)
                };
            }
        }
        DType::I8 => {
            for (o, &b) in out.iter_mut().zip(&bytes[start..]) {
                *o = f32::from(b as i8);
            }
        }
        DType::U8 => {
            for (o, &b) in out.iter_mut().zip(&bytes[start..]) {
                *o = f32::from(b);
            }
        }
        DType::F16 => {
            for (j, o) in out.iter_mut().enumerate() {
                let p = 2 * (start + j);
                *o = f16::from_le_bytes([bytes[p], bytes[p + 1]]).to_f32();
            }
        }
        _ => {
            for (j, o) in out.iter_mut().enumerate() {
                let p = 4 * (start + j);
                *o = f32::from_le_bytes([bytes[p], bytes[p + 1], bytes[p + 2], bytes[p + 3]]);
            }
        }
    }
}

/// Evaluate `constexpr_blockwise_shift_scale`.
pub fn blockwise_shift_scale(
    data: &TensorValue,
    scale: &TensorValue,
    offset: Option<&TensorValue>,
) -> Result<Tensor, KernelError> {
    let dt = data.dtype();
    if !matches!(
        dt,
        DType::I4 | DType::U4 | DType::I8 | DType::U8 | DType::F16 | DType::F32
    ) {
        return Err(KernelError::bad(
            "data",
            format!("dtype {dt} is not int4/uint4/int8/uint8/fp16/fp32"),
        ));
    }
    let od = scale.dtype();
    if !matches!(od, DType::F16 | DType::F32) {
        return Err(KernelError::bad(
            "scale",
            format!("dtype {od} is not fp16/fp32"),
        ));
    }
    let shape = data.shape();
    let sshape = scale.shape();
    let blk = block_sizes(&shape, &sshape, "scale")?;
    let sc = scale
        .to_f32_vec()
        .map_err(|e| KernelError::bad("scale", e.to_string()))?;
    let off = match offset {
        None => None,
        Some(o) => {
            if o.shape() != sshape {
                return Err(KernelError::bad(
                    "offset",
                    format!("shape {:?} differs from scale {sshape:?}", o.shape()),
                ));
            }
            Some(
                o.to_f32_vec()
                    .map_err(|e| KernelError::bad("offset", e.to_string()))?,
            )
        }
    };
    let db = raw(data, "data")?;
    let n: usize = shape.iter().product();
    if db.len() < dt.storage_bytes(n).unwrap_or(usize::MAX) {
        return Err(KernelError::bad("data", "too few bytes"));
    }
    let view = row_view(&shape, &sshape, &blk);
    let compute = |r: usize, o: &mut [f32]| {
        let base = row_group_base(r, &view);
        let mut scratch = vec![0u8; o.len()];
        data_row(dt, db, r * view.row, o, &mut scratch);
        for (c, chunk) in o.chunks_mut(view.lblk).enumerate() {
            let (s, z) = (sc[base + c], off.as_ref().map_or(0.0, |z| z[base + c]));
            for v in chunk {
                *v = s * (*v - z);
            }
        }
    };
    let vals: Vec<f32> = rows_par(n, view.row, compute);
    Tensor::float_from_f32(od, shape, vals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mil::TensorType;
    use mil::value::pack_bits;

    #[test]
    fn row_group_base_walks_leading_dims() {
        // shape [4, 2, 6], groups [2, 1, 3] → blocks [2, 2, 2]; rows are (i0, i1)
        let v = row_view(&[4, 2, 6], &[2, 1, 3], &[2, 2, 2]);
        assert_eq!((v.row, v.lblk, v.row_groups), (6, 2, 3));
        // group base = (i0/2)·(1·3) + (i1/2)·3
        assert_eq!(row_group_base(0, &v), 0);
        assert_eq!(row_group_base(3, &v), 0);
        assert_eq!(row_group_base(4, &v), 3);
        assert_eq!(row_group_base(7, &v), 3);
        // conv weight [64, 8, 1, 1] with groups [2, 1, 1, 1]: rows of 8, one group per row
        let c = row_view(&[64, 8, 1, 1], &[2, 1, 1, 1], &[32, 8, 1, 1]);
        assert_eq!((c.row, c.lblk, c.row_groups), (8, 8, 1));
        assert_eq!(row_group_base(31, &c), 0);
        assert_eq!(row_group_base(32, &c), 1);
    }

    #[test]
    fn vector_lut() {
        // indices uint1 [2, 2], lut [1, 1, 2, 2] with vector_axis 1 → output [2, 4]
        let idx = TensorValue::from_bytes(
            TensorType::new(DType::U1, &[2, 2]),
            pack_bits(&[0, 1, 1, 0], 1),
        )
        .unwrap();
        let lut = TensorValue::from_f32(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        let t = lut_to_dense(&idx, &lut, Some(1)).unwrap();
        assert_eq!(t.shape(), &[2, 4]);
        assert_eq!(
            t.to_f32().unwrap().as_ref(),
            &[1.0, 2.0, 3.0, 4.0, 3.0, 4.0, 1.0, 2.0]
        );
    }
}
