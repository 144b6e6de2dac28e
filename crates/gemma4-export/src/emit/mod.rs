//! MIL emission of one chunk's `decode_q1` function.
//!
//! One code path emits every layer whatever the chunking: the [`ChunkPlan`] says which layers a chunk
//! holds, which KV slot each KV-owning layer writes, where shared KV comes from (a producer inside the
//! chunk, or the `kv13_*` / `kv14_*` inputs) and what the chunk publishes. The cache update follows the
//! plan's [`CachePolicy`] per attention kind (shift register or one-hot positional blend) and full
//! attention follows its [`AttentionForm`].
//!
//! Names: layer `i`'s ops live in scope `L{i}` (`L3_attn_q_proj`, ...); the pre-argmax logits are the
//! value named [`LOGITS`] so the runtime's parity check can read them.

mod blocks;
mod layer;

use crate::error::{ExportError, Result};
use crate::layout::LayerKind;
use crate::plan::{ChunkPlan, ChunkSpec, IoDType};
use crate::weights::Weights;
use blocks::{R, from_nchw, rms_norm, to_nchw};
use mil::builder::FunctionBuilder;
use mil::{DType, Function, TensorType, Var};
use std::collections::BTreeMap;

/// Name of the decode function.
pub const DECODE_FN: &str = "decode_q1";
/// Name of the softcapped, pre-argmax logits value in the head chunk (`[1, 1, V]`).
pub const LOGITS: &str = "logits";

fn io_dtype(d: IoDType) -> DType {
    match d {
        IoDType::Float16 => DType::F16,
        IoDType::Float32 => DType::F32,
        IoDType::Int32 => DType::I32,
    }
}

/// Per-function emission state.
pub(crate) struct Ctx<'p> {
    pub plan: &'p ChunkPlan,
    pub chunk: &'p ChunkSpec,
    pub inputs: BTreeMap<String, Var>,
    /// `1 − update_mask`, built once when some cache is positional.
    pub keep_mask: Option<Var>,
    /// `per_layer_combined` (input, or computed by the chunk holding layer 0).
    pub ple: Option<Var>,
    /// New cache per (kind, slot): (K, V), full padded width.
    pub new_caches: BTreeMap<(LayerKind, usize), (Var, Var)>,
    /// K/V a producer layer attends over (true head dim), by kind.
    pub shared: BTreeMap<LayerKind, (Var, Var)>,
}

impl Ctx<'_> {
    pub(crate) fn input(&self, name: &str) -> R<Var> {
        self.inputs
            .get(name)
            .cloned()
            .ok_or_else(|| mil::MilError::Argument {
                op: "chunk".into(),
                name: name.into(),
                msg: format!("chunk {} has no input `{name}`", self.chunk.name),
            })
    }
}

