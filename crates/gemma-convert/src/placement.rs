//! Op patterns of a chunk that the reference pipeline's placement audit saw leave the Neural Engine.
//!
//! CoreML-LLM audits every MIL op of its decode chunks with `MLComputePlan`
//! (`Sources/CoreMLLLM/ComputePlanAudit.swift`, constant and `constexpr_*` ops excluded). What it
//! recorded off the ANE:
//!
//! * the in-graph argmax tail of the head chunk (`ane_ops.py::InModelArgmax`: softcap `mul`,
//!   `tanh`, `mul`, `squeeze` ×2, `reduce_argmax`, `expand_dims`, `gather_along_axis`): 8 ops on the
//!   CPU in chunk4 on an iPhone 17 Pro (`docs/EXPERIMENTS.md`, "MLComputePlan silent-fallback
//!   audit", 2026-04-13), 9 non-ANE ops in chunk4 on a Mac (`docs/MAC_BENCH_2026-04-19.md`,
//!   `docs/ane_residency_baseline_2026-04-19.json`);
//! * one `identity` in chunk3, placed on no device ("unknown", a no-op; same audits).
//!
//! Nothing else left the ANE in those chunks (chunk1–3: 0 compute ops off the ANE). Our graphs
//! have the same argmax tail (reshapes where the reference squeezes and expands) and `identity`
//! ops where a declared input is unused or one value is two outputs; [`off_ane_patterns`] finds
//! both in a function.

use mil::{Binding, Function};
use std::collections::{BTreeMap, BTreeSet};

/// Where the facts above come from, in one line (printed by `inspect`).
pub const AUDIT_SOURCE: &str = "CoreML-LLM MLComputePlan audits: iPhone 17 Pro, docs/EXPERIMENTS.md 2026-04-13; Mac, docs/ane_residency_baseline_2026-04-19.json";

/// One pattern found in a function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    /// `argmax tail` or `identity`.
    pub name: &'static str,
    /// Op count by type (constants excluded).
    pub ops: BTreeMap<String, usize>,
    /// What the audit saw.
    pub audit: &'static str,
}

impl Pattern {
    /// Ops in the pattern.
    pub fn count(&self) -> usize {
        self.ops.values().sum()
    }
}

/// Ops a softcapped logit passes through between the LM head and the argmax.
const TAIL_BEFORE: [&str; 7] = [
    "mul",
    "tanh",
    "real_div",
    "reshape",
    "transpose",
    "squeeze",
    "expand_dims",
];
/// Ops the argmax index and the picked logit pass through on their way out.
const TAIL_AFTER: [&str; 6] = [
    "gather_along_axis",
    "reshape",
    "squeeze",
    "expand_dims",
    "cast",
    "identity",
];

/// The argmax tails and `identity` ops of `f`.
pub fn off_ane_patterns(f: &Function) -> Vec<Pattern> {
    let ops = &f.block.operations;
    let producer: BTreeMap<&str, usize> = ops
        .iter()
        .enumerate()
        .flat_map(|(i, op)| op.outputs.iter().map(move |o| (o.name.as_str(), i)))
        .collect();
    let inputs_of = |i: usize| -> Vec<usize> {
        ops[i]
            .inputs
            .values()
            .flatten()
            .filter_map(|b| match b {
                Binding::Name(n) => producer.get(n.as_str()).copied(),
                _ => None,
            })
            .collect()
    };
    let mut consumers: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..ops.len() {
        for p in inputs_of(i) {
            consumers.entry(p).or_default().push(i);
        }
    }
    let mut tail = BTreeSet::new();
    for (i, op) in ops.iter().enumerate() {
        if op.op_type != "reduce_argmax" {
            continue;
        }
        tail.insert(i);
        // back to the LM head through the softcap and layout ops
        let mut stack = inputs_of(i);
        while let Some(p) = stack.pop() {
            if TAIL_BEFORE.contains(&ops[p].op_type.as_str()) && tail.insert(p) {
                stack.extend(inputs_of(p));
            }
        }
        // forward to the outputs (the index, the picked logit)
        let mut stack = consumers.get(&i).cloned().unwrap_or_default();
        while let Some(c) = stack.pop() {
            if TAIL_AFTER.contains(&ops[c].op_type.as_str()) && tail.insert(c) {
                stack.extend(consumers.get(&c).cloned().unwrap_or_default());
            }
        }
    }
    let count = |set: &mut dyn Iterator<Item = usize>| {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for i in set {
            *m.entry(ops[i].op_type.clone()).or_default() += 1;
        }
        m
    };
    let mut out = Vec::new();
    if !tail.is_empty() {
        out.push(Pattern {
            name: "argmax tail",
            ops: count(&mut tail.iter().copied()),
            audit: "the reference's 8-op InModelArgmax tail ran on the CPU",
        });
    }
    let identities =
        count(&mut (0..ops.len()).filter(|&i| ops[i].op_type == "identity" && !tail.contains(&i)));
    if !identities.is_empty() {
        out.push(Pattern {
            name: "identity",
            ops: identities,
            audit: "placed on no device (a no-op) in the reference's chunk3",
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mil::builder::FunctionBuilder;
    use mil::{DType, TensorType};

    #[test]
    fn finds_the_softcap_argmax_gather_tail_and_identities() {
        let mut b = FunctionBuilder::new("main");
        let x = b
            .input("x", TensorType::new(DType::F16, &[1, 8, 1, 1]))
            .unwrap();
        let unused = b
            .input("unused", TensorType::new(DType::F16, &[1]))
            .unwrap();
        let w = mil::TensorValue::from_f16(&[16, 8, 1, 1], &[half::f16::ONE; 128]).unwrap();
        let logits = b.conv_1x1("lm_head", &x, w, None).unwrap();
        let raw = b.reshape("raw", &logits, &[1, 1, 16]).unwrap();
        let t = b.mul("over_cap", &raw, 1.0 / 30.0).unwrap();
        let t = b.tanh("tanh", &t).unwrap();
        let l = b.mul("logits", &t, 30.0).unwrap();
        let idx = b.reduce_argmax("argmax", &l, -1, true, DType::I32).unwrap();
        let picked = b.gather_along_axis("picked", &l, &idx, -1, false).unwrap();
        let tok = b.reshape("tok", &idx, &[1]).unwrap();
        let logit = b.reshape("logit", &picked, &[1]).unwrap();
        b.output("token_id", &tok).unwrap();
        b.output("token_logit", &logit).unwrap();
        b.output("unused_out", &unused).unwrap();
        let f = b.finish().unwrap();
        let p = off_ane_patterns(&f);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].name, "argmax tail");
        let want: BTreeMap<String, usize> = [
            ("gather_along_axis", 1),
            ("mul", 2),
            ("reduce_argmax", 1),
            ("reshape", 3),
            ("tanh", 1),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(p[0].ops, want, "the conv is not part of it");
        assert_eq!(p[1].name, "identity");
        assert_eq!(p[1].count(), 1);
    }
}
