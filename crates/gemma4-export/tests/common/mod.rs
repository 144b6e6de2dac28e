//! Test host for decode / verify chunk functions: what an on-device runtime does around the chunks
//! (embedding lookup, masks, RoPE rows, KV buffers, hand-over between chunks), written against the
//! I/O contract only, so the tests exercise the emitted graphs the way a runtime would — including
//! in-memory chunks that were never written. Prefill goes through `mil_runtime::chunkset` (the
//! product's own host) with [`Exact`] embeddings.
//!
//! Masks (0 visible, −∞ hidden):
//! * decode at `p`: shift register (len L) — the last `min(p+1, L)` slots; positional (len L) —
//!   slots `≤ p` (and `> p − W` for a positional sliding cache);
//! * verify at `p..p+K−1`, query `q`: shift register — slots `L−K−p ≤ j ≤ L−K+q` (after the in-graph
//!   shift by K); positional — `j ≤ p+q` (and `> p+q−W` for sliding); `update_indicator[c][j] = [c = p+j]`;

#![allow(dead_code)]

use gemma4_export::build::BuildOptions;
use gemma4_export::plan::{CachePolicy, ChunkPlan, PlanOptions};
use gemma4_export::{Compression, IoTensor, LayerKind, ModelLayout, Variant, Weights};
use mil_runtime::{Backend, Tensor, TensorMap};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fixture checkpoint directory.
pub fn fixture(name: &str) -> PathBuf {
    root().join("fixtures/models").join(name)
}

/// The options every test build starts from: the fixture `model` into `out`, ctx 64, otherwise the
/// CLI's defaults (swa4, INT4 with group size 32, fp16, `decode_q1` only); tests change what they
/// test with the builder's setters.
pub fn opts(model: &str, out: &Path) -> BuildOptions {
    BuildOptions::new(fixture(model), out)
        .model_source(format!("fixtures/models/{model}"))
        .ctx(64)
}

/// A weight preparer over `ckpt` without a thread pool.
pub fn weights(ckpt: &gemma4::Checkpoint, fp32: bool, compression: Compression) -> Weights<'_> {
    Weights::new(ckpt, fp32, compression, None)
}

/// An I/O table: `(name, shape, dtype)` per tensor.
pub type Table = Vec<(String, Vec<usize>, String)>;

/// Our I/O list `ios` as a [`Table`].
pub fn table_of(ios: &[IoTensor]) -> Table {
    ios.iter()
        .map(|t| {
            (
                t.name.clone(),
                t.shape.clone(),
                t.dtype.as_str().to_string(),
            )
        })
        .collect()
}

/// The fp16 plan of `variant` at context `ctx` for `layout`.
pub fn plan_of(layout: &ModelLayout, variant: Variant, ctx: usize) -> ChunkPlan {
    ChunkPlan::new(
        layout,
        &PlanOptions {
            variant,
            ctx,
            fp32: false,
        },
    )
    .unwrap()
}

