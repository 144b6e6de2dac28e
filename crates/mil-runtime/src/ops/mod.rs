//! Kernels, one module per op family, and the op-type → kernel table.
//!
//! A kernel is a plain function `fn(&OpArgs) -> Result<Vec<Tensor>, KernelError>`: it reads its
//! parameters by MIL name through [`OpArgs`] (applying the MIL default when a parameter is absent)
//! and returns its outputs in declared order. The interpreter wraps kernel errors with the
//! function, op type and op name.
//!
//! Not here: `const` (a literal), `constexpr_*` (evaluated once at load by [`constexpr`]) and
//! `read_state` / `write_state` (they touch the interpreter's state slots directly).

pub mod binary;
pub mod constexpr;
pub mod conv;
pub mod gather;
pub mod gemm;
pub mod matmul;
pub mod misc;
pub mod norm;
pub mod reduce;
pub mod shape;
pub mod slice;
pub mod unary;
pub mod util;

use crate::error::KernelError;
use crate::tensor::Tensor;
use mil::{DType, NamedValueType};

/// A kernel.
pub type KernelFn = fn(&OpArgs<'_>) -> Result<Vec<Tensor>, KernelError>;

/// Where a parameter's value comes from at run time.
#[derive(Clone, Debug)]
pub(crate) enum ArgRef {
    /// A slot of the run environment (function input, op output, const).
    Slot(usize),
    /// An inline literal already converted.
    Inline(Tensor),
}

/// One parameter of a compiled op: its MIL name and its bindings.
#[derive(Clone, Debug)]
pub(crate) struct Param {
    pub name: String,
    pub args: Vec<ArgRef>,
}

/// The parameters of one op invocation, resolved against the run environment.
pub struct OpArgs<'a> {
    pub(crate) params: &'a [Param],
    pub(crate) env: &'a [Option<Tensor>],
    /// The op's declared outputs (names and types) in order.
    pub outputs: &'a [NamedValueType],
}

impl<'a> OpArgs<'a> {
    fn resolve(&self, a: &'a ArgRef, param: &str) -> Result<&'a Tensor, KernelError> {
        match a {
            ArgRef::Inline(t) => Ok(t),
            ArgRef::Slot(i) => self.env.get(*i).and_then(Option::as_ref).ok_or_else(|| {
                KernelError::bad(param, "value is not available (internal: freed too early)")
            }),
        }
    }

    fn param(&self, name: &str) -> Option<&'a Param> {
        self.params.iter().find(|p| p.name == name)
    }

    /// True if the parameter is bound.
    pub fn has(&self, name: &str) -> bool {
        self.param(name).is_some()
    }

    /// The single tensor bound to `name`, if present.
    pub fn get(&self, name: &str) -> Result<Option<&'a Tensor>, KernelError> {
        match self.param(name) {
            None => Ok(None),
            Some(p) => match p.args.as_slice() {
                [a] => self.resolve(a, name).map(Some),
                _ => Err(KernelError::bad(
                    name,
                    format!("expected one binding, got {}", p.args.len()),
                )),
            },
        }
    }

    /// The single tensor bound to a required parameter.
    pub fn req(&self, name: &str) -> Result<&'a Tensor, KernelError> {
        self.get(name)?
            .ok_or_else(|| KernelError::MissingParam(name.to_string()))
    }

    /// Every tensor bound to a (variadic) parameter, in order.
    pub fn variadic(&self, name: &str) -> Result<Vec<&'a Tensor>, KernelError> {
        let p = self
            .param(name)
            .ok_or_else(|| KernelError::MissingParam(name.to_string()))?;
        p.args.iter().map(|a| self.resolve(a, name)).collect()
    }

    /// Integer values of a parameter (any integer dtype), if present.
    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, KernelError> {
        match self.get(name)? {
            None => Ok(None),
            Some(t) if t.dtype().is_float() => Err(KernelError::bad(
                name,
                format!("expected integers, got {}", t.dtype()),
            )),
            Some(t) => t.to_i64().map(Some),
        }
    }

    /// A scalar (or one-element) integer parameter, if present.
    pub fn int(&self, name: &str) -> Result<Option<i64>, KernelError> {
        match self.ints(name)? {
            None => Ok(None),
            Some(v) if v.len() == 1 => Ok(Some(v[0])),
            Some(v) => Err(KernelError::bad(
                name,
                format!("expected one integer, got {}", v.len()),
            )),
        }
    }

    /// A scalar integer parameter with a default.
    pub fn int_or(&self, name: &str, default: i64) -> Result<i64, KernelError> {
        Ok(self.int(name)?.unwrap_or(default))
    }

    /// Bool values of a parameter, if present.
    pub fn bools(&self, name: &str) -> Result<Option<Vec<bool>>, KernelError> {
        match self.get(name)? {
            None => Ok(None),
            Some(t) => match t.as_bool() {
                Some(b) => Ok(Some(b.to_vec())),
                None => Err(KernelError::bad(
                    name,
                    format!("expected bool, got {}", t.dtype()),
                )),
            },
        }
    }

    /// A scalar bool parameter with a default.
    pub fn bool_or(&self, name: &str, default: bool) -> Result<bool, KernelError> {
        match self.bools(name)? {
            None => Ok(default),
            Some(v) if v.len() == 1 => Ok(v[0]),
            Some(v) => Err(KernelError::bad(
                name,
                format!("expected one bool, got {}", v.len()),
            )),
        }
    }

    /// A scalar string parameter, if present.
    pub fn string(&self, name: &str) -> Result<Option<&'a str>, KernelError> {
        match self.get(name)? {
            None => Ok(None),
            Some(t) => match t.as_strings() {
                Some([s]) => Ok(Some(s.as_str())),
                _ => Err(KernelError::bad(name, "expected one string")),
            },
        }
    }

    /// A scalar float parameter (any numeric dtype), if present.
    pub fn float(&self, name: &str) -> Result<Option<f32>, KernelError> {
        match self.get(name)? {
            None => Ok(None),
            Some(t) => {
                let v = t.to_f32()?;
                if v.len() != 1 {
                    return Err(KernelError::bad(
                        name,
                        format!("expected a scalar, got {} elements", v.len()),
                    ));
                }
                Ok(Some(v[0]))
            }
        }
    }

    /// The declared dtype of output `i`, if declared as a tensor.
    pub fn out_dtype(&self, i: usize) -> Option<DType> {
        self.outputs
            .get(i)
            .and_then(|o| o.ty.as_tensor())
            .map(|t| t.dtype)
    }

    /// The float dtype of output `i`: the declared one if it is fp16/fp32, else `fallback`.
    pub fn float_out(&self, i: usize, fallback: DType) -> DType {
        match self.out_dtype(i) {
            Some(d @ (DType::F16 | DType::F32)) => d,
            _ => fallback,
        }
    }
}

