//! Tensor builder methods: concat/split/tile/fill/select/identity, shape changes and slicing,
//! gathers, states, and the iOS18 constexpr compression ops (inline literals).

use super::params::{Slice, Split, boolean, bools, int, ints, string};
use super::{FunctionBuilder, Operand, Param, StateVar, Var};
use crate::{DType, MilError, TensorValue};

impl FunctionBuilder {
    // ---------------------------------------------------------------------------------------
    // tensor operations

    /// `concat` along `axis`.
    pub fn concat<O: Into<Operand>>(
        &mut self,
        name: &str,
        values: impl IntoIterator<Item = O>,
        axis: i32,
        interleave: bool,
    ) -> Result<Var, MilError> {
        let vals: Vec<Operand> = values.into_iter().map(Into::into).collect();
        let peer = vals.iter().find_map(Operand::dtype);
        let mut ps = Vec::with_capacity(vals.len());
        for v in vals {
            ps.push(self.param("concat", name, v, peer)?);
        }
        self.single(
            "concat",
            name,
            vec![
                ("values", Param::Many(ps)),
                ("axis", int(axis)),
                ("interleave", boolean(interleave)),
            ],
        )
    }

    /// `split` into parts along `axis`.
    pub fn split(
        &mut self,
        name: &str,
        x: &Var,
        how: Split,
        axis: i32,
    ) -> Result<Vec<Var>, MilError> {
        let p = match &how {
            Split::Num(n) => ("num_splits", int(*n)),
            Split::Sizes(s) => ("split_sizes", ints(s)),
        };
        self.op(
            "split",
            name,
            vec![("x", Param::Var(x.clone())), p, ("axis", int(axis))],
        )
    }

    /// `tile` by `reps` (one per axis).
    pub fn tile(&mut self, name: &str, x: &Var, reps: &[i32]) -> Result<Var, MilError> {
        self.single(
            "tile",
            name,
            vec![("x", Param::Var(x.clone())), ("reps", ints(reps))],
        )
    }

    /// `pad(x)` with `constant_val` (constant mode): `pad` holds (before, after) pairs of the last
    /// `pad.len() / 2` axes.
    pub fn pad_constant(
        &mut self,
        name: &str,
        x: &Var,
        pad: &[i32],
        value: f64,
    ) -> Result<Var, MilError> {
        let dtype = x.dtype();
        let v = self.param("pad", name, Operand::Scalar(value), Some(dtype))?;
        self.single(
            "pad",
            name,
            vec![
                ("x", Param::Var(x.clone())),
                ("pad", ints(pad)),
                ("mode", string("constant")),
                ("constant_val", v),
            ],
        )
    }

    /// `fill`: a tensor of `shape` filled with `value` of `dtype` (fp16, fp32, int32, bool).
    pub fn fill(
        &mut self,
        name: &str,
        shape: &[i32],
        value: f64,
        dtype: DType,
    ) -> Result<Var, MilError> {
        let v = self.param("fill", name, Operand::Scalar(value), Some(dtype))?;
        self.single("fill", name, vec![("shape", ints(shape)), ("value", v)])
    }

    /// `select(cond, a, b)`; a scalar `a`/`b` takes the other's dtype.
    pub fn select(
        &mut self,
        name: &str,
        cond: &Var,
        a: impl Into<Operand>,
        b: impl Into<Operand>,
    ) -> Result<Var, MilError> {
        let (a, b) = (a.into(), b.into());
        let (da, db) = (a.dtype(), b.dtype());
        let pa = self.param("select", name, a, db)?;
        let pb = self.param("select", name, b, da)?;
        self.single(
            "select",
            name,
            vec![("cond", Param::Var(cond.clone())), ("a", pa), ("b", pb)],
        )
    }

    /// `identity(x)`.
    pub fn identity(&mut self, name: &str, x: &Var) -> Result<Var, MilError> {
        self.unary("identity", name, x)
    }

    // ---------------------------------------------------------------------------------------
    // shape changes and slicing

    /// `reshape` to `shape` (iOS17 rules: −1 inferred, 0 copies the right-aligned dim of x).
    pub fn reshape(&mut self, name: &str, x: &Var, shape: &[i32]) -> Result<Var, MilError> {
        self.single(
            "reshape",
            name,
            vec![("x", Param::Var(x.clone())), ("shape", ints(shape))],
        )
    }

