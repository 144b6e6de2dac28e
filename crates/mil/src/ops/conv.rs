//! `conv` (iOS17): N-D convolution (we emit 1-D and 2-D; 3-D type-checks too).
//!
//! | param | type | const | default |
//! |---|---|---|---|
//! | `x` | T[N, C_in, *D] (rank 3–5) | no | required |
//! | `weight` | U[C_out, C_in/groups, *K] | no (const or constexpr in practice) | required |
//! | `bias` | `U[C_out]` | no | zeros |
//! | `strides` | `int32[S]` | yes | ones |
//! | `pad_type` | string: `valid`, `same`, `same_lower`, `custom` | yes | `valid` |
//! | `pad` | `int32[2S]` (before/after per spatial dim; used by `custom`) | yes | zeros |
//! | `dilations` | `int32[S]` | yes | ones |
//! | `groups` | int32 | yes | 1 |
//!
//! T, U ∈ {fp16, fp32}. Output T[N, C_out, *D_out] with
//! `D_out = floor((D + pad_before + pad_after − (K−1)·dil − 1) / stride) + 1` for `valid`/`custom`
//! (valid = no padding) and `ceil(D / stride)` for `same`/`same_lower`.
//! Checks: `weight.shape[1] · groups == C_in`, `C_out % groups == 0`, bias length `C_out`.
//! Not covered: `conv_transpose`, quantized activations.

use super::domains::{FLOAT, I32, STR};
use super::util::{UNKNOWN, fmt_shape, rank_in, tensor};
use super::{DefaultValue, OpDef, Opset, ParamSpec};
use crate::infer::Args;
use crate::{Dim, InferError, ValueType};

/// The `conv` op.
pub static CONV: OpDef = OpDef {
    name: "conv",
    opset: Opset::Ios17,
    params: &[
        ParamSpec::tensor("x", FLOAT),
        ParamSpec::tensor("weight", FLOAT),
        ParamSpec::tensor("bias", FLOAT).opt(DefaultValue::Absent("zeros of shape [C_out]")),
        ParamSpec::tensor("strides", I32)
            .konst()
            .opt(DefaultValue::PerSpatial {
                value: 1,
                factor: 1,
            }),
        ParamSpec::tensor("pad_type", STR)
            .konst()
            .opt(DefaultValue::Str("valid")),
        ParamSpec::tensor("pad", I32)
            .konst()
            .opt(DefaultValue::PerSpatial {
                value: 0,
                factor: 2,
            }),
        ParamSpec::tensor("dilations", I32)
            .konst()
            .opt(DefaultValue::PerSpatial {
                value: 1,
                factor: 1,
            }),
        ParamSpec::tensor("groups", I32)
            .konst()
            .opt(DefaultValue::I32(1)),
    ],
    infer: infer_conv,
    constexpr: false,
};

/// Padding modes of `conv`.
pub const PAD_TYPES: [&str; 4] = ["valid", "same", "same_lower", "custom"];

fn spatial_list(args: &Args, p: &str, len: usize, dflt: i64) -> Result<Vec<i64>, InferError> {
    match args.int_list(p)? {
        None => Ok(vec![dflt; len]),
        Some(v) if v.len() == len => Ok(v),
        Some(v) => Err(InferError::bad_value(
            p,
            format!("expected {len} values, got {}", v.len()),
        )),
    }
}

fn infer_conv(args: &Args) -> Result<Vec<ValueType>, InferError> {
    let x = args.tensor("x")?;
    let w = args.tensor("weight")?;
    rank_in("x", x, 3, 5)?;
    if w.rank() != x.rank() {
        return Err(InferError::rank(
            "weight",
            w.rank(),
            format!("{} (rank of x)", x.rank()),
        ));
    }
    let s = x.rank() - 2;
    let groups = args.int("groups")?.unwrap_or(1);
    if groups < 1 {
        return Err(InferError::bad_value(
            "groups",
            format!("must be ≥ 1, got {groups}"),
        ));
    }
    let g = groups as u64;
    let c_out = w.shape[0];
    if let (Dim::Fixed(wi), Dim::Fixed(ci)) = (w.shape[1], x.shape[1])
        && wi * g != ci
    {
        let msg = if g == 1 {
            format!("weight in-channels {wi} != input channels {ci}")
        } else {
            format!("weight in-channels {wi} × groups {g} != input channels {ci}")
        };
        return Err(InferError::shape(msg));
    }
    if let Dim::Fixed(co) = c_out
        && co % g != 0
    {
        return Err(InferError::shape(format!(
            "weight out-channels {co} is not divisible by groups {g}"
        )));
    }
    if let Some(b) = args.opt_tensor("bias")
        && (b.rank() != 1 || super::util::dims_differ(b.shape[0], c_out))
    {
        return Err(InferError::shape(format!(
            "bias shape {} != [C_out] = [{}]",
            fmt_shape(&b.shape),
            c_out
        )));
    }
    let strides = spatial_list(args, "strides", s, 1)?;
    let dil = spatial_list(args, "dilations", s, 1)?;
    let pad = spatial_list(args, "pad", 2 * s, 0)?;
    if let Some(bad) = strides.iter().chain(&dil).find(|&&v| v < 1) {
        return Err(InferError::bad_value(
            "strides",
            format!("strides and dilations must be ≥ 1, got {bad}"),
        ));
    }
    if let Some(bad) = pad.iter().find(|&&v| v < 0) {
        return Err(InferError::bad_value(
            "pad",
            format!("must be ≥ 0, got {bad}"),
        ));
    }
    let pad_type = args.string("pad_type")?.unwrap_or_else(|| "valid".into());
    if !PAD_TYPES.contains(&pad_type.as_str()) {
        return Err(InferError::bad_value(
            "pad_type",
            format!("`{pad_type}` is not one of {PAD_TYPES:?}"),
        ));
    }
    let mut shape = vec![x.shape[0], c_out];
    for i in 0..s {
        let d = x.shape[2 + i];
        let k = w.shape[2 + i];
        let out = match (d, k) {
            (Dim::Fixed(d), Dim::Fixed(k)) => {
                let (d, k) = (d as i64, k as i64);
                let st = strides[i];
                match pad_type.as_str() {
                    "same" | "same_lower" => Dim::Fixed(((d + st - 1) / st) as u64),
                    _ => {
                        let (pb, pa) = if pad_type == "custom" {
                            (pad[2 * i], pad[2 * i + 1])
                        } else {
                            (0, 0)
                        };
                        let eff = d + pb + pa - (k - 1) * dil[i] - 1;
                        if eff < 0 {
                            return Err(InferError::shape(format!(
                                "kernel {} (dilation {}) is larger than padded spatial dim {} \
                                 of x {}",
                                k,
                                dil[i],
                                d + pb + pa,
                                fmt_shape(&x.shape)
                            )));
                        }
                        Dim::Fixed((eff / st + 1) as u64)
                    }
                }
            }
            _ => UNKNOWN,
        };
        shape.push(out);
    }
    Ok(vec![tensor(x.dtype, shape)])
}
