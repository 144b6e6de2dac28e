//! The host side of a stateful chunk set (`--variant stateful` / `stateful3`): what CoreML-LLM's
//! `Gemma4StatefulEngine` does around the chunks (docs/STATEFUL.md has the contract and the
//! reference's facts).
//!
//! [`StatefulSet::open`] finds the chunks the way the engine does (`chunk_1` … `chunk_3`, and
//! `chunk_4` unless it is absent or `chunk_3` already returns `token_id`; each as `.mlmodelc` when
//! that bundle is there, else `.mlpackage`), loads them, lists the
//! `prefill_b<T>` functions present on every chunk, and checks that every function of a package
//! declares the same states (one `MLState` serves them all). A [`StatefulSession`] then holds one
//! [`ModelState`] per KV-owning chunk (zero at the start) and feeds tokens:
//!
//! * per call at position `p` with `T` tokens: `current_pos = p`, `ring_pos = p mod W`, masks
//!   `causal_mask_full[t][i] = 0 iff i ≤ min(p+t, C−1)`, `causal_mask_sliding[t][j] = 0 iff
//!   j < min(p+t+1, W)` (left-aligned), fill −65504; RoPE rows `p … p+T−1`; chunk outputs handed
//!   over by name; the last chunk's `token_id` is the next token;
//! * [`StatefulSession::feed`] (a prompt): `prefill_b<T>` while `T` tokens remain and
//!   `ring_pos + T ≤ W`; from the first batch that would wrap the ring, and for the tail, `infer`
//!   one token at a time — exactly the engine's loop; [`StatefulSession::step`] is one `infer` call;
//! * [`StatefulSession::turn`] (the next chat turn): keeps the states, takes the longest common
//!   prefix `L` of the tokens already in the states and the new input, and rewinds to
//!   `R = min(L, len − 1)` exactly: in place when the sliding ring still holds the window of `R`
//!   (`R = 0`, `R ≥ P − 1`, or the ring never wrapped), otherwise from the newest ring snapshot
//!   `Q ≤ R` (the session copies the sliding states whenever its position reaches a multiple of `W`;
//!   the full caches are never clobbered), re-running `Q … R−1`. Then it feeds the rest;
//! * [`StatefulSession::generate`]: a turn, then greedy `infer` steps (the engine's `generate`).
//!
//! Logits: the head chunk's logits (the last row of a call) are read where its `reduce_argmax`
//! behind `token_id` reads them ([`crate::logits`]; `logits` in our chunks); with
//! [`Logits::All`] the other rows of a `prefill_b<T>` call are computed from the graph's normed rows
//! (value `final_norm_out`) and its own LM head weight (`lm_head_weight`) plus the softcap, so
//! parity can compare every position (the last row is computed both ways, see
//! [`FeedOutput::head_check`]).
//!
//! [`HostFault`] makes the host deliberately wrong (ring position off by one; a rewind that keeps
//! one stale slot), to show the parity check catches such errors.

use crate::backend::{Backend, BackendKind, LoadOptions, Signature, TensorMap, load_backend};
use crate::chunkset::rope::RopeTables;
use crate::chunkset::{ChunkSetError, Embedder, LOGITS_TAP, ModelConfig, R};
use crate::error::RuntimeError;
use crate::state::ModelState;
use crate::tensor::Tensor;
use ::chunkset::names;
use ::chunkset::{ENGINE_BATCHES, FunctionKind, INFER_FN, LayerKind};
use mil::DType;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The engine's masked value (`Float16(-65504)`).
pub const MASK_FILL: f32 = -65504.0;

/// The function name of a call of `t` tokens (`infer`, `prefill_b<t>`).
pub fn function_for(t: usize) -> String {
    FunctionKind::Stateful { t }.name()
}

fn tensor_of(dtype: DType, shape: &[usize], v: &[f32]) -> Result<Tensor, RuntimeError> {
    match dtype {
        DType::F32 => Tensor::from_f32(shape, v.to_vec()),
        _ => Tensor::f16_from_f32(shape, v),
    }
}

/// A deliberate host error (for the failure checks of the parity tests).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum HostFault {
    /// `ring_pos = (p + 1) mod W` instead of `p mod W`.
    RingOffByOne,
    /// A rewind to `R < P` resumes at `R + 1`: the K/V of position `R` from the previous turn
    /// stay in the caches.
    StaleSlotOnRewind,
}