/// The kernel of an op type, or `None` if unsupported (`const`, `constexpr_*`, `read_state` and
/// `write_state` are handled by the interpreter and are not listed here).
pub fn kernel_for(op_type: &str) -> Option<KernelFn> {
    Some(match op_type {
        "add" | "sub" | "mul" | "real_div" | "pow" | "maximum" | "minimum" | "floor_div"
        | "mod" | "equal" | "not_equal" | "greater" | "greater_equal" | "less" | "less_equal"
        | "logical_and" | "logical_or" | "logical_xor" => binary::kernel(op_type)?,
        "sqrt" | "rsqrt" | "exp" | "exp2" | "log" | "tanh" | "abs" | "sigmoid" | "silu"
        | "relu" | "sin" | "cos" | "square" | "inverse" | "floor" | "ceil" | "round" | "sign"
        | "erf" | "logical_not" | "gelu" => unary::kernel(op_type)?,
        "softmax" => norm::softmax,
        "layer_norm" => norm::layer_norm,
        "reduce_mean" | "reduce_sum" | "reduce_max" | "reduce_min" | "reduce_prod" => {
            reduce::kernel(op_type)?
        }
        "reduce_argmax" => reduce::reduce_argmax,
        "reduce_argmin" => reduce::reduce_argmin,
        "matmul" => matmul::matmul,
        "linear" => matmul::linear,
        "conv" => conv::conv,
        "concat" => shape::concat,
        "split" => shape::split,
        "stack" => shape::stack,
        "reshape" => shape::reshape,
        "transpose" => shape::transpose,
        "expand_dims" => shape::expand_dims,
        "squeeze" => shape::squeeze,
        "tile" => shape::tile,
        "pad" => shape::pad,
        "slice_by_index" => slice::slice_by_index,
        "slice_by_size" => slice::slice_by_size,
        "slice_update" => slice::slice_update,
        "gather" => gather::gather,
        "gather_along_axis" => gather::gather_along_axis,
        "cast" => misc::cast,
        "select" => misc::select,
        "clip" => misc::clip,
        "identity" => misc::identity,
        "fill" => misc::fill,
        _ => return None,
    })
}

/// Op types evaluated once at load time.
pub fn is_constexpr(op_type: &str) -> bool {
    matches!(
        op_type,
        "constexpr_lut_to_dense" | "constexpr_blockwise_shift_scale"
    )
}

/// True if the interpreter can run `op_type`.
pub fn is_supported(op_type: &str) -> bool {
    op_type == "const"
        || is_constexpr(op_type)
        || matches!(op_type, "read_state" | "write_state")
        || kernel_for(op_type).is_some()
}
