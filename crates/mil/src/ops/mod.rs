//! The closed MIL op catalog (iOS18 / `CoreML8` resolution of every op we emit or read).
//!
//! Each op family lives in its own module with a spec sheet (semantics, parameters, opset, what is not
//! covered). An [`OpDef`] lists the op's parameters ([`ParamSpec`]: kind, allowed dtypes,
//! const-ness, default) and its output type inference function. Generic checks (unknown / missing
//! parameters, arity, kind, dtype domain, const-ness) are done once in [`crate::infer`]; the
//! per-op functions check the relations between parameters (shapes, ranks, shared dtypes) and
//! compute the output types.
//!
//! Ops are named and versioned exactly as MIL spells them; `opset` is the iOS release that defines
//! the version registered for iOS18 (e.g. `conv` is the iOS17 definition).
//!
//! Architecture invariant: the catalog is a static, closed list; an op type outside it is a typed
//! error ([`crate::InferError::UnknownOp`]) everywhere (builder, validator, runtime).

pub mod activation;
pub mod compression;
pub mod constant;
pub mod conv;
pub mod elementwise_binary;
pub mod elementwise_unary;
pub mod linear;
pub mod normalization;
pub mod reduction;
pub mod scatter_gather;
pub mod shape;
pub mod slice;
pub mod state;
pub mod tensor_operation;
pub mod util;

use crate::infer::Args;
use crate::{DType, InferError, TensorType, TensorValue, ValueType};
use half::f16;

/// The iOS release whose definition of an op is the one resolved for iOS18.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Opset {
    /// iOS15 (`CoreML5`), the base MIL opset.
    Ios15,
    /// iOS17 (`CoreML7`).
    Ios17,
    /// iOS18 (`CoreML8`).
    Ios18,
}

/// What kind of value a parameter takes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// One tensor (a scalar is a rank-0 tensor).
    Tensor,
    /// A tuple of tensors: one argument with one or more bindings (`concat.values`).
    Variadic,
    /// One state (`read_state.input`, `write_state.input`).
    State,
    /// One value of any type (`identity.x`).
    Any,
}

/// Whether a parameter must be bound to a compile-time constant.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Constness {
    /// Any value (runtime or constant).
    Any,
    /// A const op output, a constexpr op output or an inline value.
    Const,
}