/// Session options.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionOptions {
    /// The `prefill_b<T>` batch for prompts (`None`: `infer` only).
    pub batch: Option<usize>,
    /// A deliberate host error.
    pub fault: Option<HostFault>,
}

/// Which logits a feed returns.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Logits {
    /// None (fastest).
    None,
    /// The graph's logits of the last row of every call.
    Last,
    /// Every row (the other rows of a batch from the normed rows and the LM head weight).
    All,
}

struct Chunk {
    name: String,
    backend: Box<dyn Backend>,
    sigs: BTreeMap<String, Signature>,
    /// Per function: the value holding the full-vocabulary logits (head chunks).
    logits: BTreeMap<String, String>,
    stateful: bool,
}

/// A stateful chunk set loaded for generation.
pub struct StatefulSet {
    dir: PathBuf,
    config: ModelConfig,
    chunks: Vec<Chunk>,
    three: bool,
    batches: Vec<usize>,
    rope: RopeTables,
    backend_name: String,
    softcap: Option<f32>,
}

/// True if chunk `name` exists in either form (`name.mlmodelc` with `coremldata.bin`, or
/// `name.mlpackage`), as the engine checks.
fn has_package(dir: &Path, name: &str) -> bool {
    mlpackage::compiled::model_path(dir, name).is_dir()
}

impl StatefulSet {
    /// Load the stateful set in `dir` (see the module doc for how chunks are found).
    pub fn open(dir: &Path, kind: BackendKind) -> R<StatefulSet> {
        let config = ModelConfig::read(dir)?;
        let mut chunk_names: Vec<String> = (1..=3).map(|i| format!("chunk_{i}")).collect();
        if let Some(n) = chunk_names.iter().find(|n| !has_package(dir, n)) {
            return Err(ChunkSetError::Stateful(format!(
                "{}: {n}.mlpackage not found (a stateful set has chunk_1 … chunk_3[4])",
                dir.display()
            )));
        }
        let mut chunks = Vec::new();
        let mut backend_name = String::new();
        let load = |name: &str| -> R<Chunk> {
            let pkg = mlpackage::compiled::model_path(dir, name);
            let err = |source| ChunkSetError::Chunk {
                chunk: name.to_string(),
                source: Box::new(source),
            };
            let backend = load_backend(kind, &pkg, &LoadOptions::default()).map_err(err)?;
            let mut sigs = BTreeMap::new();
            let mut logits = BTreeMap::new();
            for f in backend.functions() {
                sigs.insert(f.clone(), backend.signature(&f).map_err(err)?);
                let tap = backend
                    .argmax_input(&f, names::TOKEN_ID)
                    .unwrap_or_else(|| LOGITS_TAP.to_string());
                logits.insert(f, tap);
            }
            let infer = sigs.get(INFER_FN).ok_or_else(|| {
                ChunkSetError::Stateful(format!(
                    "{name}: no `{INFER_FN}` function (functions: {:?})",
                    sigs.keys().collect::<Vec<_>>()
                ))
            })?;
            let stateful = infer.inputs.iter().any(|i| i.is_state);
            if stateful {
                let state = backend.make_state(INFER_FN).map_err(err)?;
                for (f, sig) in &sigs {
                    state.check(f, sig).map_err(err)?;
                }
            }
            Ok(Chunk {
                name: name.to_string(),
                backend,
                sigs,
                logits,
                stateful,
            })
        };
        for n in &chunk_names {
            let c = load(n)?;
            backend_name = c.backend.name().to_string();
            chunks.push(c);
        }
        let chunk3_is_head = chunks[2].sigs[INFER_FN]
            .outputs
            .iter()
            .any(|o| o.name == names::TOKEN_ID);
        let three = !has_package(dir, "chunk_4") || chunk3_is_head;
        if !three {
            chunk_names.push("chunk_4".into());
            chunks.push(load("chunk_4")?);
        }
        let listed: Vec<&str> = config.chunks.iter().map(|c| c.name.as_str()).collect();
        if listed != chunk_names {
            return Err(ChunkSetError::Stateful(format!(
                "{}: model_config.json lists chunks {listed:?}, the engine's detection finds {chunk_names:?}",
                dir.display()
            )));
        }
        let mut batches: Vec<usize> = chunks[0]
            .sigs
            .keys()
            .filter_map(|f| match FunctionKind::stateful(f)? {
                FunctionKind::Stateful { t } if t > 1 => Some(t),
                _ => None,
            })
            .filter(|t| {
                chunks
                    .iter()
                    .all(|c| c.sigs.contains_key(&function_for(*t)))
            })
            .collect();
        batches.sort_unstable_by(|a, b| b.cmp(a));
        let rope = RopeTables::open(dir)?;
        let softcap = config.final_logit_softcapping.map(|c| c as f32);
        Ok(StatefulSet {
            dir: dir.to_path_buf(),
            config,
            chunks,
            three,
            batches,
            rope,
            backend_name,
            softcap,
        })
    }