    /// `transpose` by `perm`.
    pub fn transpose(&mut self, name: &str, x: &Var, perm: &[i32]) -> Result<Var, MilError> {
        self.single(
            "transpose",
            name,
            vec![("x", Param::Var(x.clone())), ("perm", ints(perm))],
        )
    }

    /// `expand_dims` inserting size-1 dims at output positions `axes`.
    pub fn expand_dims(&mut self, name: &str, x: &Var, axes: &[i32]) -> Result<Var, MilError> {
        self.single(
            "expand_dims",
            name,
            vec![("x", Param::Var(x.clone())), ("axes", ints(axes))],
        )
    }

    /// `squeeze` the listed size-1 `axes`.
    pub fn squeeze(&mut self, name: &str, x: &Var, axes: &[i32]) -> Result<Var, MilError> {
        self.single(
            "squeeze",
            name,
            vec![("x", Param::Var(x.clone())), ("axes", ints(axes))],
        )
    }

    fn slice_params(
        &self,
        op: &str,
        name: &str,
        x: &Var,
        s: Slice,
    ) -> Result<Vec<(&'static str, Param)>, MilError> {
        let r = x.rank();
        let begin = self.param(op, name, s.begin, Some(DType::I32))?;
        let end = self.param(op, name, s.end, Some(DType::I32))?;
        Ok(vec![
            ("begin", begin),
            ("end", end),
            ("stride", ints(&s.stride.unwrap_or_else(|| vec![1; r]))),
            (
                "begin_mask",
                bools(&s.begin_mask.unwrap_or_else(|| vec![false; r])),
            ),
            (
                "end_mask",
                bools(&s.end_mask.unwrap_or_else(|| vec![false; r])),
            ),
            (
                "squeeze_mask",
                bools(&s.squeeze_mask.unwrap_or_else(|| vec![false; r])),
            ),
        ])
    }

    /// `slice_by_index` with every parameter explicit.
    pub fn slice_by_index(&mut self, name: &str, x: &Var, s: Slice) -> Result<Var, MilError> {
        let mut p = vec![("x", Param::Var(x.clone()))];
        p.extend(self.slice_params("slice_by_index", name, x, s)?);
        self.single("slice_by_index", name, p)
    }

    /// Python-style `x[..., start:end, ...]` on one `axis` (other axes whole; `end = None` = to the
    /// end; negative indices wrap).
    pub fn slice_axis(
        &mut self,
        name: &str,
        x: &Var,
        axis: i32,
        start: i32,
        end: Option<i32>,
    ) -> Result<Var, MilError> {
        let r = x.rank() as i32;
        let a = if axis < 0 { axis + r } else { axis };
        if !(0..r).contains(&a) {
            return Err(self.arg_error(
                "slice_by_index",
                name,
                format!("axis {axis} out of range for rank {r}"),
            ));
        }
        let a = a as usize;
        let r = r as usize;
        let mut begin = vec![0; r];
        let mut endv = vec![0; r];
        let mut bm = vec![true; r];
        let mut em = vec![true; r];
        begin[a] = start;
        bm[a] = false;
        if let Some(e) = end {
            endv[a] = e;
            em[a] = false;
        }
        let s = Slice::new(&begin, &endv).begin_mask(&bm).end_mask(&em);
        self.slice_by_index(name, x, s)
    }

    /// `slice_by_size`: `x[begin : begin+size]` per axis (`begin` literal or runtime).
    pub fn slice_by_size(
        &mut self,
        name: &str,
        x: &Var,
        begin: impl Into<Operand>,
        size: &[i32],
    ) -> Result<Var, MilError> {
        let b = self.param("slice_by_size", name, begin.into(), Some(DType::I32))?;
        self.single(
            "slice_by_size",
            name,
            vec![
                ("x", Param::Var(x.clone())),
                ("begin", b),
                ("size", ints(size)),
            ],
        )
    }

    /// `slice_update`: x with the slice `s` replaced by `update` (iOS18).
    pub fn slice_update(
        &mut self,
        name: &str,
        x: &Var,
        update: &Var,
        s: Slice,
    ) -> Result<Var, MilError> {
        let mut p = vec![
            ("x", Param::Var(x.clone())),
            ("update", Param::Var(update.clone())),
        ];
        p.extend(self.slice_params("slice_update", name, x, s)?);
        self.single("slice_update", name, p)
    }

    // ---------------------------------------------------------------------------------------
    // gather

