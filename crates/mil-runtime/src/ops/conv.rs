//! `conv` (iOS17): N-D convolution (1–3 spatial dims) with strides, padding, dilations, groups.
//!
//! Params: x [N, C_in, *D]; weight [C_out, C_in/groups, *K] (fp16 weights stay fp16); bias
//! [C_out] opt; strides (1s); pad_type ("valid" | "same" | "same_lower" | "custom", default
//! "valid"); pad [2S] (before/after per spatial dim, used by "custom"); dilations (1s); groups (1).
//! D_out = floor((D + pad_b + pad_a − (K−1)·dil − 1)/stride) + 1. "same": D_out = ceil(D/stride),
//! total padding split evenly with the odd element at the end ("same_lower": at the start).
//!
//! Evaluation: per batch and group, an im2col matrix (one row per output position) is multiplied
//! with the weight rows by [`super::gemm::gemm_nt`], which writes the [C_out/groups, D_out]
//! slab of the NC… output directly. A 1×1 kernel with unit strides and no padding skips im2col
//! (the input is just transposed to [S, C]): on [1, C, 1, S] that is a GEMV (S = 1) or a GEMM.
//! f32 accumulation, bias added in f32, one rounding to the output dtype.
//!
//! Not covered: conv_transpose; int weights (dequantize them with constexpr ops first).

use super::OpArgs;
use super::gemm::{Rows, gemm_nt};
use super::matmul::rows_of;
use crate::error::KernelError;
use crate::tensor::Tensor;

fn spatial_param(
    a: &OpArgs<'_>,
    name: &str,
    s: usize,
    default: i64,
) -> Result<Vec<i64>, KernelError> {
    match a.ints(name)? {
        None => Ok(vec![default; s]),
        Some(v) if v.len() == s => Ok(v),
        Some(v) => Err(KernelError::bad(
            name,
            format!("has {} entries for {s} spatial dims", v.len()),
        )),
    }
}