    /// The parsed `model_config.json`.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The set's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Chunk names in call order.
    pub fn chunk_names(&self) -> Vec<String> {
        self.chunks.iter().map(|c| c.name.clone()).collect()
    }

    /// True when `chunk_3` is the final chunk (the engine's 3-chunk mode).
    pub fn is_three_chunk(&self) -> bool {
        self.three
    }

    /// The `prefill_b<T>` sizes present on every chunk, largest first.
    pub fn batches(&self) -> &[usize] {
        &self.batches
    }

    /// The batch size the engine would use: the first of 16, 8, 4 present on every chunk.
    pub fn engine_batch(&self) -> Option<usize> {
        ENGINE_BATCHES
            .into_iter()
            .find(|t| self.batches.contains(t))
    }

    /// The backend's name.
    pub fn backend_name(&self) -> &str {
        &self.backend_name
    }

    /// A fresh conversation: zero states, position 0.
    pub fn conversation(&self) -> R<Conversation> {
        let mut states = Vec::new();
        for c in &self.chunks {
            states.push(if c.stateful {
                Some(
                    c.backend
                        .make_state(INFER_FN)
                        .map_err(|source| ChunkSetError::Chunk {
                            chunk: c.name.clone(),
                            source: Box::new(source),
                        })?,
                )
            } else {
                None
            });
        }
        Ok(Conversation {
            zero: states.clone(),
            states,
            consumed: Vec::new(),
            snapshots: BTreeMap::new(),
        })
    }

    /// A session on a fresh conversation.
    pub fn session(&mut self, opts: SessionOptions) -> R<StatefulSession<'_>> {
        if let Some(t) = opts.batch
            && !self.batches.contains(&t)
        {
            return Err(ChunkSetError::Stateful(format!(
                "no prefill_b{t} on every chunk (available: {:?})",
                self.batches
            )));
        }
        let conv = self.conversation()?;
        Ok(StatefulSession {
            set: self,
            conv,
            opts,
        })
    }
}

/// What the states hold: the tokens they have consumed, the per-chunk states and the ring
/// snapshots. Cloning is cheap (tensors are shared until written).
#[derive(Clone, Debug)]
pub struct Conversation {
    zero: Vec<Option<ModelState>>,
    states: Vec<Option<ModelState>>,
    consumed: Vec<u32>,
    /// Position (a multiple of W) → each chunk's `kv_cache_sliding` at that position.
    snapshots: BTreeMap<usize, Vec<Option<Tensor>>>,
}

impl Conversation {
    /// The next position (= tokens consumed).
    pub fn position(&self) -> usize {
        self.consumed.len()
    }

    /// The tokens whose K/V are in the states.
    pub fn tokens(&self) -> &[u32] {
        &self.consumed
    }

    /// Positions of the ring snapshots held.
    pub fn snapshot_positions(&self) -> Vec<usize> {
        self.snapshots.keys().copied().collect()
    }
}

/// One position's result.
#[derive(Clone, Debug)]
pub struct RowOutput {
    /// Absolute position.
    pub position: usize,
    /// The in-graph argmax (the last row of a call only).
    pub token_id: Option<u32>,
    /// Full-vocabulary softcapped logits, when requested.
    pub logits: Option<Vec<f32>>,
    /// Computed by a `prefill_b<T>` call (T > 1).
    pub batched: bool,
}

