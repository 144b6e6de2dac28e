//! Linear-algebra, reduction and normalization builder methods (`conv`, `linear`, `matmul`,
//! `reduce_*`, `layer_norm`).

use super::params::{ConvOptions, Pad, boolean, int, ints, string};
use super::{FunctionBuilder, Operand, Param, Var};
use crate::{DType, Dim, MilError};

impl FunctionBuilder {
    // ---------------------------------------------------------------------------------------
    // linear algebra

    /// `conv` with every parameter explicit (`weight`/`bias` may be literals or constexpr outputs).
    /// `bias = None` leaves the optional `bias` parameter out, which means "no bias" (Gemma's
    /// projections have none; no zero tensor is stored).
    pub fn conv(
        &mut self,
        name: &str,
        x: &Var,
        weight: impl Into<Operand>,
        bias: Option<Operand>,
        opts: &ConvOptions,
    ) -> Result<Var, MilError> {
        let s = x.rank().saturating_sub(2);
        let (pad_type, pad) = match &opts.pad {
            Pad::Valid => ("valid", vec![0; 2 * s]),
            Pad::Same => ("same", vec![0; 2 * s]),
            Pad::SameLower => ("same_lower", vec![0; 2 * s]),
            Pad::Custom(p) => ("custom", p.clone()),
        };
        let weight = weight.into();
        let wd = weight.dtype();
        let mut params = vec![
            ("x", Param::Var(x.clone())),
            ("weight", self.param("conv", name, weight, Some(x.dtype()))?),
        ];
        if let Some(b) = bias {
            params.push(("bias", self.param("conv", name, b, wd.or(Some(x.dtype())))?));
        }
        params.extend([
            (
                "strides",
                ints(opts.strides.as_deref().unwrap_or(&vec![1; s])),
            ),
            ("pad_type", string(pad_type)),
            ("pad", ints(&pad)),
            (
                "dilations",
                ints(opts.dilations.as_deref().unwrap_or(&vec![1; s])),
            ),
            ("groups", int(opts.groups)),
        ]);
        self.single("conv", name, params)
    }

    /// A 1×1 `conv` (strides 1, valid padding, dilations 1, groups 1) — the projection of NCHW
    /// activations `[N, C_in, H, W]` by a weight `[C_out, C_in, 1, 1]`.
    pub fn conv_1x1(
        &mut self,
        name: &str,
        x: &Var,
        weight: impl Into<Operand>,
        bias: Option<Operand>,
    ) -> Result<Var, MilError> {
        self.conv(name, x, weight, bias, &ConvOptions::default())
    }

    /// `linear`: `x·Wᵀ + b`. Without a bias, a zero bias of the weight's dtype is written (as
    /// coremltools does).
    pub fn linear(
        &mut self,
        name: &str,
        x: &Var,
        weight: impl Into<Operand>,
        bias: Option<Operand>,
    ) -> Result<Var, MilError> {
        let weight = weight.into();
        let (wd, d_out) = match &weight {
            Operand::Var(v) => (v.dtype(), v.shape().first().copied()),
            Operand::Value(t) => (t.dtype(), t.ty().shape.first().copied()),
            Operand::Scalar(_) => {
                return Err(self.arg_error(
                    "linear",
                    name,
                    "weight must be a tensor, not a scalar",
                ));
            }
        };
        let bias = match bias {
            Some(b) => self.param("linear", name, b, Some(wd))?,
            None => {
                let n = match d_out {
                    Some(Dim::Fixed(n)) => n as usize,
                    _ => {
                        return Err(self.arg_error(
                            "linear",
                            name,
                            "weight needs a static out-features dim to build the zero bias",
                        ));
                    }
                };
                Param::Lit(self.filled("linear", name, wd, &[n], 0.0)?)
            }
        };
        let w = self.param("linear", name, weight, None)?;
        self.single(
            "linear",
            name,
            vec![("x", Param::Var(x.clone())), ("weight", w), ("bias", bias)],
        )
    }

    /// `matmul` with explicit transpose flags.
    pub fn matmul(
        &mut self,
        name: &str,
        x: impl Into<Operand>,
        y: impl Into<Operand>,
        transpose_x: bool,
        transpose_y: bool,
    ) -> Result<Var, MilError> {
        let (x, y) = (x.into(), y.into());
        let (dx, dy) = (x.dtype(), y.dtype());
        let px = self.param("matmul", name, x, dy)?;
        let py = self.param("matmul", name, y, dx)?;
        self.single(
            "matmul",
            name,
            vec![
                ("x", px),
                ("y", py),
                ("transpose_x", boolean(transpose_x)),
                ("transpose_y", boolean(transpose_y)),
            ],
        )
    }