/// What an absent optional parameter means (MIL semantics; our builder always writes every
/// parameter, but packages from coremltools may omit optional ones).
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum DefaultValue {
    /// The parameter is required.
    Required,
    /// Optional; absence has its own meaning, described by the text (e.g. "all axes").
    Absent(&'static str),
    /// A bool scalar.
    Bool(bool),
    /// An int32 scalar.
    I32(i32),
    /// A float scalar in the dtype of `x` (fp16 in fp16 graphs).
    FloatLikeX(f64),
    /// A string scalar.
    Str(&'static str),
    /// An int32 vector of `value` repeated `factor` times per spatial dim of `x` (rank − 2).
    PerSpatial { value: i32, factor: usize },
    /// An int32 vector of `value` repeated rank(x) times.
    PerRankI32(i32),
    /// A bool vector of `value` repeated rank(x) times.
    PerRankBool(bool),
}

impl DefaultValue {
    /// True if the parameter must be bound.
    pub fn is_required(&self) -> bool {
        matches!(self, DefaultValue::Required)
    }

    /// The literal an absent parameter stands for, given the type of the op's `x` (needed for
    /// rank- and dtype-dependent defaults). `None` for required parameters and for
    /// [`DefaultValue::Absent`] (whose meaning the op kernel must implement).
    pub fn materialize(&self, x: Option<&TensorType>) -> Option<TensorValue> {
        let rank = x.map(TensorType::rank);
        match *self {
            DefaultValue::Required | DefaultValue::Absent(_) => None,
            DefaultValue::Bool(b) => Some(TensorValue::scalar_bool(b)),
            DefaultValue::I32(v) => Some(TensorValue::scalar_i32(v)),
            DefaultValue::Str(s) => Some(TensorValue::scalar_str(s)),
            DefaultValue::FloatLikeX(v) => match x.map(|t| t.dtype) {
                Some(DType::F16) => Some(TensorValue::scalar_f16(f16::from_f64(v))),
                _ => Some(TensorValue::scalar_f32(v as f32)),
            },
            DefaultValue::PerSpatial { value, factor } => {
                let n = rank?.checked_sub(2)? * factor;
                TensorValue::from_i32(&[n], &vec![value; n]).ok()
            }
            DefaultValue::PerRankI32(v) => {
                let n = rank?;
                TensorValue::from_i32(&[n], &vec![v; n]).ok()
            }
            DefaultValue::PerRankBool(v) => {
                let n = rank?;
                TensorValue::from_bool(&[n], &vec![v; n]).ok()
            }
        }
    }
}

/// The specification of one op parameter.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// The MIL parameter name.
    pub name: &'static str,
    /// What kind of value it takes.
    pub kind: ParamKind,
    /// Allowed element dtypes (empty = any; checked for tensors, variadic members and states).
    pub dtypes: &'static [DType],
    /// Whether it must be a compile-time constant.
    pub constness: Constness,
    /// Default / required-ness.
    pub default: DefaultValue,
}

impl ParamSpec {
    /// A required runtime tensor parameter.
    pub const fn tensor(name: &'static str, dtypes: &'static [DType]) -> ParamSpec {
        ParamSpec {
            name,
            kind: ParamKind::Tensor,
            dtypes,
            constness: Constness::Any,
            default: DefaultValue::Required,
        }
    }

    /// A required variadic (tuple) parameter.
    pub const fn variadic(name: &'static str, dtypes: &'static [DType]) -> ParamSpec {
        ParamSpec {
            kind: ParamKind::Variadic,
            ..ParamSpec::tensor(name, dtypes)
        }
    }

    /// A required state parameter.
    pub const fn state(name: &'static str) -> ParamSpec {
        ParamSpec {
            kind: ParamKind::State,
            ..ParamSpec::tensor(name, &[])
        }
    }

    /// A required parameter of any type.
    pub const fn any(name: &'static str) -> ParamSpec {
        ParamSpec {
            kind: ParamKind::Any,
            ..ParamSpec::tensor(name, &[])
        }
    }

    /// Mark the parameter as compile-time constant.
    pub const fn konst(self) -> ParamSpec {
        ParamSpec {
            constness: Constness::Const,
            ..self
        }
    }

    /// Mark the parameter optional with the given default.
    pub const fn opt(self, default: DefaultValue) -> ParamSpec {
        ParamSpec { default, ..self }
    }

    /// True if the parameter must be bound.
    pub fn is_required(&self) -> bool {
        self.default.is_required()
    }
}

/// Output type inference of one op: parameters in, output types out.
pub type InferFn = fn(&Args) -> Result<Vec<ValueType>, InferError>;

/// One op of the catalog.
#[derive(Copy, Clone, Debug)]
pub struct OpDef {
    /// The MIL op type.
    pub name: &'static str,
    /// The release defining the version resolved for iOS18.
    pub opset: Opset,
    /// Parameters, in MIL's documentation order.
    pub params: &'static [ParamSpec],
    /// Output type inference (assumes the generic parameter checks passed).
    pub infer: InferFn,
    /// True for iOS18 `constexpr_*` ops: parameters are inline values, output is compile-time.
    pub constexpr: bool,
}

impl OpDef {
    /// The spec of a parameter.
    pub fn param(&self, name: &str) -> Option<&'static ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }
}

/// Common dtype domains.
pub mod domains {
    use crate::DType;

    /// fp16 / fp32.
    pub const FLOAT: &[DType] = &[DType::F16, DType::F32];
    /// fp16 / fp32 / int32.
    pub const FLOAT_I32: &[DType] = &[DType::F16, DType::F32, DType::I32];
    /// fp16 / fp32 / int32 / bool.
    pub const FLOAT_I32_BOOL: &[DType] = &[DType::F16, DType::F32, DType::I32, DType::Bool];
    /// The iOS17 tensor-transformation domain: fp16, fp32, int8, int16, int32, uint8, uint16, bool.
    pub const TRANSFORM: &[DType] = &[
        DType::F16,
        DType::F32,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::U8,
        DType::U16,
        DType::Bool,
    ];
    /// Slice / reshape index dtypes: int8 / int16 / int32.
    pub const INDEX: &[DType] = &[DType::I8, DType::I16, DType::I32];
    /// Gather indices: int32 / int16 / uint16 / int8 / uint8.
    pub const GATHER_INDEX: &[DType] = &[DType::I32, DType::I16, DType::U16, DType::I8, DType::U8];
    /// Gather data: fp16 / fp32 / int32 / int16 / uint16 / int8 / uint8.
    pub const GATHER_DATA: &[DType] = &[
        DType::F16,
        DType::F32,
        DType::I32,
        DType::I16,
        DType::U16,
        DType::I8,
        DType::U8,
    ];
    /// int32 only.
    pub const I32: &[DType] = &[DType::I32];
    /// bool only.
    pub const BOOL: &[DType] = &[DType::Bool];
    /// string only.
    pub const STR: &[DType] = &[DType::Str];
}

/// Every op of the catalog, grouped by family.
pub fn catalog() -> &'static [&'static OpDef] {
    CATALOG
}

