//! Elementwise builder methods: binary ops (scalars take the other operand's dtype), unary ops,
//! activations and `cast`.

use super::params::{GeluMode, int, string};
use super::{FunctionBuilder, Operand, Param, Var};
use crate::{DType, MilError};

impl FunctionBuilder {
    // ---------------------------------------------------------------------------------------
    // elementwise binary

    /// Any elementwise binary op (`add`, `greater`, `logical_and`, ...). A scalar operand takes the
    /// other operand's dtype.
    pub fn binary(
        &mut self,
        op_type: &str,
        name: &str,
        x: impl Into<Operand>,
        y: impl Into<Operand>,
    ) -> Result<Var, MilError> {
        let (x, y) = (x.into(), y.into());
        let (dx, dy) = (x.dtype(), y.dtype());
        let px = self.param(op_type, name, x, dy)?;
        let py = self.param(op_type, name, y, dx)?;
        self.single(op_type, name, vec![("x", px), ("y", py)])
    }

    /// `x + y`.
    pub fn add(
        &mut self,
        name: &str,
        x: impl Into<Operand>,
        y: impl Into<Operand>,
    ) -> Result<Var, MilError> {
        self.binary("add", name, x, y)
    }
    /// `x − y`.
    pub fn sub(
        &mut self,
        name: &str,
        x: impl Into<Operand>,
        y: impl Into<Operand>,
    ) -> Result<Var, MilError> {
        self.binary("sub", name, x, y)
    }
    /// `x · y`.
    pub fn mul(
        &mut self,
        name: &str,
        x: impl Into<Operand>,
        y: impl Into<Operand>,
    ) -> Result<Var, MilError> {
        self.binary("mul", name, x, y)
    }
    /// `x / y`.
    pub fn real_div(
        &mut self,
        name: &str,
        x: impl Into<Operand>,
        y: impl Into<Operand>,
    ) -> Result<Var, MilError> {
        self.binary("real_div", name, x, y)
    }
    /// `x ^ y`.
    pub fn pow(
        &mut self,
        name: &str,
        x: impl Into<Operand>,
        y: impl Into<Operand>,
    ) -> Result<Var, MilError> {
        self.binary("pow", name, x, y)
    }
    /// `max(x, y)`.
    pub fn maximum(
        &mut self,
        name: &str,
        x: impl Into<Operand>,
        y: impl Into<Operand>,
    ) -> Result<Var, MilError> {
        self.binary("maximum", name, x, y)
    }
    /// `min(x, y)`.
    pub fn minimum(
        &mut self,
        name: &str,
        x: impl Into<Operand>,
        y: impl Into<Operand>,
    ) -> Result<Var, MilError> {
        self.binary("minimum", name, x, y)
    }
    /// `x > y` (bool).
    pub fn greater(
        &mut self,
        name: &str,
        x: impl Into<Operand>,
        y: impl Into<Operand>,
    ) -> Result<Var, MilError> {
        self.binary("greater", name, x, y)
    }
    /// `x >= y` (bool).
    pub fn greater_equal(
        &mut self,
        name: &str,
        x: impl Into<Operand>,
        y: impl Into<Operand>,
    ) -> Result<Var, MilError> {
        self.binary("greater_equal", name, x, y)
    }
    /// `x < y` (bool).
    pub fn less(
        &mut self,
        name: &str,
        x: impl Into<Operand>,
        y: impl Into<Operand>,
    ) -> Result<Var, MilError> {
        self.binary("less", name, x, y)
    }
    /// `x <= y` (bool).
    pub fn less_equal(
        &mut self,
        name: &str,
        x: impl Into<Operand>,
        y: impl Into<Operand>,
    ) -> Result<Var, MilError> {
        self.binary("less_equal", name, x, y)
    }
    /// `x == y` (bool).
    pub fn equal(
        &mut self,
        name: &str,
        x: impl Into<Operand>,
        y: impl Into<Operand>,
    ) -> Result<Var, MilError> {
        self.binary("equal", name, x, y)
    }
    /// `x != y` (bool).
    pub fn not_equal(
        &mut self,
        name: &str,
        x: impl Into<Operand>,
        y: impl Into<Operand>,
    ) -> Result<Var, MilError> {
        self.binary("not_equal", name, x, y)
    }
    /// `x && y` (bool operands).
    pub fn logical_and(
        &mut self,
        name: &str,
        x: impl Into<Operand>,
        y: impl Into<Operand>,
    ) -> Result<Var, MilError> {
        self.binary("logical_and", name, x, y)
    }
    /// `x || y` (bool operands).
    pub fn logical_or(
        &mut self,
        name: &str,
        x: impl Into<Operand>,
        y: impl Into<Operand>,
    ) -> Result<Var, MilError> {
        self.binary("logical_or", name, x, y)
    }

    /// `−x` (MIL has no `neg`: emitted as `mul(x, -1)`).
    pub fn neg(&mut self, name: &str, x: &Var) -> Result<Var, MilError> {
        self.mul(name, x, -1.0)
    }

