//! Elementwise unary ops and activations (iOS15 / iOS17 definitions).
//!
//! Input `x` (fp16/fp32; `abs`, `sign`, `square`, `relu`, `floor`, `ceil`, `round` also int32),
//! output of the same dtype (or the declared float dtype). Floats are computed in f32 (`erf` in
//! f64) and rounded once to the output dtype.
//!
//! | op | semantics | extra params (default) |
//! |---|---|---|
//! | sqrt, exp, exp2, tanh, abs, sin, cos, floor, ceil, sign | as named | — |
//! | rsqrt | 1/√(x+ε) | epsilon (1e-12) |
//! | log | ln(x+ε) | epsilon (1e-45) |
//! | inverse | 1/(x+ε) | epsilon (1e-4) |
//! | round | half to even (NumPy `round`) | — |
//! | square | x² | — |
//! | sigmoid, silu, relu | 1/(1+e^−x), x·sigmoid(x), max(x,0) | — |
//! | erf | error function (f64 series / continued fraction, < 1e-12 error) | — |
//! | gelu | EXACT 0.5x(1+erf(x/√2)); TANH_APPROXIMATION 0.5x(1+tanh(√(2/π)(x+0.044715x³))); SIGMOID_APPROXIMATION x·σ(1.702x) | mode ("EXACT") |
//! | logical_not | !x on bool | — |
//!
//! Not covered: the other activations of the MIL catalog (elu, softplus, leaky_relu, …).

use super::{KernelFn, OpArgs};
use crate::error::KernelError;
use crate::tensor::Shared;
use crate::tensor::{Tensor, TensorData};
use mil::DType;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum U {
    Sqrt,
    Rsqrt,
    Exp,
    Exp2,
    Log,
    Tanh,
    Abs,
    Sigmoid,
    Silu,
    Relu,
    Sin,
    Cos,
    Square,
    Inverse,
    Floor,
    Ceil,
    Round,
    Sign,
    Erf,
    Gelu,
}