/// The reference pipeline's I/O of `chunk` (`fixtures/reference-io/<chunk>.json`).
pub fn reference(chunk: &str) -> serde_json::Value {
    let p = root()
        .join("fixtures/reference-io")
        .join(format!("{chunk}.json"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// A reference-io `inputs` / `outputs` list as a [`Table`].
pub fn io_table(v: &serde_json::Value) -> Table {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e[0].as_str().unwrap().to_string(),
                e[1].as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect(),
                e[2].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Exact tables and RoPE rows from the checkpoint (what HF computes, in f32).
pub struct Model {
    pub ckpt: gemma4::Checkpoint,
    pub layout: ModelLayout,
    embed: Vec<f32>,
    ple: Vec<f32>,
    h: usize,
    lp: usize,
    se: f32,
    sp: f32,
    rope: BTreeMap<&'static str, (usize, Vec<f32>)>,
}

impl Model {
    pub fn open(name: &str) -> Model {
        let ckpt = gemma4::Checkpoint::open(fixture(name)).unwrap();
        let cfg = ckpt.config().clone();
        let layout = ModelLayout::from_config(&cfg);
        let (es, embed) = ckpt.load_f32("embed_tokens.weight").unwrap();
        let (ps, ple) = ckpt.load_f32("embed_tokens_per_layer.weight").unwrap();
        let mut rope = BTreeMap::new();
        for (t, c, s) in [
            (gemma4::config::LayerType::Sliding, "cos_s", "sin_s"),
            (gemma4::config::LayerType::Full, "cos_f", "sin_f"),
        ] {
            let table = gemma4::rope::RopeTable::new(&cfg, t).unwrap();
            let (cos, sin) = table.cos_sin(0, 256);
            rope.insert(c, (table.head_dim, cos));
            rope.insert(s, (table.head_dim, sin));
        }
        Model {
            layout,
            embed,
            ple,
            h: es[1],
            lp: ps[1],
            se: (cfg.hidden_size() as f32).sqrt(),
            sp: (cfg.hidden_size_per_layer_input() as f32).sqrt(),
            rope,
            ckpt,
        }
    }

    pub fn plan(&self, variant: Variant, ctx: usize, fp32: bool) -> ChunkPlan {
        ChunkPlan::new(&self.layout, &PlanOptions { variant, ctx, fp32 }).unwrap()
    }

    /// Scaled embedding rows of `tokens`, concatenated.
    pub fn hidden(&self, tokens: &[u32]) -> Vec<f32> {
        tokens
            .iter()
            .flat_map(|&t| {
                let t = t as usize;
                self.embed[t * self.h..(t + 1) * self.h]
                    .iter()
                    .map(|x| x * self.se)
            })
            .collect()
    }

    /// Scaled PLE rows of `tokens`, concatenated.
    pub fn ple_raw(&self, tokens: &[u32]) -> Vec<f32> {
        tokens
            .iter()
            .flat_map(|&t| {
                let t = t as usize;
                self.ple[t * self.lp..(t + 1) * self.lp]
                    .iter()
                    .map(|x| x * self.sp)
            })
            .collect()
    }

    /// RoPE rows of positions `start..start+n` for `key` (`cos_s`, `sin_s`, `cos_f`, `sin_f`).
    pub fn rope_rows(&self, key: &str, start: usize, n: usize) -> Vec<f32> {
        let (d, v) = &self.rope[key];
        v[start * d..(start + n) * d].to_vec()
    }
}

/// The checkpoint's exact (f32) embeddings as a runtime [`Embedder`](mil_runtime::chunkset::Embedder).
pub struct Exact<'m>(pub &'m Model);

impl mil_runtime::chunkset::Embedder for Exact<'_> {
    fn hidden(&self, t: u32) -> Result<Vec<f32>, mil_runtime::chunkset::ChunkSetError> {
        Ok(self.0.hidden(&[t]))
    }
    fn ple_raw(&self, t: u32) -> Result<Vec<f32>, mil_runtime::chunkset::ChunkSetError> {
        Ok(self.0.ple_raw(&[t]))
    }
}

/// A float tensor of the declared dtype.
pub fn tensor(fp32: bool, shape: &[usize], v: &[f32]) -> Tensor {
    if fp32 {
        Tensor::from_f32(shape, v.to_vec()).unwrap()
    } else {
        Tensor::f16_from_f32(shape, v).unwrap()
    }
}

pub fn values(t: &Tensor) -> Vec<f32> {
    t.to_f32().unwrap().into_owned()
}

/// Max absolute difference.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

pub fn argmax(x: &[f32]) -> usize {
    x.iter()
        .enumerate()
        .fold(0, |b, (i, &y)| if y > x[b] { i } else { b })
}

const NEG: f32 = f32::NEG_INFINITY;

/// Persistent KV buffers per (chunk index, input name).
pub type Kv = BTreeMap<(usize, String), Tensor>;

/// One decode step's results.
pub struct Step {
    /// `hidden_states_out` of every chunk.
    pub hidden: Vec<Vec<f32>>,
    pub logits: Vec<f32>,
    pub token: u32,
    /// The updated caches of every chunk (`K_sliding_out`, ...).
    pub caches: Vec<TensorMap>,
    /// Every chunk's outputs.
    pub outputs: Vec<TensorMap>,
}

/// One verify call's results.
pub struct Verify {
    /// `hidden_states_out` of every chunk, `[K, H]` row-major.
    pub hidden: Vec<Vec<f32>>,
    /// `[K, V]` logits.
    pub logits: Vec<f32>,
    pub tokens: Vec<u32>,
    /// Every chunk's outputs.
    pub outputs: Vec<TensorMap>,
}

/// A chunk set driven by the test host.
pub struct Host<'m> {
    pub model: &'m Model,
    pub plan: ChunkPlan,
    pub chunks: Vec<(String, Box<dyn Backend>)>,
    /// Decode only: also hide the oldest `hide_oldest` slots of shift-register caches (emulates
    /// what `verify_qK`'s shift by K drops for query `K − 1 − hide_oldest`).
    pub hide_oldest: usize,
}

impl<'m> Host<'m> {
    /// Load the decode chunks of a set on disk.
    pub fn open(model: &'m Model, plan: ChunkPlan, dir: &Path) -> Host<'m> {
        let chunks = plan
            .chunks
            .iter()
            .map(|c| {
                let b = mil_runtime::load_backend(
                    mil_runtime::BackendKind::Cpu,
                    &dir.join(format!("{}.mlpackage", c.name)),
                    &mil_runtime::LoadOptions::default(),
                )
                .unwrap();
                (c.name.clone(), b)
            })
            .collect();
        Host::new(model, plan, chunks)
    }

    /// A host over loaded chunks (in plan order).
    pub fn new(
        model: &'m Model,
        plan: ChunkPlan,
        chunks: Vec<(String, Box<dyn Backend>)>,
    ) -> Host<'m> {
        Host {
            model,
            plan,
            chunks,
            hide_oldest: 0,
        }
    }

    fn fp32(&self) -> bool {
        self.plan.fp32
    }

    fn mask_row(&self, kind: LayerKind, len: usize, p: usize, q: usize, k: usize) -> Vec<f32> {
        let (policy, window) = match kind {
            LayerKind::Sliding => (
                self.plan.sliding_cache,
                Some(self.model.layout.sliding_window),
            ),
            LayerKind::Full => (self.plan.full_cache, None),
        };
        let pos = p + q;
        (0..len)
            .map(|j| {
                let visible = match policy {
                    CachePolicy::ShiftRegister { .. } => {
                        let hidden = if k == 1 { self.hide_oldest } else { 0 };
                        let j = j as isize;
                        let (l, k, p, q) = (len as isize, k as isize, p as isize, q as isize);
                        l - k - p <= j && j <= l - k + q && j >= hidden as isize
                    }
                    CachePolicy::Positional { .. } => {
                        j <= pos && window.is_none_or(|w| j + w > pos)
                    }
                    // stateful sets are driven by mil_runtime::stateful, not this host
                    CachePolicy::Ring { .. } => j < (pos + 1).min(len),
                };
                if visible { 0.0 } else { NEG }
            })
            .collect()
    }

    /// Step inputs shared by every chunk for positions `p..p+k` (`k = 1`: decode).
    fn step_inputs(&self, function: &str, b: &dyn Backend, p: usize, tokens: &[u32]) -> TensorMap {
        let k = tokens.len();
        let fp32 = self.fp32();
        let mut m = TensorMap::new();
        let sig = b.signature(function).unwrap();
        for spec in &sig.inputs {
            let shape = spec.ty.as_ref().unwrap().static_shape().unwrap();
            let n = spec.name.as_str();
            let v: Vec<f32> = match n {
                "per_layer_raw" => self.model.ple_raw(tokens),
                "causal_mask_full" | "causal_mask_sliding" => {
                    let kind = if n == "causal_mask_full" {
                        LayerKind::Full
                    } else {
                        LayerKind::Sliding
                    };
                    let len = *shape.last().unwrap();
                    (0..k)
                        .flat_map(|q| self.mask_row(kind, len, p, q, k))
                        .collect()
                }
                "update_mask" => {
                    let len: usize = shape.iter().product();
                    (0..len).map(|c| f32::from(u8::from(c == p))).collect()
                }
                "update_indicator" => {
                    let c = shape[2];
                    (0..c)
                        .flat_map(|c| (0..k).map(move |j| f32::from(u8::from(c == p + j))))
                        .collect()
                }
                "cos_s" | "sin_s" | "cos_f" | "sin_f" => self.model.rope_rows(n, p, k),
                _ => continue,
            };
            m.insert(n.to_string(), tensor(fp32, &shape, &v));
        }
        m
    }

    /// Run every chunk's `function` for `tokens` at positions `p..`, binding KV buffers from `kv` and
    /// hand-over values; returns each chunk's outputs and the head chunk's logits tap.
    fn run_chunks(
        &mut self,
        function: &str,
        kv: &Kv,
        p: usize,
        tokens: &[u32],
    ) -> (Vec<TensorMap>, Vec<f32>) {
        let fp32 = self.fp32();
        let n = self.chunks.len();
        let mut handoff = TensorMap::new();
        let mut all = Vec::new();
        let mut logits = Vec::new();
        for ci in 0..n {
            let mut inputs = self.step_inputs(function, self.chunks[ci].1.as_ref(), p, tokens);
            let sig = self.chunks[ci].1.signature(function).unwrap();
            for spec in &sig.inputs {
                let name = spec.name.as_str();
                if inputs.contains_key(name) {
                    continue;
                }
                let shape = spec.ty.as_ref().unwrap().static_shape().unwrap();
                let t = if name == "hidden_states" && ci == 0 {
                    tensor(fp32, &shape, &self.model.hidden(tokens))
                } else if name.ends_with("_in") {
                    kv.get(&(ci, name.to_string()))
                        .cloned()
                        .unwrap_or_else(|| tensor(fp32, &shape, &vec![0.0; shape.iter().product()]))
                } else {
                    let from = match name {
                        "hidden_states" => "hidden_states_out",
                        "per_layer_combined" => "per_layer_combined_out",
                        o => o,
                    };
                    handoff
                        .get(from)
                        .cloned()
                        .unwrap_or_else(|| panic!("{}: unbound {name}", self.chunks[ci].0))
                };
                inputs.insert(name.to_string(), t);
            }
            let last = ci + 1 == n;
            let taps: Vec<&str> = if last { vec!["logits"] } else { vec![] };
            let (outs, tapped) = self.chunks[ci]
                .1
                .predict_with_taps(function, &inputs, &taps)
                .unwrap_or_else(|e| panic!("{} {function}: {e}", self.chunks[ci].0));
            if last {
                logits = values(&tapped["logits"]);
            }
            for (k, v) in &outs {
                handoff.insert(k.clone(), v.clone());
            }
            all.push(outs);
        }
        (all, logits)
    }

    /// One `decode_q1` step of `token` at `p`; `kv` is updated.
    pub fn decode(&mut self, kv: &mut Kv, p: usize, token: u32) -> Step {
        let (outs, logits) = self.run_chunks("decode_q1", kv, p, &[token]);
        let mut caches = Vec::new();
        for (ci, o) in outs.iter().enumerate() {
            let mut c = TensorMap::new();
            for (k, v) in o {
                if let Some(stem) = k
                    .strip_suffix("_out")
                    .filter(|s| s.starts_with("K_") || s.starts_with("V_"))
                {
                    kv.insert((ci, format!("{stem}_in")), v.clone());
                    c.insert(k.clone(), v.clone());
                }
            }
            caches.push(c);
        }
        let token_id = outs.last().unwrap()["token_id"].to_i64().unwrap()[0] as u32;
        Step {
            hidden: outs
                .iter()
                .map(|o| values(&o["hidden_states_out"]))
                .collect(),
            logits,
            token: token_id,
            caches,
            outputs: outs,
        }
    }

    /// One `verify_qK` call on `tokens` at `p..`; `kv` is not changed.
    pub fn verify(&mut self, kv: &Kv, p: usize, tokens: &[u32]) -> Verify {
        let (outs, logits) = self.run_chunks("verify_qK", kv, p, tokens);
        let ids = outs.last().unwrap()["token_ids"].to_i64().unwrap();
        Verify {
            hidden: outs
                .iter()
                .map(|o| values(&o["hidden_states_out"]))
                .collect(),
            logits,
            tokens: ids.iter().map(|&t| t as u32).collect(),
            outputs: outs,
        }
    }
}

/// E2B-style layout: `(4 sliding, 1 full) × (L/5)`, the last `shared` layers read KV.
#[allow(clippy::too_many_arguments)]
pub fn e2b_like(
    l: usize,
    shared: usize,
    h: usize,
    nh: usize,
    hd: (usize, usize),
    w: usize,
    p: usize,
    inter: usize,
) -> ModelLayout {
    let f = l - shared;
    let kind = |i: usize| {
        if (i + 1).is_multiple_of(5) {
            LayerKind::Full
        } else {
            LayerKind::Sliding
        }
    };
    let producer = |k: LayerKind| (0..f).rev().find(|&i| kind(i) == k).unwrap();
    ModelLayout {
        hidden: h,
        num_heads: nh,
        vocab: 512,
        ple_dim: p,
        sliding_window: w,
        rms_norm_eps: 1e-6,
        final_logit_softcapping: Some(30.0),
        tie_word_embeddings: true,
        layers: (0..l)
            .map(|i| gemma4_export::LayerInfo {
                kind: kind(i),
                head_dim: if kind(i) == LayerKind::Full {
                    hd.1
                } else {
                    hd.0
                },
                kv_heads: 1,
                intermediate: if i >= f { 2 * inter } else { inter },
                kv_source: (i >= f).then(|| producer(kind(i))),
            })
            .collect(),
    }
}

/// Name and shape of every tensor, in order: an I/O list as the contract tables write it.
pub fn name_shapes(ts: &[IoTensor]) -> Vec<(String, Vec<usize>)> {
    ts.iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect()
}

/// [`name_shapes`] of a literal table.
pub fn named(list: &[(&str, &[usize])]) -> Vec<(String, Vec<usize>)> {
    list.iter()
        .map(|(n, s)| (n.to_string(), s.to_vec()))
        .collect()
}