/// Look an op up by its MIL type name.
pub fn lookup(op_type: &str) -> Option<&'static OpDef> {
    CATALOG.iter().copied().find(|d| d.name == op_type)
}

static CATALOG: &[&OpDef] = &[
    &constant::CONST,
    &conv::CONV,
    &linear::LINEAR,
    &linear::MATMUL,
    &elementwise_binary::ADD,
    &elementwise_binary::SUB,
    &elementwise_binary::MUL,
    &elementwise_binary::REAL_DIV,
    &elementwise_binary::POW,
    &elementwise_binary::MAXIMUM,
    &elementwise_binary::MINIMUM,
    &elementwise_binary::FLOOR_DIV,
    &elementwise_binary::MOD,
    &elementwise_binary::GREATER,
    &elementwise_binary::GREATER_EQUAL,
    &elementwise_binary::LESS,
    &elementwise_binary::LESS_EQUAL,
    &elementwise_binary::EQUAL,
    &elementwise_binary::NOT_EQUAL,
    &elementwise_binary::LOGICAL_AND,
    &elementwise_binary::LOGICAL_OR,
    &elementwise_binary::LOGICAL_XOR,
    &elementwise_unary::ABS,
    &elementwise_unary::CEIL,
    &elementwise_unary::COS,
    &elementwise_unary::ERF,
    &elementwise_unary::EXP,
    &elementwise_unary::FLOOR,
    &elementwise_unary::INVERSE,
    &elementwise_unary::LOG,
    &elementwise_unary::LOGICAL_NOT,
    &elementwise_unary::ROUND,
    &elementwise_unary::RSQRT,
    &elementwise_unary::SIGN,
    &elementwise_unary::SIN,
    &elementwise_unary::SQRT,
    &elementwise_unary::SQUARE,
    &elementwise_unary::TANH,
    &elementwise_unary::CAST,
    &activation::CLIP,
    &activation::GELU,
    &activation::RELU,
    &activation::SIGMOID,
    &activation::SILU,
    &activation::SOFTMAX,
    &reduction::REDUCE_ARGMAX,
    &reduction::REDUCE_MAX,
    &reduction::REDUCE_MEAN,
    &reduction::REDUCE_MIN,
    &reduction::REDUCE_SUM,
    &normalization::LAYER_NORM,
    &tensor_operation::CONCAT,
    &tensor_operation::FILL,
    &tensor_operation::IDENTITY,
    &tensor_operation::PAD,
    &tensor_operation::SELECT,
    &tensor_operation::SPLIT,
    &tensor_operation::TILE,
    &shape::EXPAND_DIMS,
    &shape::RESHAPE,
    &shape::SQUEEZE,
    &shape::TRANSPOSE,
    &slice::SLICE_BY_INDEX,
    &slice::SLICE_BY_SIZE,
    &slice::SLICE_UPDATE,
    &scatter_gather::GATHER,
    &scatter_gather::GATHER_ALONG_AXIS,
    &state::READ_STATE,
    &state::WRITE_STATE,
    &compression::CONSTEXPR_BLOCKWISE_SHIFT_SCALE,
    &compression::CONSTEXPR_LUT_TO_DENSE,
];