/// One chunk-set call (T tokens through every chunk).
#[derive(Clone, Debug)]
pub struct CallReport {
    /// Tokens in the call (1 = `infer`).
    pub t: usize,
    /// Position of its first token.
    pub position: usize,
    /// Wall time of each chunk.
    pub chunk_times: Vec<Duration>,
}

/// The result of feeding tokens.
#[derive(Clone, Debug, Default)]
pub struct FeedOutput {
    /// One entry per fed position, in order.
    pub rows: Vec<RowOutput>,
    /// The calls made, in order.
    pub calls: Vec<CallReport>,
    /// The next token (the last call's `token_id`).
    pub next_token: u32,
    /// With [`Logits::All`]: the largest |host LM head − graph logits| on the last row of a batch
    /// (the host's recomputation of the other rows, checked where both exist).
    pub head_check: Option<f32>,
}

/// The result of a turn.
#[derive(Clone, Debug)]
pub struct TurnOutput {
    /// Longest common prefix of the tokens in the states and the new input.
    pub common_prefix: usize,
    /// The position the turn resumed at (tokens before it were kept).
    pub resumed_at: usize,
    /// The ring snapshot restored, when an in-place rewind could not be exact.
    pub snapshot: Option<usize>,
    /// The fed positions `resumed_at …`.
    pub feed: FeedOutput,
}

/// A generation session over a [`StatefulSet`].
pub struct StatefulSession<'a> {
    set: &'a mut StatefulSet,
    conv: Conversation,
    opts: SessionOptions,
}

