//! iOS18 compression ops: `constexpr_lut_to_dense`, `constexpr_blockwise_shift_scale`.
//!
//! Their parameters are compile-time constants written **inline** in the op (a `Binding::Value`,
//! normally a blob reference), not separate `const` ops; only a parameter produced by another
//! `constexpr_*` op is a name binding. The only attribute is `name`.
//!
//! **constexpr_lut_to_dense** (palettized weights)
//!
//! | param | type | default |
//! |---|---|---|
//! | `indices` | IndicesT ∈ {uint1, uint2, uint3, uint4, uint6, uint8}, shape D (rank K ≥ 1) | required |
//! | `lut` | T ∈ {int8, uint8, fp16, fp32}, shape `[G_0..G_{K−1}, 2^nbits, VECTOR_SIZE]` | required |
//! | `vector_axis` | int32 scalar | required iff VECTOR_SIZE > 1 |
//!
//! `out[i] = lut[i_0/(D_0/G_0), …, indices[i], :]`; each `D_k` divisible by `G_k`; `2^nbits` must
//! match the bit width of IndicesT. Output T with shape D, except `D[vector_axis] ×= VECTOR_SIZE`.
//! 4-bit per-grouped-channel (group 32) on a linear weight [O, I]: indices uint4[O, I], lut
//! fp16[O/32, 1, 16, 1]; on a conv weight [O, I, 1, 1]: lut [O/32, 1, 1, 1, 16, 1].
//!
//! **constexpr_blockwise_shift_scale** (blockwise quantized weights)
//!
//! | param | type | default |
//! |---|---|---|
//! | `data` | SrcT ∈ {int4, uint4, int8, uint8, fp16, fp32}, rank ≥ 1 | required |
//! | `scale` | DstT ∈ {fp16, fp32}, same rank, each dim divides data's | required |
//! | `offset` | OffsetT ∈ SrcT's set, shape of scale; dtype = data's or a float | none (no shift) |
//!
//! `out = scale[blk] · (data − offset[blk])`, block size per dim = `data.shape[k] / scale.shape[k]`;
//! output DstT with data's shape. Not covered: `constexpr_sparse_to_dense`, `constexpr_lut_to_sparse`,
//! `constexpr_sparse_blockwise_shift_scale`, the iOS16 constexpr ops.

use super::domains::I32;
use super::util::{fmt_shape, norm_axis, tensor};
use super::{DefaultValue, OpDef, Opset, ParamSpec};
use crate::infer::Args;
use crate::{DType, Dim, InferError, ValueType};

const LUT_INDICES: &[DType] = &[
    DType::U1,
    DType::U2,
    DType::U3,
    DType::U4,
    DType::U6,
    DType::U8,
];
const LUT_VALUES: &[DType] = &[DType::I8, DType::U8, DType::F16, DType::F32];
const QUANT_DATA: &[DType] = &[
    DType::I4,
    DType::U4,
    DType::I8,
    DType::U8,
    DType::F16,
    DType::F32,
];

/// The `constexpr_lut_to_dense` op (iOS18 version).
pub static CONSTEXPR_LUT_TO_DENSE: OpDef = OpDef {
    name: "constexpr_lut_to_dense",
    opset: Opset::Ios18,
    params: &[
        ParamSpec::tensor("indices", LUT_INDICES).konst(),
        ParamSpec::tensor("lut", LUT_VALUES).konst(),
        ParamSpec::tensor("vector_axis", I32)
            .konst()
            .opt(DefaultValue::Absent(
                "no vector palettization (VECTOR_SIZE = 1)",
            )),
    ],
    infer: infer_lut,
    constexpr: true,
};

fn divides(d: Dim, g: Dim) -> bool {
    match (d, g) {
        (Dim::Fixed(d), Dim::Fixed(g)) => g != 0 && d % g == 0,
        _ => true,
    }
}

