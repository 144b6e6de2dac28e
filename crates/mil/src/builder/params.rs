//! Option types of the builder's op methods and the literal-parameter helpers they share.

use super::{FunctionBuilder, Operand, Param};
use crate::{DType, MilError, TensorValue};
use half::f16;

/// `conv` padding.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Pad {
    /// No padding (`pad_type = "valid"`).
    #[default]
    Valid,
    /// Output size `ceil(D / stride)`, extra padding at the end (`"same"`).
    Same,
    /// Like `Same`, extra padding at the start (`"same_lower"`).
    SameLower,
    /// Explicit before/after padding per spatial dim (`"custom"`, 2·S values).
    Custom(Vec<i32>),
}

/// `conv` options (spatial lists default to ones / zeros of the right length).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvOptions {
    /// Strides per spatial dim (`None` = ones).
    pub strides: Option<Vec<i32>>,
    /// Padding.
    pub pad: Pad,
    /// Dilations per spatial dim (`None` = ones).
    pub dilations: Option<Vec<i32>>,
    /// Groups (1 = dense).
    pub groups: i32,
}

impl Default for ConvOptions {
    fn default() -> Self {
        ConvOptions {
            strides: None,
            pad: Pad::Valid,
            dilations: None,
            groups: 1,
        }
    }
}

/// `gelu` modes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum GeluMode {
    /// `0.5x(1+erf(x/√2))`.
    Exact,
    /// `0.5x(1+tanh(√(2/π)(x+0.044715x³)))` (Gemma's `gelu_pytorch_tanh`).
    TanhApproximation,
    /// `x·sigmoid(1.702x)`.
    SigmoidApproximation,
}

impl GeluMode {
    /// The MIL string.
    pub fn as_str(self) -> &'static str {
        match self {
            GeluMode::Exact => "EXACT",
            GeluMode::TanhApproximation => "TANH_APPROXIMATION",
            GeluMode::SigmoidApproximation => "SIGMOID_APPROXIMATION",
        }
    }
}

/// How `split` divides its axis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Split {
    /// `num_splits` equal parts.
    Num(i32),
    /// Explicit `split_sizes`.
    Sizes(Vec<i32>),
}

/// A `slice_by_index` / `slice_update` specification. Unset strides are ones and unset masks all
/// false (written explicitly with the rank of x).
#[derive(Clone, Debug, PartialEq)]
pub struct Slice {
    /// Begin indices (`int32[rank]`, literal or runtime var).
    pub begin: Operand,
    /// End indices (`int32[rank]`, literal or runtime var).
    pub end: Operand,
    /// Strides.
    pub stride: Option<Vec<i32>>,
    /// Begin masks.
    pub begin_mask: Option<Vec<bool>>,
    /// End masks.
    pub end_mask: Option<Vec<bool>>,
    /// Squeeze masks.
    pub squeeze_mask: Option<Vec<bool>>,
}

impl Slice {
    /// A slice with literal begin/end.
    pub fn new(begin: &[i32], end: &[i32]) -> Slice {
        Slice::dynamic(i32_vec(begin), i32_vec(end))
    }

    /// A slice with runtime (or literal) begin/end operands.
    pub fn dynamic(begin: impl Into<Operand>, end: impl Into<Operand>) -> Slice {
        Slice {
            begin: begin.into(),
            end: end.into(),
            stride: None,
            begin_mask: None,
            end_mask: None,
            squeeze_mask: None,
        }
    }

    /// Set the strides.
    pub fn stride(mut self, s: &[i32]) -> Slice {
        self.stride = Some(s.to_vec());
        self
    }
    /// Set the begin mask.
    pub fn begin_mask(mut self, m: &[bool]) -> Slice {
        self.begin_mask = Some(m.to_vec());
        self
    }
    /// Set the end mask.
    pub fn end_mask(mut self, m: &[bool]) -> Slice {
        self.end_mask = Some(m.to_vec());
        self
    }
    /// Set the squeeze mask.
    pub fn squeeze_mask(mut self, m: &[bool]) -> Slice {
        self.squeeze_mask = Some(m.to_vec());
        self
    }
}

pub(super) fn i32_vec(v: &[i32]) -> TensorValue {
    // The length always matches, so this cannot fail; the fallback keeps the builder panic-free.
    TensorValue::from_i32(&[v.len()], v).unwrap_or_else(|_| TensorValue::scalar_i32(0))
}

pub(super) fn ints(v: &[i32]) -> Param {
    Param::Lit(i32_vec(v))
}

pub(super) fn int(v: i32) -> Param {
    Param::Lit(TensorValue::scalar_i32(v))
}

pub(super) fn boolean(v: bool) -> Param {
    Param::Lit(TensorValue::scalar_bool(v))
}

pub(super) fn bools(v: &[bool]) -> Param {
    match TensorValue::from_bool(&[v.len()], v) {
        Ok(t) => Param::Lit(t),
        Err(_) => Param::Lit(TensorValue::scalar_bool(false)),
    }
}

pub(super) fn string(s: &str) -> Param {
    Param::Lit(TensorValue::scalar_str(s))
}

impl FunctionBuilder {
    pub(super) fn arg_error(&self, op: &str, name: &str, msg: impl Into<String>) -> MilError {
        MilError::Argument {
            op: op.to_string(),
            name: self.scoped_name(name),
            msg: msg.into(),
        }
    }

    pub(super) fn filled(
        &self,
        op: &str,
        name: &str,
        dtype: DType,
        shape: &[usize],
        v: f64,
    ) -> Result<TensorValue, MilError> {
        let n: usize = shape.iter().product();
        let r = match dtype {
            DType::F16 => TensorValue::from_f16(shape, &vec![f16::from_f64(v); n]),
            DType::F32 => TensorValue::from_f32(shape, &vec![v as f32; n]),
            DType::I32 => TensorValue::from_i32(shape, &vec![v as i32; n]),
            d => return Err(self.arg_error(op, name, format!("cannot fill a {d} tensor"))),
        };
        r.map_err(|e| MilError::Value {
            op: op.to_string(),
            name: self.scoped_name(name),
            source: e,
        })
    }
}