/// `conv`.
pub fn conv(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    let x = a.req("x")?;
    let w = a.req("weight")?;
    if !x.dtype().is_float() {
        return Err(KernelError::dtype(
            x.dtype(),
            "conv input must be fp16 or fp32",
        ));
    }
    let r = x.rank();
    if !(3..=5).contains(&r) || w.rank() != r {
        return Err(KernelError::shape(format!(
            "conv x {:?} with weight {:?}",
            x.shape(),
            w.shape()
        )));
    }
    let s = r - 2;
    let (nbatch, cin) = (x.shape()[0], x.shape()[1]);
    let dims = &x.shape()[2..];
    let cout = w.shape()[0];
    let ksz = &w.shape()[2..];
    let groups = usize::try_from(a.int_or("groups", 1)?)
        .ok()
        .filter(|&g| g > 0)
        .ok_or_else(|| KernelError::bad("groups", "must be positive"))?;
    if cin % groups != 0 || cout % groups != 0 || w.shape()[1] != cin / groups {
        return Err(KernelError::shape(format!(
            "conv x {:?}, weight {:?}, groups {groups}: channel counts do not match",
            x.shape(),
            w.shape()
        )));
    }
    let strides = spatial_param(a, "strides", s, 1)?;
    let dil = spatial_param(a, "dilations", s, 1)?;
    if strides.iter().chain(&dil).any(|&v| v < 1) {
        return Err(KernelError::bad("strides/dilations", "must be positive"));
    }
    let pad_type = a.string("pad_type")?.unwrap_or("valid");
    let mut pb = vec![0i64; s];
    let mut pa = vec![0i64; s];
    match pad_type {
        "valid" => {}
        "custom" => {
            let p = spatial_param(a, "pad", 2 * s, 0)?;
            for i in 0..s {
                pb[i] = p[2 * i];
                pa[i] = p[2 * i + 1];
            }
        }
        "same" | "same_lower" => {
            for i in 0..s {
                let d = dims[i] as i64;
                let out = (d + strides[i] - 1) / strides[i];
                let eff_k = (ksz[i] as i64 - 1) * dil[i] + 1;
                let total = ((out - 1) * strides[i] + eff_k - d).max(0);
                let small = total / 2;
                let (b, e) = if pad_type == "same" {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
                pb[i] = b;
                pa[i] = e;
            }
        }
        t => return Err(KernelError::bad("pad_type", format!("unknown `{t}`"))),
    }
    let mut odims = Vec::with_capacity(s);
    for i in 0..s {
        let num = dims[i] as i64 + pb[i] + pa[i] - (ksz[i] as i64 - 1) * dil[i] - 1;
        if num < 0 {
            return Err(KernelError::shape(format!(
                "kernel larger than padded input on spatial dim {i}"
            )));
        }
        odims.push((num / strides[i] + 1) as usize);
    }
    let sin: usize = dims.iter().product();
    let sout: usize = odims.iter().product();
    let kprod: usize = ksz.iter().product();
    let cg = cin / groups;
    let og = cout / groups;
    let kdim = cg * kprod;
    let bias = a.get("bias")?.map(Tensor::to_f32).transpose()?;
    if let Some(b) = &bias
        && b.len() != cout
    {
        return Err(KernelError::bad(
            "bias",
            format!("has {} elements, expected {cout}", b.len()),
        ));
    }
    let xf = x.to_f32()?;
    let (wf, wh) = rows_of(w)?;
    let pointwise =
        kprod == 1 && strides.iter().all(|&v| v == 1) && pb.iter().chain(&pa).all(|&v| v == 0);
    let mut out = vec![0f32; nbatch * cout * sout];
    let mut col = vec![0f32; sout * kdim];
    for n in 0..nbatch {
        for g in 0..groups {
            let xg = &xf[(n * cin + g * cg) * sin..(n * cin + (g + 1) * cg) * sin];
            if pointwise {
                // col[s][c] = x[c][s]
                for c in 0..cg {
                    for p in 0..sin {
                        col[p * cg + c] = xg[c * sin + p];
                    }
                }
            } else {
                im2col(xg, cg, dims, ksz, &odims, &strides, &dil, &pb, &mut col);
            }
            let rows = match wh {
                Some(h) => Rows::F16(&h[g * og * kdim..(g + 1) * og * kdim]),
                None => Rows::F32(&wf[g * og * kdim..(g + 1) * og * kdim]),
            };
            let o = &mut out[(n * cout + g * og) * sout..(n * cout + (g + 1) * og) * sout];
            if !gemm_nt(&col, sout, kdim, rows, o) {
                return Err(KernelError::shape("internal conv size mismatch"));
            }
        }
        if let Some(b) = &bias {
            for (c, bc) in b.iter().enumerate() {
                for v in &mut out[(n * cout + c) * sout..(n * cout + c + 1) * sout] {
                    *v += bc;
                }
            }
        }
    }
    let mut shape = vec![nbatch, cout];
    shape.extend(&odims);
    Ok(vec![Tensor::float_from_f32(
        a.float_out(0, x.dtype()),
        shape,
        out,
    )?])
}

/// Fill `col` (sout × (cg·kprod)): row = output position, columns ordered (channel, kernel pos)
/// like the weight's [C_in/g, *K] layout; out-of-range taps are 0.
#[allow(clippy::too_many_arguments)]
fn im2col(
    xg: &[f32],
    cg: usize,
    dims: &[usize],
    ksz: &[usize],
    odims: &[usize],
    strides: &[i64],
    dil: &[i64],
    pb: &[i64],
    col: &mut [f32],
) {
    let s = dims.len();
    let sin: usize = dims.iter().product();
    let kprod: usize = ksz.iter().product();
    let sout: usize = odims.iter().product();
    let kdim = cg * kprod;
    let mut opos = vec![0usize; s];
    for p in 0..sout {
        let row = &mut col[p * kdim..(p + 1) * kdim];
        let mut kpos = vec![0usize; s];
        for kk in 0..kprod {
            // input coordinate of this tap
            let mut off = Some(0usize);
            for i in 0..s {
                let c = opos[i] as i64 * strides[i] - pb[i] + kpos[i] as i64 * dil[i];
                off = match off {
                    Some(o) if c >= 0 && (c as usize) < dims[i] => Some(o * dims[i] + c as usize),
                    _ => None,
                };
            }
            for c in 0..cg {
                row[c * kprod + kk] = off.map_or(0.0, |o| xg[c * sin + o]);
            }
            for i in (0..s).rev() {
                kpos[i] += 1;
                if kpos[i] < ksz[i] {
                    break;
                }
                kpos[i] = 0;
            }
        }
        for i in (0..s).rev() {
            opos[i] += 1;
            if opos[i] < odims[i] {
                break;
            }
            opos[i] = 0;
        }
    }
}
