//! Where a head chunk keeps its full-vocabulary logits: the input of the `reduce_argmax` whose
//! result becomes `token_id` (through casts, reshapes, squeezes and the like). Our chunks call that
//! value `logits`; the reference pipeline's chunk4 calls it `logits_cast_fp16`; any chunk set with
//! the published I/O has one, whatever its name, because `token_id` is its argmax.

use mil::Function;
use std::collections::BTreeMap;

/// Ops that pass their `x` through without changing which element is which (the argmax index is
/// the same before and after).
const PASS_THROUGH: [&str; 5] = ["cast", "reshape", "squeeze", "expand_dims", "identity"];

/// The name of the value `function` takes the argmax of to produce its output `output`: from
/// `output` back through [`PASS_THROUGH`] ops to a `reduce_argmax`, whose `x` is returned. `None`
/// when `output` is not (a pass-through of) an argmax.
pub fn argmax_input(function: &Function, output: &str) -> Option<String> {
    let producer: BTreeMap<&str, &mil::Operation> = function
        .block
        .operations
        .iter()
        .flat_map(|op| op.outputs.iter().map(move |o| (o.name.as_str(), op)))
        .collect();
    let mut name = output;
    // every step moves to an earlier op: at most one step per op
    for _ in 0..=function.block.operations.len() {
        let op = producer.get(name)?;
        let x = op.input("x")?.name()?;
        if op.op_type == "reduce_argmax" {
            return Some(x.to_string());
        }
        if !PASS_THROUGH.contains(&op.op_type.as_str()) {
            return None;
        }
        name = x;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use mil::{DType, FunctionBuilder, TensorType};

    fn head(cast_logits: bool, cast_index: bool) -> Function {
        let mut b = FunctionBuilder::new("main");
        let x = b
            .input("x", TensorType::new(DType::F32, &[1, 1, 8]))
            .unwrap();
        let logits = if cast_logits {
            let h = b.cast("logits_cast_fp16", &x, DType::F16).unwrap();
            b.reshape("logits_flat", &h, &[8]).unwrap()
        } else {
            b.identity("logits", &x).unwrap()
        };
        let idx = b
            .reduce_argmax("argmax", &logits, -1, true, DType::I32)
            .unwrap();
        let tok = if cast_index {
            let c = b.cast("argmax_cast", &idx, DType::I32).unwrap();
            b.reshape("token_id", &c, &[1]).unwrap()
        } else {
            b.reshape("token_id", &idx, &[1]).unwrap()
        };
        let other = b.tanh("other", &x).unwrap();
        b.output("token_id", &tok).unwrap();
        b.output("other", &other).unwrap();
        b.finish().unwrap()
    }

    #[test]
    fn the_argmax_input_is_found_through_casts_and_reshapes() {
        assert_eq!(
            argmax_input(&head(false, false), "token_id").as_deref(),
            Some("logits")
        );
        assert_eq!(
            argmax_input(&head(true, true), "token_id").as_deref(),
            Some("logits_flat")
        );
        assert_eq!(argmax_input(&head(true, false), "other"), None);
        assert_eq!(argmax_input(&head(true, false), "nothing"), None);
    }
}