    // ---------------------------------------------------------------------------------------
    // reductions and normalization

    /// Any of `reduce_mean`, `reduce_sum`, `reduce_max`, `reduce_min`.
    pub fn reduce(
        &mut self,
        op_type: &str,
        name: &str,
        x: &Var,
        axes: &[i32],
        keep_dims: bool,
    ) -> Result<Var, MilError> {
        self.single(
            op_type,
            name,
            vec![
                ("x", Param::Var(x.clone())),
                ("axes", ints(axes)),
                ("keep_dims", boolean(keep_dims)),
            ],
        )
    }

    /// Mean over `axes`.
    pub fn reduce_mean(
        &mut self,
        name: &str,
        x: &Var,
        axes: &[i32],
        keep_dims: bool,
    ) -> Result<Var, MilError> {
        self.reduce("reduce_mean", name, x, axes, keep_dims)
    }
    /// Sum over `axes`.
    pub fn reduce_sum(
        &mut self,
        name: &str,
        x: &Var,
        axes: &[i32],
        keep_dims: bool,
    ) -> Result<Var, MilError> {
        self.reduce("reduce_sum", name, x, axes, keep_dims)
    }
    /// Max over `axes`.
    pub fn reduce_max(
        &mut self,
        name: &str,
        x: &Var,
        axes: &[i32],
        keep_dims: bool,
    ) -> Result<Var, MilError> {
        self.reduce("reduce_max", name, x, axes, keep_dims)
    }
    /// Min over `axes`.
    pub fn reduce_min(
        &mut self,
        name: &str,
        x: &Var,
        axes: &[i32],
        keep_dims: bool,
    ) -> Result<Var, MilError> {
        self.reduce("reduce_min", name, x, axes, keep_dims)
    }

    /// Index of the max along `axis` (`output_dtype` int32 or uint16).
    pub fn reduce_argmax(
        &mut self,
        name: &str,
        x: &Var,
        axis: i32,
        keep_dims: bool,
        output_dtype: DType,
    ) -> Result<Var, MilError> {
        self.single(
            "reduce_argmax",
            name,
            vec![
                ("x", Param::Var(x.clone())),
                ("axis", int(axis)),
                ("keep_dims", boolean(keep_dims)),
                ("output_dtype", string(output_dtype.mil_name())),
            ],
        )
    }

    /// `layer_norm` over `axes`; missing gamma/beta are written as ones/zeros in x's dtype.
    pub fn layer_norm(
        &mut self,
        name: &str,
        x: &Var,
        axes: &[i32],
        gamma: Option<Operand>,
        beta: Option<Operand>,
        epsilon: f64,
    ) -> Result<Var, MilError> {
        let mut norm_axes: Vec<usize> = Vec::with_capacity(axes.len());
        for &a in axes {
            let r = x.rank() as i32;
            let n = if a < 0 { a + r } else { a };
            if !(0..r).contains(&n) {
                return Err(self.arg_error(
                    "layer_norm",
                    name,
                    format!("axis {a} out of range for rank {r}"),
                ));
            }
            norm_axes.push(n as usize);
        }
        norm_axes.sort_unstable();
        let normalized: Option<Vec<usize>> = norm_axes.iter().map(|&a| x.dim(a as isize)).collect();
        let fill = |this: &mut Self, v: Option<Operand>, value: f64| -> Result<Param, MilError> {
            match v {
                Some(o) => this.param("layer_norm", name, o, Some(x.dtype())),
                None => {
                    let shape = normalized.clone().ok_or_else(|| {
                        this.arg_error(
                            "layer_norm",
                            name,
                            "default gamma/beta need static normalized dims",
                        )
                    })?;
                    Ok(Param::Lit(this.filled(
                        "layer_norm",
                        name,
                        x.dtype(),
                        &shape,
                        value,
                    )?))
                }
            }
        };
        let g = fill(self, gamma, 1.0)?;
        let b = fill(self, beta, 0.0)?;
        let e = self.param(
            "layer_norm",
            name,
            Operand::Scalar(epsilon),
            Some(x.dtype()),
        )?;
        self.single(
            "layer_norm",
            name,
            vec![
                ("x", Param::Var(x.clone())),
                ("axes", ints(axes)),
                ("gamma", g),
                ("beta", b),
                ("epsilon", e),
            ],
        )
    }
}