impl StatefulSession<'_> {
    /// The next position.
    pub fn position(&self) -> usize {
        self.conv.position()
    }

    /// The conversation state (clone it to come back to it with [`Self::set_conversation`]).
    pub fn conversation(&self) -> &Conversation {
        &self.conv
    }

    /// Continue from a conversation of this set.
    pub fn set_conversation(&mut self, conv: Conversation) -> R<()> {
        if conv.states.len() != self.set.chunks.len() {
            return Err(ChunkSetError::Stateful(format!(
                "the conversation holds {} chunks, the set has {}",
                conv.states.len(),
                self.set.chunks.len()
            )));
        }
        self.conv = conv;
        Ok(())
    }

    /// Drop the conversation (fresh states, position 0).
    pub fn reset(&mut self) -> R<()> {
        self.conv = self.set.conversation()?;
        Ok(())
    }

    /// Feed `tokens` at the current position the way the engine sends a prompt (batches of the
    /// session's `prefill_b<T>` while they fit without wrapping the ring, then `infer`).
    pub fn feed(&mut self, tokens: &[u32], emb: &dyn Embedder, logits: Logits) -> R<FeedOutput> {
        let w = self.set.config.sliding_window;
        let mut out = FeedOutput::default();
        let mut i = 0;
        if let Some(t) = self.opts.batch {
            while i + t <= tokens.len() {
                if self.position() % w + t > w {
                    break;
                }
                self.call(&tokens[i..i + t], emb, logits, &mut out)?;
                i += t;
            }
        }
        for j in i..tokens.len() {
            self.call(&tokens[j..j + 1], emb, logits, &mut out)?;
        }
        Ok(out)
    }

    /// One `infer` call on `token`.
    pub fn step(&mut self, token: u32, emb: &dyn Embedder, want_logits: bool) -> R<RowOutput> {
        Ok(self.step_timed(token, emb, want_logits)?.0)
    }

    /// [`Self::step`], also returning the call's timings.
    pub fn step_timed(
        &mut self,
        token: u32,
        emb: &dyn Embedder,
        want_logits: bool,
    ) -> R<(RowOutput, CallReport)> {
        let mut out = FeedOutput::default();
        let l = if want_logits {
            Logits::Last
        } else {
            Logits::None
        };
        self.call(&[token], emb, l, &mut out)?;
        match (out.rows.pop(), out.calls.pop()) {
            (Some(r), Some(c)) => Ok((r, c)),
            _ => Err(ChunkSetError::Stateful("a step produced no row".into())),
        }
    }

    /// The next turn: keep the states, rewind to the longest common prefix with `tokens` (see the
    /// module doc), feed the rest.
    pub fn turn(&mut self, tokens: &[u32], emb: &dyn Embedder, logits: Logits) -> R<TurnOutput> {
        if tokens.is_empty() {
            return Err(ChunkSetError::Stateful(
                "a turn needs at least one token".into(),
            ));
        }
        let common = self
            .conv
            .consumed
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count();
        let target = common.min(tokens.len() - 1);
        let (start, snapshot) = self.rewind(target)?;
        let feed = self.feed(&tokens[start..], emb, logits)?;
        Ok(TurnOutput {
            common_prefix: common,
            resumed_at: start,
            snapshot,
            feed,
        })
    }

    /// A turn on `tokens`, then greedy `infer` steps until `max_new` tokens, an EOS or the end of
    /// the context (the engine's `generate`). Returns the generated tokens (the first one comes from
    /// the turn's last call).
    pub fn generate(
        &mut self,
        tokens: &[u32],
        emb: &dyn Embedder,
        max_new: usize,
        eos: &[u32],
    ) -> R<(TurnOutput, Vec<u32>)> {
        let turn = self.turn(tokens, emb, Logits::None)?;
        let mut out = Vec::new();
        let mut last = turn.feed.next_token;
        if max_new > 0 {
            out.push(last);
        }
        let ctx = self.set.config.context_length;
        while out.len() < max_new && !eos.contains(&last) && self.position() < ctx {
            last = self
                .step(last, emb, false)?
                .token_id
                .ok_or_else(|| ChunkSetError::Stateful("infer returned no token".into()))?;
            out.push(last);
        }
        Ok((turn, out))
    }

    /// A teacher-forced turn, as parity checks run one: [`Self::turn`] on `prompt` with every row's
    /// logits, then each of `decode` through `infer` (logits of every step). Returns the turn and the
    /// rows of every position computed (`resumed_at …`), in order.
    pub fn replay(
        &mut self,
        prompt: &[u32],
        decode: &[u32],
        emb: &dyn Embedder,
    ) -> R<(TurnOutput, Vec<RowOutput>)> {
        let turn = self.turn(prompt, emb, Logits::All)?;
        let mut rows = turn.feed.rows.clone();
        for &t in decode {
            rows.push(self.step(t, emb, true)?);
        }
        Ok((turn, rows))
    }

    /// Rewind the states to position `r ≤ P`; returns where feeding resumes and the snapshot used.
    fn rewind(&mut self, r: usize) -> R<(usize, Option<usize>)> {
        let p = self.conv.consumed.len();
        if r >= p {
            return Ok((p, None));
        }
        let w = self.set.config.sliding_window;
        let keep = |conv: &mut Conversation, at: usize| {
            conv.consumed.truncate(at);
            conv.snapshots.retain(|&q, _| q <= at);
        };
        if self.opts.fault == Some(HostFault::StaleSlotOnRewind) {
            keep(&mut self.conv, r + 1);
            return Ok((r + 1, None));
        }
        if r == 0 || r + 1 >= p || p <= w {
            keep(&mut self.conv, r);
            return Ok((r, None));
        }
        let q = self
            .conv
            .snapshots
            .range(..=r)
            .next_back()
            .map(|(&q, _)| q)
            .unwrap_or(0);
        for ci in 0..self.conv.states.len() {
            let ring = if q == 0 {
                self.conv.zero[ci]
                    .as_ref()
                    .and_then(|z| z.get(LayerKind::Sliding.state()).cloned())
            } else {
                self.conv.snapshots[&q][ci].clone()
            };
            if let (Some(state), Some(ring)) = (self.conv.states[ci].as_mut(), ring) {
                state
                    .set(LayerKind::Sliding.state(), ring)
                    .map_err(|source| ChunkSetError::Chunk {
                        chunk: self.set.chunks[ci].name.clone(),
                        source: Box::new(source),
                    })?;
            }
        }
        keep(&mut self.conv, q);
        Ok((q, Some(q)))
    }

    /// One call of `tokens.len()` tokens through every chunk.
    fn call(
        &mut self,
        tokens: &[u32],
        emb: &dyn Embedder,
        want: Logits,
        out: &mut FeedOutput,
    ) -> R<()> {
        let t = tokens.len();
        let p = self.position();
        let cfg = &self.set.config;
        let (w, c) = (cfg.sliding_window, cfg.context_length);
        if p + t > c {
            return Err(ChunkSetError::ContextFull {
                pos: p + t - 1,
                what: "context length".into(),
                limit: c,
            });
        }
        if let Some(&token) = tokens.iter().find(|&&x| x as usize >= cfg.vocab_size) {
            return Err(ChunkSetError::BadToken {
                token,
                vocab: cfg.vocab_size,
            });
        }
        let function = function_for(t);
        let (mut hidden, mut ple) = (Vec::new(), Vec::new());
        for &x in tokens {
            hidden.extend(emb.hidden(x)?);
            ple.extend(emb.ple_raw(x)?);
        }
        let ring = match self.opts.fault {
            Some(HostFault::RingOffByOne) => (p + 1) % w,
            _ => p % w,
        };
        let mask_full: Vec<f32> = (0..t)
            .flat_map(|r| {
                (0..c).map(move |i| {
                    if i <= (p + r).min(c - 1) {
                        0.0
                    } else {
                        MASK_FILL
                    }
                })
            })
            .collect();
        let mask_sliding: Vec<f32> = (0..t)
            .flat_map(|r| {
                (0..w).map(move |j| {
                    if j < (p + r + 1).min(w) {
                        0.0
                    } else {
                        MASK_FILL
                    }
                })
            })
            .collect();
        let mut rope = BTreeMap::new();
        for kind in LayerKind::ALL {
            let (cos, sin) = kind.rope_inputs();
            for key in [cos, sin] {
                rope.insert(key, self.set.rope.rows(key, p, t)?);
            }
        }
        let nchunks = self.set.chunks.len();
        let mut handoff = TensorMap::new();
        let mut times = Vec::with_capacity(nchunks);
        let mut head = (TensorMap::new(), TensorMap::new(), String::new());
        for ci in 0..nchunks {
            let name = self.set.chunks[ci].name.clone();
            let cerr = |source| ChunkSetError::Chunk {
                chunk: name.clone(),
                source: Box::new(source),
            };
            let unbound = |input: &str| ChunkSetError::Unbound {
                chunk: name.clone(),
                input: input.to_string(),
            };
            let sig = self.set.chunks[ci]
                .sigs
                .get(&function)
                .cloned()
                .ok_or_else(|| {
                    ChunkSetError::Stateful(format!("{name} has no function `{function}`"))
                })?;
            let mut inputs = TensorMap::new();
            for spec in sig.inputs.iter().filter(|s| !s.is_state) {
                let n = spec.name.as_str();
                let ty = spec.ty.as_ref().ok_or_else(|| unbound(n))?;
                let shape = ty.static_shape().ok_or_else(|| unbound(n))?;
                let make = |v: &[f32]| tensor_of(ty.dtype, &shape, v).map_err(cerr);
                let pos = |v: usize| Tensor::from_i32(&[1], vec![v as i32]).map_err(cerr);
                let x = match n {
                    names::HIDDEN_STATES if ci == 0 => make(&hidden)?,
                    names::PER_LAYER_RAW => make(&ple)?,
                    names::CURRENT_POS => pos(p)?,
                    names::RING_POS => pos(ring)?,
                    _ if n == LayerKind::Full.causal_mask() => make(&mask_full)?,
                    _ if n == LayerKind::Sliding.causal_mask() => make(&mask_sliding)?,
                    _ if rope.contains_key(n) => make(&rope[n])?,
                    _ => handoff
                        .get(names::handoff_source(n))
                        .cloned()
                        .ok_or_else(|| unbound(n))?,
                };
                inputs.insert(n.to_string(), x);
            }
            let last = ci + 1 == nchunks;
            let logits_tap = self.set.chunks[ci]
                .logits
                .get(&function)
                .cloned()
                .unwrap_or_else(|| LOGITS_TAP.to_string());
            let mut taps: Vec<&str> = Vec::new();
            if last && want != Logits::None {
                taps.push(&logits_tap);
                if want == Logits::All && t > 1 {
                    taps.extend([names::NORMED_ROWS, names::LM_HEAD_WEIGHT]);
                }
            }
            let t0 = Instant::now();
            let chunk = &mut self.set.chunks[ci];
            let (outs, tapped) = match self.conv.states[ci].as_mut() {
                Some(state) => chunk
                    .backend
                    .predict_with_state(&function, &inputs, state, &taps)
                    .map_err(cerr)?,
                None => chunk
                    .backend
                    .predict_with_taps(&function, &inputs, &taps)
                    .map_err(cerr)?,
            };
            times.push(t0.elapsed());
            if last {
                head = (outs.clone(), tapped, logits_tap.clone());
            }
            handoff.extend(outs);
        }
        let last_name = self.set.chunks[nchunks - 1].name.clone();
        let out_err = |o: &str| ChunkSetError::Output {
            chunk: last_name.clone(),
            output: o.to_string(),
        };
        let token = head
            .0
            .get(names::TOKEN_ID)
            .and_then(|x| x.to_i64().ok())
            .and_then(|v| v.first().copied())
            .ok_or_else(|| out_err(names::TOKEN_ID))? as u32;
        let mut rows: Vec<RowOutput> = (0..t)
            .map(|r| RowOutput {
                position: p + r,
                token_id: (r + 1 == t).then_some(token),
                logits: None,
                batched: t > 1,
            })
            .collect();
        if want != Logits::None {
            let graph = head
                .1
                .get(&head.2)
                .and_then(|x| x.to_f32().ok().map(|v| v.into_owned()))
                .ok_or_else(|| out_err(&head.2))?;
            if want == Logits::All && t > 1 {
                let normed = head
                    .1
                    .get(names::NORMED_ROWS)
                    .and_then(|x| x.to_f32().ok().map(|v| v.into_owned()))
                    .ok_or_else(|| out_err(names::NORMED_ROWS))?;
                let lm = head
                    .1
                    .get(names::LM_HEAD_WEIGHT)
                    .ok_or_else(|| out_err(names::LM_HEAD_WEIGHT))?;
                let lm_shape = lm.shape().to_vec();
                let lm = lm.to_f32().map_err(|e| {
                    ChunkSetError::Stateful(format!("{last_name}: {}: {e}", names::LM_HEAD_WEIGHT))
                })?;
                let (v, h) = (lm_shape[0], normed.len() / t);
                if lm.len() != v * h || graph.len() != v {
                    return Err(out_err(names::LM_HEAD_WEIGHT));
                }
                for (r, row) in rows.iter_mut().enumerate() {
                    row.logits = Some(host_logits(
                        &lm,
                        &normed[r * h..(r + 1) * h],
                        self.set.softcap,
                    ));
                }
                let host_last = rows[t - 1].logits.take().unwrap_or_default();
                let d = host_last
                    .iter()
                    .zip(&graph)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                out.head_check = Some(out.head_check.map_or(d, |m| m.max(d)));
            }
            rows[t - 1].logits = Some(graph);
        }
        self.conv.consumed.extend_from_slice(tokens);
        let pos = self.conv.consumed.len();
        if pos.is_multiple_of(w) {
            let ring: Vec<Option<Tensor>> = self
                .conv
                .states
                .iter()
                .map(|s| {
                    s.as_ref()
                        .and_then(|s| s.get(LayerKind::Sliding.state()).cloned())
                })
                .collect();
            self.conv.snapshots.insert(pos, ring);
        }
        out.rows.extend(rows);
        out.calls.push(CallReport {
            t,
            position: p,
            chunk_times: times,
        });
        out.next_token = token;
        Ok(())
    }
}

/// `softcap(W·x)` for one row (`W` `[V, H]` row-major).
fn host_logits(w: &[f32], x: &[f32], softcap: Option<f32>) -> Vec<f32> {
    let h = x.len();
    w.chunks_exact(h)
        .map(|row| {
            let z: f32 = row.iter().zip(x).map(|(a, b)| a * b).sum();
            match softcap {
                Some(c) if c > 0.0 => (z / c).tanh() * c,
                _ => z,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_follow_the_engine() {
        assert_eq!(function_for(1), "infer");
        assert_eq!(function_for(8), "prefill_b8");
    }

    #[test]
    fn host_logits_apply_the_softcap() {
        let w = [1.0, 0.0, 0.0, 2.0];
        let x = [3.0, 1.0];
        assert_eq!(host_logits(&w, &x, None), vec![3.0, 2.0]);
        let capped = host_logits(&w, &x, Some(30.0));
        assert!((capped[0] - (0.1f32).tanh() * 30.0).abs() < 1e-6);
    }
}
