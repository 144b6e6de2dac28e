//! `const` (iOS15).
//!
//! * Semantics: a compile-time literal. No inputs; attributes `name` and `val` (the literal).
//! * Output: exactly one, of the literal's type.
//! * Serialisation: small literals are immediate values, large ones (≥ 10 elements of a blob dtype)
//!   go to `weight.bin` (decided by `mlpackage`, not here).
//! * Not covered: nothing (list/tuple/dict literals are typed but never emitted by our builder).

use super::{OpDef, Opset};
use crate::{InferError, Operation, ValueType};

/// The `const` op.
pub static CONST: OpDef = OpDef {
    name: "const",
    opset: Opset::Ios15,
    params: &[],
    infer: |_| {
        Err(InferError::Structure(
            "const is typed from its `val` attribute".into(),
        ))
    },
    constexpr: false,
};

/// Type a `const` op from its `val` attribute (no inputs, no other attributes).
pub fn infer_const(op: &Operation) -> Result<Vec<ValueType>, InferError> {
    if let Some(p) = op.inputs.keys().next() {
        return Err(InferError::UnknownParam(p.clone()));
    }
    if let Some(a) = op.attributes.keys().find(|k| *k != "val") {
        return Err(InferError::Structure(format!(
            "unexpected attribute `{a}` on const (only `name` and `val`)"
        )));
    }
    let val = op
        .attributes
        .get("val")
        .ok_or_else(|| InferError::Structure("const op without a `val` attribute".into()))?;
    Ok(vec![val.value_type()])
}
