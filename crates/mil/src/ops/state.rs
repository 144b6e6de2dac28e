//! States (iOS18): `read_state`, `write_state`.
//!
//! | op | params | output |
//! |---|---|---|
//! | `read_state` | `input` `state<ST>` | ST (a copy of the state's content) |
//! | `write_state` | `input` `state<ST>`; `data` ST | none |
//!
//! ST is a tensor type (Core ML only allows fp16 states; the model description enforces that).
//! pymil's `coreml_update_state` is serialised as `write_state` + `read_state`. `write_state` has a
//! side effect, so dead-code elimination keeps it. Not covered: nothing.

use super::util::fmt_shape;
use super::{OpDef, Opset, ParamSpec};
use crate::{InferError, ValueType};

/// The `read_state` op.
pub static READ_STATE: OpDef = OpDef {
    name: "read_state",
    opset: Opset::Ios18,
    params: &[ParamSpec::state("input")],
    infer: |args| {
        let st = args.tensor("input")?;
        Ok(vec![ValueType::Tensor(st.clone())])
    },
    constexpr: false,
};

/// The `write_state` op.
pub static WRITE_STATE: OpDef = OpDef {
    name: "write_state",
    opset: Opset::Ios18,
    params: &[ParamSpec::state("input"), ParamSpec::tensor("data", &[])],
    infer: |args| {
        let st = args.tensor("input")?;
        let data = args.tensor("data")?;
        if st != data {
            return Err(InferError::shape(format!(
                "data tensor<{}, {}> != state's tensor<{}, {}>",
                data.dtype,
                fmt_shape(&data.shape),
                st.dtype,
                fmt_shape(&st.shape)
            )));
        }
        Ok(vec![])
    },
    constexpr: false,
};