fn infer_lut(args: &Args) -> Result<Vec<ValueType>, InferError> {
    let idx = args.tensor("indices")?;
    let lut = args.tensor("lut")?;
    let k = idx.rank();
    if k == 0 {
        return Err(InferError::rank("indices", 0, "at least 1"));
    }
    if lut.rank() != k + 2 {
        return Err(InferError::rank(
            "lut",
            lut.rank(),
            format!("{} (rank of indices + 2)", k + 2),
        ));
    }
    for i in 0..k {
        if !divides(idx.shape[i], lut.shape[i]) {
            return Err(InferError::shape(format!(
                "indices dim {i} ({}) is not divisible by lut dim {i} ({}) (indices {}, lut {})",
                idx.shape[i],
                lut.shape[i],
                fmt_shape(&idx.shape),
                fmt_shape(&lut.shape)
            )));
        }
    }
    let bits = idx.dtype.bits().unwrap_or(8) as u32;
    if let Dim::Fixed(p) = lut.shape[k]
        && p != 1u64 << bits
    {
        return Err(InferError::shape(format!(
            "lut has {p} palette entries (dim -2 of {}), but {} indices need 2^{bits} = {}",
            fmt_shape(&lut.shape),
            idx.dtype,
            1u64 << bits
        )));
    }
    let mut shape = idx.shape.clone();
    let vector_axis = match args.opt_tensor("vector_axis") {
        Some(t) if t.rank() != 0 => {
            return Err(InferError::rank("vector_axis", t.rank(), "0 (a scalar)"));
        }
        Some(_) => Some(norm_axis(
            "vector_axis",
            args.int("vector_axis")?.unwrap_or(0),
            k,
        )?),
        None => None,
    };
    match (lut.shape[k + 1], vector_axis) {
        (Dim::Fixed(1), _) => {}
        (Dim::Fixed(v), Some(ax)) => shape[ax] = super::util::mul_dim(shape[ax], v),
        (Dim::Fixed(v), None) => {
            return Err(InferError::MissingParam(format!(
                "vector_axis (lut VECTOR_SIZE is {v})"
            )));
        }
        (Dim::Unknown { .. }, _) => {
            return Err(InferError::shape("lut must have a static shape"));
        }
    }
    Ok(vec![tensor(lut.dtype, shape)])
}

/// The `constexpr_blockwise_shift_scale` op.
pub static CONSTEXPR_BLOCKWISE_SHIFT_SCALE: OpDef = OpDef {
    name: "constexpr_blockwise_shift_scale",
    opset: Opset::Ios18,
    params: &[
        ParamSpec::tensor("data", QUANT_DATA).konst(),
        ParamSpec::tensor("scale", &[DType::F16, DType::F32]).konst(),
        ParamSpec::tensor("offset", QUANT_DATA)
            .konst()
            .opt(DefaultValue::Absent("no offset")),
    ],
    infer: |args| {
        let data = args.tensor("data")?;
        let scale = args.tensor("scale")?;
        if data.rank() == 0 {
            return Err(InferError::rank("data", 0, "at least 1"));
        }
        if scale.rank() != data.rank() {
            return Err(InferError::rank(
                "scale",
                scale.rank(),
                format!("{} (rank of data)", data.rank()),
            ));
        }
        for i in 0..data.rank() {
            if !divides(data.shape[i], scale.shape[i]) {
                return Err(InferError::shape(format!(
                    "data dim {i} ({}) is not divisible by scale dim {i} ({}) (data {}, scale {})",
                    data.shape[i],
                    scale.shape[i],
                    fmt_shape(&data.shape),
                    fmt_shape(&scale.shape)
                )));
            }
        }
        if let Some(off) = args.opt_tensor("offset") {
            if off.shape != scale.shape {
                return Err(InferError::shape(format!(
                    "offset shape {} != scale shape {}",
                    fmt_shape(&off.shape),
                    fmt_shape(&scale.shape)
                )));
            }
            if !off.dtype.is_float() && off.dtype != data.dtype {
                return Err(InferError::DTypeMismatch {
                    a: "offset".into(),
                    a_dtype: off.dtype,
                    b: "data".into(),
                    b_dtype: data.dtype,
                });
            }
        }
        Ok(vec![tensor(scale.dtype, data.shape.clone())])
    },
    constexpr: true,
};