    // ---------------------------------------------------------------------------------------
    // elementwise unary and activations

    /// Any one-parameter elementwise op (`sqrt`, `exp`, `tanh`, `silu`, `relu`, `erf`, ...).
    pub fn unary(&mut self, op_type: &str, name: &str, x: &Var) -> Result<Var, MilError> {
        self.single(op_type, name, vec![("x", Param::Var(x.clone()))])
    }

    /// `sqrt(x)`.
    pub fn sqrt(&mut self, name: &str, x: &Var) -> Result<Var, MilError> {
        self.unary("sqrt", name, x)
    }
    /// `exp(x)`.
    pub fn exp(&mut self, name: &str, x: &Var) -> Result<Var, MilError> {
        self.unary("exp", name, x)
    }
    /// `tanh(x)`.
    pub fn tanh(&mut self, name: &str, x: &Var) -> Result<Var, MilError> {
        self.unary("tanh", name, x)
    }
    /// `|x|`.
    pub fn abs(&mut self, name: &str, x: &Var) -> Result<Var, MilError> {
        self.unary("abs", name, x)
    }
    /// `sigmoid(x)`.
    pub fn sigmoid(&mut self, name: &str, x: &Var) -> Result<Var, MilError> {
        self.unary("sigmoid", name, x)
    }
    /// `x · sigmoid(x)`.
    pub fn silu(&mut self, name: &str, x: &Var) -> Result<Var, MilError> {
        self.unary("silu", name, x)
    }
    /// `max(x, 0)`.
    pub fn relu(&mut self, name: &str, x: &Var) -> Result<Var, MilError> {
        self.unary("relu", name, x)
    }
    /// `x²`.
    pub fn square(&mut self, name: &str, x: &Var) -> Result<Var, MilError> {
        self.unary("square", name, x)
    }
    /// `sin(x)`.
    pub fn sin(&mut self, name: &str, x: &Var) -> Result<Var, MilError> {
        self.unary("sin", name, x)
    }
    /// `cos(x)`.
    pub fn cos(&mut self, name: &str, x: &Var) -> Result<Var, MilError> {
        self.unary("cos", name, x)
    }
    /// `erf(x)`.
    pub fn erf(&mut self, name: &str, x: &Var) -> Result<Var, MilError> {
        self.unary("erf", name, x)
    }

    fn with_epsilon(&mut self, op: &str, name: &str, x: &Var, eps: f64) -> Result<Var, MilError> {
        let e = self.param(op, name, Operand::Scalar(eps), Some(x.dtype()))?;
        self.single(op, name, vec![("x", Param::Var(x.clone())), ("epsilon", e)])
    }

    /// `1/sqrt(x + epsilon)` (epsilon in x's dtype).
    pub fn rsqrt(&mut self, name: &str, x: &Var, epsilon: f64) -> Result<Var, MilError> {
        self.with_epsilon("rsqrt", name, x, epsilon)
    }
    /// `1/(x + epsilon)` (epsilon in x's dtype).
    pub fn inverse(&mut self, name: &str, x: &Var, epsilon: f64) -> Result<Var, MilError> {
        self.with_epsilon("inverse", name, x, epsilon)
    }
    /// `log(x + epsilon)` (epsilon in x's dtype).
    pub fn log(&mut self, name: &str, x: &Var, epsilon: f64) -> Result<Var, MilError> {
        self.with_epsilon("log", name, x, epsilon)
    }

    /// `gelu(x)` with an explicit mode.
    pub fn gelu(&mut self, name: &str, x: &Var, mode: GeluMode) -> Result<Var, MilError> {
        self.single(
            "gelu",
            name,
            vec![
                ("x", Param::Var(x.clone())),
                ("mode", string(mode.as_str())),
            ],
        )
    }

    /// `softmax(x)` along `axis`.
    pub fn softmax(&mut self, name: &str, x: &Var, axis: i32) -> Result<Var, MilError> {
        self.single(
            "softmax",
            name,
            vec![("x", Param::Var(x.clone())), ("axis", int(axis))],
        )
    }

    /// `min(max(x, alpha), beta)` (bounds in x's dtype).
    pub fn clip(&mut self, name: &str, x: &Var, alpha: f64, beta: f64) -> Result<Var, MilError> {
        let a = self.param("clip", name, Operand::Scalar(alpha), Some(x.dtype()))?;
        let b = self.param("clip", name, Operand::Scalar(beta), Some(x.dtype()))?;
        self.single(
            "clip",
            name,
            vec![("x", Param::Var(x.clone())), ("alpha", a), ("beta", b)],
        )
    }

    /// `cast(x)` to `dtype` (int8, uint8, int16, uint16, int32, fp16, fp32, bool).
    pub fn cast(&mut self, name: &str, x: &Var, dtype: DType) -> Result<Var, MilError> {
        self.single(
            "cast",
            name,
            vec![
                ("x", Param::Var(x.clone())),
                ("dtype", string(dtype.mil_name())),
            ],
        )
    }
}