/// Emit the `decode_q1` function of `chunk`.
pub fn emit_decode(plan: &ChunkPlan, chunk: &ChunkSpec, w: &mut Weights<'_>) -> Result<Function> {
    let mil_err = |source| ExportError::Mil {
        chunk: chunk.name.clone(),
        source: Box::new(source),
    };
    let mut b = FunctionBuilder::new(DECODE_FN);
    let (ins, outs) = plan.decode_io(chunk);
    let mut ctx = Ctx {
        plan,
        chunk,
        inputs: BTreeMap::new(),
        keep_mask: None,
        ple: None,
        new_caches: BTreeMap::new(),
        shared: BTreeMap::new(),
    };
    for t in &ins {
        let v = b
            .input(&t.name, TensorType::new(io_dtype(t.dtype), &t.shape))
            .map_err(mil_err)?;
        ctx.inputs.insert(t.name.clone(), v);
    }
    let lay = &plan.layout;

    if let Some(um) = ctx.inputs.get("update_mask").cloned() {
        ctx.keep_mask = Some(b.sub("update_keep", 1.0, &um).map_err(mil_err)?);
    }

    let mut x = ctx.input("hidden_states").map_err(mil_err)?;
    let mut named_outputs: Vec<(String, Var)> = Vec::new();

    // PLE: chunk 1 builds per_layer_combined from per_layer_raw and the scaled embedding.
    if chunk.computes_ple {
        let combined = emit_ple_combine(&mut b, &ctx, &x, w)?;
        named_outputs.push(("per_layer_combined_out".into(), combined.clone()));
        ctx.ple = Some(combined);
    } else if lay.ple_dim > 0 {
        ctx.ple = Some(ctx.input("per_layer_combined").map_err(mil_err)?);
    }

    for i in chunk.layers.clone() {
        x = layer::emit_layer(&mut b, &mut ctx, w, i, &x)?;
    }

    let mut head_outputs: Vec<(String, Var)> = Vec::new();
    if chunk.has_head {
        let (tok, logit, normed) = emit_head(&mut b, &ctx, w, &x)?;
        head_outputs.push(("token_id".into(), tok));
        head_outputs.push(("token_logit".into(), logit));
        x = normed;
    }

    // Caches: concatenate the new slots in slot order (a chunk owning no layer of a kind passes its
    // dummy slot through).
    let mut cache_outputs: Vec<(String, Var)> = Vec::new();
    if chunk.owns_kv() {
        for (kind, label, slots) in [
            (LayerKind::Sliding, "sliding", chunk.sliding_slots),
            (LayerKind::Full, "full", chunk.full_slots),
        ] {
            for (which, idx) in [("K", 0usize), ("V", 1usize)] {
                let parts: Vec<Var> = (0..slots)
                    .filter_map(|s| ctx.new_caches.get(&(kind, s)))
                    .map(|(k, v)| if idx == 0 { k.clone() } else { v.clone() })
                    .collect();
                let out = if parts.len() == slots && slots > 1 {
                    b.concat(&format!("{which}_{label}_stack"), &parts, 0, false)
                        .map_err(mil_err)?
                } else if parts.len() == 1 && slots == 1 {
                    parts[0].clone()
                } else {
                    ctx.input(&format!("{which}_{label}_in")).map_err(mil_err)?
                };
                cache_outputs.push((format!("{which}_{label}_out"), out));
            }
        }
    }
    if chunk.emits_shared_kv {
        for (kind, k_name, v_name) in [
            (LayerKind::Sliding, "kv13_k", "kv13_v"),
            (LayerKind::Full, "kv14_k", "kv14_v"),
        ] {
            let (k, v) = ctx.shared.get(&kind).cloned().ok_or_else(|| {
                ExportError::Unsupported(format!(
                    "chunk {} publishes shared KV but holds no {kind:?} producer",
                    chunk.name
                ))
            })?;
            cache_outputs.push((k_name.into(), k));
            cache_outputs.push((v_name.into(), v));
        }
    }

    // Declared order of the contract.
    let mut all: BTreeMap<String, Var> = BTreeMap::new();
    all.extend(head_outputs);
    all.insert("hidden_states_out".into(), x);
    all.extend(cache_outputs);
    all.extend(named_outputs);
    for t in &outs {
        let v = all.get(&t.name).ok_or_else(|| {
            ExportError::Unsupported(format!(
                "chunk {}: output `{}` was not produced",
                chunk.name, t.name
            ))
        })?;
        b.output(&t.name, v).map_err(mil_err)?;
    }

    b.finish().map_err(mil_err)
}

/// Keep every declared input alive with an `identity` op, as coremltools does (the Swift runtime feeds
/// the same inputs to every chunk, e.g. `update_mask` to chunks without full-attention owners). Runs
/// after the optimisation passes, whose dead-code elimination would drop these ops.
pub fn keep_inputs_alive(f: &mut Function) {
    let used: std::collections::BTreeSet<String> = f
        .block
        .operations
        .iter()
        .flat_map(|op| op.inputs.values().flatten())
        .filter_map(|bd| bd.name().map(str::to_string))
        .chain(f.block.outputs.iter().cloned())
        .collect();
    let taken: std::collections::BTreeSet<String> = f
        .block
        .operations
        .iter()
        .flat_map(|op| op.outputs.iter().map(|o| o.name.clone()))
        .collect();
    for input in f.inputs.clone() {
        if used.contains(&input.name) {
            continue;
        }
        let mut name = format!("{}_unused", input.name);
        while taken.contains(&name) {
            name.push('_');
        }
        let mut op = mil::Operation::new("identity", name.clone());
        op.inputs
            .insert("x".into(), vec![mil::Binding::Name(input.name.clone())]);
        op.outputs.push(mil::NamedValueType {
            name,
            ty: input.ty.clone(),
        });
        f.block.operations.push(op);
    }
}