    /// `gather` (x may be a literal, e.g. an embedding table).
    pub fn gather(
        &mut self,
        name: &str,
        x: impl Into<Operand>,
        indices: impl Into<Operand>,
        axis: i32,
        batch_dims: i32,
        validate_indices: bool,
    ) -> Result<Var, MilError> {
        let px = self.param("gather", name, x.into(), None)?;
        let pi = self.param("gather", name, indices.into(), Some(DType::I32))?;
        self.single(
            "gather",
            name,
            vec![
                ("x", px),
                ("indices", pi),
                ("axis", int(axis)),
                ("batch_dims", int(batch_dims)),
                ("validate_indices", boolean(validate_indices)),
            ],
        )
    }

    /// `gather_along_axis` (torch.gather).
    pub fn gather_along_axis(
        &mut self,
        name: &str,
        x: impl Into<Operand>,
        indices: impl Into<Operand>,
        axis: i32,
        validate_indices: bool,
    ) -> Result<Var, MilError> {
        let px = self.param("gather_along_axis", name, x.into(), None)?;
        let pi = self.param("gather_along_axis", name, indices.into(), Some(DType::I32))?;
        self.single(
            "gather_along_axis",
            name,
            vec![
                ("x", px),
                ("indices", pi),
                ("axis", int(axis)),
                ("validate_indices", boolean(validate_indices)),
            ],
        )
    }

    // ---------------------------------------------------------------------------------------
    // states

    /// `read_state(state)`.
    pub fn read_state(&mut self, name: &str, state: &StateVar) -> Result<Var, MilError> {
        self.single(
            "read_state",
            name,
            vec![("input", Param::State(state.clone()))],
        )
    }

    /// `write_state(state, data)` (no output).
    pub fn write_state(
        &mut self,
        name: &str,
        state: &StateVar,
        data: &Var,
    ) -> Result<(), MilError> {
        let outs = self.op(
            "write_state",
            name,
            vec![
                ("input", Param::State(state.clone())),
                ("data", Param::Var(data.clone())),
            ],
        )?;
        debug_assert!(outs.is_empty());
        Ok(())
    }

    /// pymil's `coreml_update_state(state, value)`, serialised the way coremltools writes it:
    /// `write_state(state, value)` (op `{name}_write_state`) then `read_state(state)` (output
    /// `{name}`). Returns the state's new content, so later ops read the value after the write
    /// (the in-place KV-cache update pattern: `read_state → slice_update → update_state`).
    pub fn update_state(
        &mut self,
        name: &str,
        state: &StateVar,
        value: &Var,
    ) -> Result<Var, MilError> {
        self.write_state(&format!("{name}_write_state"), state, value)?;
        self.read_state(name, state)
    }

    // ---------------------------------------------------------------------------------------
    // compression (iOS18 constexpr ops, inline literals)

    /// `constexpr_lut_to_dense(indices, lut)`: a palettized weight (scalar LUT entries).
    pub fn lut_to_dense(
        &mut self,
        name: &str,
        indices: TensorValue,
        lut: TensorValue,
    ) -> Result<Var, MilError> {
        self.single(
            "constexpr_lut_to_dense",
            name,
            vec![
                ("indices", Param::Inline(indices)),
                ("lut", Param::Inline(lut)),
            ],
        )
    }

    /// `constexpr_lut_to_dense` with vector palettization along `vector_axis`.
    pub fn lut_to_dense_vector(
        &mut self,
        name: &str,
        indices: TensorValue,
        lut: TensorValue,
        vector_axis: i32,
    ) -> Result<Var, MilError> {
        self.single(
            "constexpr_lut_to_dense",
            name,
            vec![
                ("indices", Param::Inline(indices)),
                ("lut", Param::Inline(lut)),
                (
                    "vector_axis",
                    Param::Inline(TensorValue::scalar_i32(vector_axis)),
                ),
            ],
        )
    }

    /// `constexpr_blockwise_shift_scale(data, scale[, offset])`: a blockwise quantized weight.
    pub fn blockwise_shift_scale(
        &mut self,
        name: &str,
        data: TensorValue,
        scale: TensorValue,
        offset: Option<TensorValue>,
    ) -> Result<Var, MilError> {
        let mut p = vec![
            ("data", Param::Inline(data)),
            ("scale", Param::Inline(scale)),
        ];
        if let Some(o) = offset {
            p.push(("offset", Param::Inline(o)));
        }
        self.single("constexpr_blockwise_shift_scale", name, p)
    }
}
