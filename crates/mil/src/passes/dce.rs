//! `dead_code_elimination`: remove ops none of whose outputs are used.
//!
//! Walks each function block backwards from its outputs. An op is kept if one of its outputs is
//! a block output or is used by a kept op, or if it has a side effect (`write_state`, or no
//! outputs at all). Function inputs are never removed, even when unused (Core ML keeps the
//! declared interface; coremltools adds an `identity` to keep them alive in MIL).
//!
//! ```text
//! before:  %c = const()[val = 2]; %d = mul(x = %x, y = %c); %e = add(x = %x, y = %x) -> (%e)
//! after:   %e = add(x = %x, y = %x) -> (%e)
//! ```

use super::Pass;
use crate::{Binding, Function};
use std::collections::BTreeSet;

/// The dead-code-elimination pass.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadCodeElimination;

fn has_side_effect(op: &crate::Operation) -> bool {
    op.outputs.is_empty() || op.op_type == "write_state"
}

impl Pass for DeadCodeElimination {
    fn name(&self) -> &'static str {
        "dead_code_elimination"
    }

    fn run_on_function(&self, f: &mut Function) -> usize {
        let mut live: BTreeSet<String> = f.block.outputs.iter().cloned().collect();
        let mut keep = vec![false; f.block.operations.len()];
        for (i, op) in f.block.operations.iter().enumerate().rev() {
            if has_side_effect(op) || op.outputs.iter().any(|o| live.contains(&o.name)) {
                keep[i] = true;
                for b in op.inputs.values().flatten() {
                    if let Binding::Name(n) = b {
                        live.insert(n.clone());
                    }
                }
            }
        }
        let before = f.block.operations.len();
        let mut k = keep.into_iter();
        f.block.operations.retain(|_| k.next().unwrap_or(true));
        before - f.block.operations.len()
    }
}