/// `per_layer_combined = (RMSNorm_P(proj(x)·H^−½) + per_layer_raw)·2^−½`, `[1, 1, L·P]`.
fn emit_ple_combine(
    b: &mut FunctionBuilder,
    ctx: &Ctx<'_>,
    x: &Var,
    w: &mut Weights<'_>,
) -> Result<Var> {
    let lay = &ctx.plan.layout;
    let (h, l, p) = (lay.hidden, lay.num_layers(), lay.ple_dim);
    let chunk = ctx.chunk.name.clone();
    let mil_err = |source| ExportError::Mil {
        chunk: chunk.clone(),
        source: Box::new(source),
    };
    b.push_scope("ple");
    let x4 = to_nchw(b, "x_nchw", x, h).map_err(mil_err)?;
    let wt = w.conv_weight(
        b,
        "model_projection_weight",
        "per_layer_model_projection.weight",
        l * p,
        h,
    )?;
    let gain = w.vector("per_layer_projection_norm.weight", p)?;
    let r: R<Var> = (|| {
        let proj = b.conv_1x1("model_projection", &x4, &wt, None)?;
        let proj = b.mul("projection_scaled", &proj, (h as f64).powf(-0.5))?;
        let proj = b.reshape("projection_slices", &proj, &[1, l as i32, p as i32])?;
        let normed = rms_norm(b, "projection_norm", &proj, Some(gain), lay.rms_norm_eps, p)?;
        let raw = ctx.input("per_layer_raw")?;
        let raw = b.reshape("raw_slices", &raw, &[1, l as i32, p as i32])?;
        let sum = b.add("sum", &normed, &raw)?;
        let sum = b.mul("combined_scaled", &sum, std::f64::consts::FRAC_1_SQRT_2)?;
        b.reshape("combined", &sum, &[1, 1, (l * p) as i32])
    })();
    b.pop_scope();
    r.map_err(mil_err)
}

/// Final norm, tied LM head, softcap, argmax: returns `(token_id [1] int32, token_logit [1],
/// normed hidden [1, 1, H])`.
fn emit_head(
    b: &mut FunctionBuilder,
    ctx: &Ctx<'_>,
    w: &mut Weights<'_>,
    x: &Var,
) -> Result<(Var, Var, Var)> {
    let lay = &ctx.plan.layout;
    let (h, v) = (lay.hidden, lay.vocab);
    let chunk = ctx.chunk.name.clone();
    let mil_err = |source| ExportError::Mil {
        chunk: chunk.clone(),
        source: Box::new(source),
    };
    let gain = w.vector("norm.weight", h)?;
    let normed = rms_norm(b, "final_norm", x, Some(gain), lay.rms_norm_eps, h).map_err(mil_err)?;
    let lm = w.conv_weight(b, "lm_head_weight", lay.lm_head_key(), v, h)?;
    let r: R<(Var, Var)> = (|| {
        let x4 = to_nchw(b, "final_nchw", &normed, h)?;
        let logits = b.conv_1x1("lm_head", &x4, &lm, None)?;
        let logits = match lay.final_logit_softcapping {
            Some(c) => {
                let raw = from_nchw(b, "logits_raw", &logits, v)?;
                let t = b.mul("logits_over_cap", &raw, 1.0 / c)?;
                let t = b.tanh("logits_tanh", &t)?;
                b.mul(LOGITS, &t, c)?
            }
            None => from_nchw(b, LOGITS, &logits, v)?,
        };
        let idx = b.reduce_argmax("argmax", &logits, -1, true, DType::I32)?;
        let picked = b.gather_along_axis("picked_logit", &logits, &idx, -1, false)?;
        let tok = b.reshape("token_id_flat", &idx, &[1])?;
        let logit = b.reshape("token_logit_flat", &picked, &[1])?;
        Ok((tok, logit))
    })();
    let (tok, logit) = r.map_err(mil_err)?;
    Ok((tok, logit, normed))
}