macro_rules! kernels {
    ($($f:ident => $op:ident),* $(,)?) => {
        $(fn $f(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> { run(a, U::$op) })*
    };
}
kernels!(sqrt => Sqrt, rsqrt => Rsqrt, exp => Exp, exp2 => Exp2, log => Log, tanh => Tanh,
    abs => Abs, sigmoid => Sigmoid, silu => Silu, relu => Relu, sin => Sin, cos => Cos,
    square => Square, inverse => Inverse, floor => Floor, ceil => Ceil, round => Round,
    sign => Sign, erf_k => Erf, gelu => Gelu);

/// The kernel of a unary op type.
pub fn kernel(op_type: &str) -> Option<KernelFn> {
    Some(match op_type {
        "sqrt" => sqrt,
        "rsqrt" => rsqrt,
        "exp" => exp,
        "exp2" => exp2,
        "log" => log,
        "tanh" => tanh,
        "abs" => abs,
        "sigmoid" => sigmoid,
        "silu" => silu,
        "relu" => relu,
        "sin" => sin,
        "cos" => cos,
        "square" => square,
        "inverse" => inverse,
        "floor" => floor,
        "ceil" => ceil,
        "round" => round,
        "sign" => sign,
        "erf" => erf_k,
        "gelu" => gelu,
        "logical_not" => logical_not,
        _ => return None,
    })
}

fn logical_not(a: &OpArgs<'_>) -> Result<Vec<Tensor>, KernelError> {
    let x = a.req("x")?;
    let v: Vec<bool> = x.to_bool()?.iter().map(|&b| !b).collect();
    Ok(vec![Tensor::from_parts(
        x.shape().to_vec(),
        TensorData::Bool(Shared::new(v)),
    )])
}

/// The error function, accurate to ~1e-13 (series for |x| < 3, continued fraction beyond).
pub fn erf(x: f64) -> f64 {
    let ax = x.abs();
    let r = if ax < 3.0 {
        // erf(x) = 2/√π Σ (−1)^n x^(2n+1) / (n! (2n+1))
        let x2 = ax * ax;
        let mut term = ax;
        let mut sum = ax;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -x2 / n;
            sum += term / (2.0 * n + 1.0);
            if n > 200.0 {
                break;
            }
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else if ax > 6.5 {
        1.0
    } else {
        // erfc(x) = e^{−x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + …)))))
        let mut f = ax;
        for k in (1..=60).rev() {
            f = ax + (k as f64 / 2.0) / f;
        }
        let erfc = (-ax * ax).exp() / (std::f64::consts::PI.sqrt() * f);
        1.0 - erfc
    };
    if x < 0.0 { -r } else { r }
}

fn sigmoid_f(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn round_half_even(x: f32) -> f32 {
    x.round_ties_even()
}

#[derive(Copy, Clone)]
enum GeluMode {
    Exact,
    Tanh,
    Sigmoid,
}

fn run(a: &OpArgs<'_>, op: U) -> Result<Vec<Tensor>, KernelError> {
    let x = a.req("x")?;
    let dt = x.dtype();
    if !dt.is_float() {
        if dt == DType::Bool || dt == DType::Str {
            return Err(KernelError::dtype(dt, "unary op operand"));
        }
        let v = x.to_i64()?;
        let v: Vec<i64> = match op {
            U::Abs => v.iter().map(|x| x.wrapping_abs()).collect(),
            U::Sign => v.iter().map(|x| x.signum()).collect(),
            U::Square => v.iter().map(|x| x.wrapping_mul(*x)).collect(),
            U::Relu => v.iter().map(|&x| x.max(0)).collect(),
            U::Floor | U::Ceil | U::Round => v,
            _ => {
                return Err(KernelError::dtype(
                    dt,
                    "this unary op needs a float operand",
                ));
            }
        };
        let od = match a.out_dtype(0) {
            Some(d) if d.is_int() => d,
            _ => dt,
        };
        return Ok(vec![Tensor::int_from_i64(od, x.shape().to_vec(), &v)?]);
    }
    let eps = match op {
        U::Rsqrt => a.float("epsilon")?.unwrap_or(1e-12),
        U::Log => a.float("epsilon")?.unwrap_or(1e-45),
        U::Inverse => a.float("epsilon")?.unwrap_or(1e-4),
        _ => 0.0,
    };
    let mode = if op == U::Gelu {
        match a.string("mode")?.unwrap_or("EXACT") {
            "EXACT" => GeluMode::Exact,
            "TANH_APPROXIMATION" => GeluMode::Tanh,
            "SIGMOID_APPROXIMATION" => GeluMode::Sigmoid,
            m => return Err(KernelError::bad("mode", format!("unknown gelu mode `{m}`"))),
        }
    } else {
        GeluMode::Exact
    };
    let xs = x.to_f32()?;
    let f = |v: f32| -> f32 {
        match op {
            U::Sqrt => v.sqrt(),
            U::Rsqrt => 1.0 / (v + eps).sqrt(),
            U::Exp => v.exp(),
            U::Exp2 => v.exp2(),
            U::Log => (v + eps).ln(),
            U::Tanh => v.tanh(),
            U::Abs => v.abs(),
            U::Sigmoid => sigmoid_f(v),
            U::Silu => v * sigmoid_f(v),
            U::Relu => v.max(0.0),
            U::Sin => v.sin(),
            U::Cos => v.cos(),
            U::Square => v * v,
            U::Inverse => 1.0 / (v + eps),
            U::Floor => v.floor(),
            U::Ceil => v.ceil(),
            U::Round => round_half_even(v),
            U::Sign => {
                if v > 0.0 {
                    1.0
                } else if v < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }
            U::Erf => erf(f64::from(v)) as f32,
            U::Gelu => match mode {
                GeluMode::Exact => {
                    (0.5 * f64::from(v) * (1.0 + erf(f64::from(v) / std::f64::consts::SQRT_2)))
                        as f32
                }
                GeluMode::Tanh => {
                    let c = (2.0 / std::f32::consts::PI).sqrt();
                    0.5 * v * (1.0 + (c * (v + 0.044715 * v * v * v)).tanh())
                }
                GeluMode::Sigmoid => v * sigmoid_f(1.702 * v),
            },
        }
    };
    let out: Vec<f32> = xs.iter().map(|&v| f(v)).collect();
    Ok(vec![Tensor::float_from_f32(
        a.float_out(0, dt),
        x.shape().to_vec(),
        out,
    )?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_values() {
        // reference values (Abramowitz & Stegun table 7.1 / high-precision)
        for (x, e) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
            (4.0, 0.999_999_984_582_742_1),
            (-1.5, -0.966_105_146_475_310_7),
        ] {
            assert!((erf(x) - e).abs() < 1e-12, "erf({x}) = {} vs {e}", erf(x));
        }
    }

    #[test]
    fn rounding_half_even() {
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(3.5), 4.0);
        assert_eq!(round_half_even(-2.5), -2.0);
        assert_eq!(round_half_even(2.4), 2.0);
        assert_eq!(round_half_even(-2.6), -3.0);
    }
}
