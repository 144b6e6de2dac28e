//! `const_deduplication`: within a function, `const` ops with equal literals (same type and
//! bytes) become one; likewise `constexpr_*` ops with equal parameters. Uses of a removed
//! duplicate are redirected to the first occurrence (which precedes them, so SSA order holds).
//! Ops whose output is a function output are never removed (that would rename the output).
//!
//! Equal literals are bucketed by an FNV-1a digest and then compared in full, so a digest
//! collision can never merge different values. Across functions nothing is merged here: the
//! package writer shares equal blobs by content.
//!
//! ```text
//! before:  %a = const()[val = [0, 1]]; %b = const()[val = [0, 1]]; %c = add(x = %a, y = %b)
//! after:   %a = const()[val = [0, 1]]; %c = add(x = %a, y = %a)
//! ```

use super::Pass;
use crate::digest::{inputs_digest, value_digest};
use crate::{Binding, Function, Operation};
use std::collections::{BTreeMap, BTreeSet};

/// The const-deduplication pass.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConstDeduplication {
    /// Only `const` literals with at least this many elements are merged (0 = all, the default;
    /// coremltools merges only large tensors, which keeps small axis/flag consts next to their op
    /// in dumps). `constexpr_*` ops are always considered.
    pub min_elements: usize,
}

fn is_constexpr(op: &Operation) -> bool {
    crate::ops::lookup(&op.op_type).is_some_and(|d| d.constexpr)
}

fn element_count(v: &crate::Value) -> usize {
    match v {
        crate::Value::Tensor(t) => t.num_elements(),
        _ => 0,
    }
}

/// Two ops compute the same constant.
fn same_constant(a: &Operation, b: &Operation) -> bool {
    a.op_type == b.op_type
        && a.outputs.len() == b.outputs.len()
        && if a.op_type == "const" {
            a.attributes == b.attributes
        } else {
            a.inputs == b.inputs
        }
}

impl Pass for ConstDeduplication {
    fn name(&self) -> &'static str {
        "const_deduplication"
    }

    fn run_on_function(&self, f: &mut Function) -> usize {
        let outputs: BTreeSet<String> = f.block.outputs.iter().cloned().collect();
        let mut rename: BTreeMap<String, String> = BTreeMap::new();
        let mut buckets: BTreeMap<(String, u64), Vec<usize>> = BTreeMap::new();
        let mut kept: Vec<Operation> = Vec::with_capacity(f.block.operations.len());
        let mut removed = 0;
        for mut op in std::mem::take(&mut f.block.operations) {
            for b in op.inputs.values_mut().flatten() {
                if let Binding::Name(n) = b
                    && let Some(r) = rename.get(n)
                {
                    *n = r.clone();
                }
            }
            let digest = if op.op_type == "const" {
                op.attributes
                    .get("val")
                    .filter(|v| element_count(v) >= self.min_elements)
                    .map(value_digest)
            } else if is_constexpr(&op) {
                Some(inputs_digest(&op.inputs))
            } else {
                None
            };
            let Some(d) = digest else {
                kept.push(op);
                continue;
            };
            let protected = op.outputs.iter().any(|o| outputs.contains(&o.name));
            let bucket = buckets.entry((op.op_type.clone(), d)).or_default();
            let twin = bucket
                .iter()
                .copied()
                .find(|&i| same_constant(&kept[i], &op));
            match twin {
                Some(i) if !protected => {
                    for (dup, orig) in op.outputs.iter().zip(&kept[i].outputs) {
                        rename.insert(dup.name.clone(), orig.name.clone());
                    }
                    removed += 1;
                }
                _ => {
                    bucket.push(kept.len());
                    kept.push(op);
                }
            }
        }
        f.block.operations = kept;
        removed
    }
}
