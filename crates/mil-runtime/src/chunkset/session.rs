//! A decoding [`Session`]: one decode step per token ([`Session::step`]), batched prefill with the
//! K/V written back into the decode caches ([`Session::prefill`]), both through one
//! bind → predict → time → route loop ([`run_chunks`]).

use super::{ChunkSet, ChunkSetError, Embedder, LoadedChunk, R};
use crate::backend::TensorMap;
use crate::error::RuntimeError;
use crate::tensor::Tensor;
use ::chunkset::names::{self, Dir, KvPart};
use ::chunkset::{CacheKind, CachePolicy, DECODE_FN, KvSlot, LayerKind, PREFILL_FN};
use mil::DType;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What one decode step (or a prefill) produced.
#[derive(Clone, Debug)]
pub struct StepOutput {
    /// The head chunk's `token_id` (in-graph argmax).
    pub token_id: u32,
    /// The head chunk's `token_logit`.
    pub token_logit: f32,
    /// Full-vocabulary softcapped logits, when requested.
    pub logits: Option<Vec<f32>>,
    /// Wall time of each chunk call, in chunk order.
    pub chunk_times: Vec<Duration>,
}

/// Persistent KV buffers per (decode chunk index, input name).
type KvState = BTreeMap<(usize, String), Tensor>;

/// A decoding session over a [`ChunkSet`].
pub struct Session<'a> {
    set: &'a mut ChunkSet,
    kv: KvState,
    pos: usize,
}

fn tensor_of(dtype: DType, shape: &[usize], v: &[f32]) -> Result<Tensor, RuntimeError> {
    match dtype {
        DType::F32 => Tensor::from_f32(shape, v.to_vec()),
        _ => Tensor::f16_from_f32(shape, v),
    }
}

/// A declared input of a chunk, as the binder sees it.
struct Input<'a> {
    /// Index of the chunk in call order.
    chunk: usize,
    name: &'a str,
    dtype: DType,
    shape: Vec<usize>,
}

impl Input<'_> {
    /// A tensor of this input's dtype and shape holding `v`.
    fn make(&self, v: &[f32]) -> Result<Tensor, RuntimeError> {
        tensor_of(self.dtype, &self.shape, v)
    }

    /// Zeros of this input's dtype and shape.
    fn zeros(&self) -> Result<Tensor, RuntimeError> {
        self.make(&vec![0.0; self.shape.iter().product()])
    }
}

/// Run `chunks` in order for one call of `function`: every declared input is bound by `bind` (step
/// inputs, persistent state; `None` = hand over the earlier output of that name), each call is
/// timed, and its outputs go to `route` (into `state`, or into the hand-over map read by later
/// chunks). Returns the last chunk's `token_id` / `token_logit` (and the tapped logits on request).
fn run_chunks<S>(
    chunks: &mut [LoadedChunk],
    function: &str,
    want_logits: bool,
    state: &mut S,
    mut bind: impl FnMut(&S, &Input<'_>) -> Result<Option<Tensor>, BindError>,
    mut route: impl FnMut(&mut S, usize, &str, TensorMap, &mut TensorMap) -> R<()>,
) -> R<StepOutput> {
    let mut handoff = TensorMap::new();
    let mut times = Vec::with_capacity(chunks.len());
    let mut head = None;
    let count = chunks.len();
    for (ci, c) in chunks.iter_mut().enumerate() {
        let name = c.name.clone();
        let cerr = |source| ChunkSetError::Chunk {
            chunk: name.clone(),
            source: Box::new(source),
        };
        let mut inputs = TensorMap::new();
        for spec in &c.sig.inputs {
            let unbound = || ChunkSetError::Unbound {
                chunk: name.clone(),
                input: spec.name.clone(),
            };
            let ty = spec.ty.as_ref().ok_or_else(unbound)?;
            let input = Input {
                chunk: ci,
                name: &spec.name,
                dtype: ty.dtype,
                shape: ty.static_shape().ok_or_else(unbound)?,
            };
            let t = match bind(state, &input) {
                Ok(Some(t)) => t,
                Ok(None) => handoff
                    .get(names::handoff_source(&spec.name))
                    .cloned()
                    .ok_or_else(unbound)?,
                Err(BindError::Host(e)) => return Err(e),
                Err(BindError::Tensor(e)) => return Err(cerr(e)),
            };
            inputs.insert(spec.name.clone(), t);
        }
        let last = ci + 1 == count;
        let taps: Vec<&str> = if last && want_logits {
            vec![c.logits.as_str()]
        } else {
            vec![]
        };
        let t0 = Instant::now();
        let (outs, tapped) = c
            .backend
            .predict_with_taps(function, &inputs, &taps)
            .map_err(cerr)?;
        times.push(t0.elapsed());
        route(state, ci, &c.name, outs, &mut handoff)?;
        if last {
            let logits = want_logits.then_some(c.logits.as_str());
            head = Some(head_output(&name, &handoff, &tapped, logits)?);
        }
    }
    let mut out = head.ok_or_else(|| ChunkSetError::Output {
        chunk: "(none)".into(),
        output: names::TOKEN_ID.into(),
    })?;
    out.chunk_times = times;
    Ok(out)
}

/// Why an input could not be bound: a host-level problem, or building its tensor failed (reported
/// against the chunk).
enum BindError {
    Host(ChunkSetError),
    Tensor(RuntimeError),
}

impl From<ChunkSetError> for BindError {
    fn from(e: ChunkSetError) -> BindError {
        BindError::Host(e)
    }
}

impl From<RuntimeError> for BindError {
    fn from(e: RuntimeError) -> BindError {
        BindError::Tensor(e)
    }
}

/// The head chunk's `token_id` / `token_logit` (and the tapped logits value `logits` on request).
fn head_output(
    chunk: &str,
    outs: &TensorMap,
    tapped: &TensorMap,
    logits: Option<&str>,
) -> R<StepOutput> {
    let out_err = |o: &str| ChunkSetError::Output {
        chunk: chunk.to_string(),
        output: o.to_string(),
    };
    let tok = outs
        .get(names::TOKEN_ID)
        .and_then(|t| t.to_i64().ok())
        .and_then(|v| v.first().copied())
        .ok_or_else(|| out_err(names::TOKEN_ID))?;
    let logit = outs
        .get(names::TOKEN_LOGIT)
        .and_then(|t| t.to_f32().ok().and_then(|v| v.first().copied()))
        .ok_or_else(|| out_err(names::TOKEN_LOGIT))?;
    let logits = match logits {
        Some(name) => Some(
            tapped
                .get(name)
                .and_then(|t| t.to_f32().ok().map(|v| v.into_owned()))
                .ok_or_else(|| out_err(name))?,
        ),
        None => None,
    };
    Ok(StepOutput {
        token_id: tok as u32,
        token_logit: logit,
        logits,
        chunk_times: Vec::new(),
    })
}

/// The decode mask of a cache of `len` slots at position `pos`: shift register — the last
/// `min(pos+1, len)` slots visible; positional — slots `≤ pos` (and `> pos − W` with a window).
fn decode_mask(pos: usize, len: usize, policy: CacheKind, window: Option<usize>) -> Vec<f32> {
    (0..len)
        .map(|j| {
            let visible = match policy {
                CacheKind::ShiftRegister => j + (pos + 1).min(len) >= len,
                CacheKind::Positional => j <= pos && window.is_none_or(|w| j + w > pos),
                CacheKind::Ring => j < (pos + 1).min(len),
            };
            if visible { 0.0 } else { f32::NEG_INFINITY }
        })
        .collect()
}

/// The kind whose decode mask input is `name`, if it is one.
fn mask_kind(name: &str) -> Option<LayerKind> {
    LayerKind::ALL.into_iter().find(|k| k.causal_mask() == name)
}

impl<'a> Session<'a> {
    pub(super) fn new(set: &'a mut ChunkSet) -> Session<'a> {
        Session {
            set,
            kv: KvState::new(),
            pos: 0,
        }
    }

    /// The next position to be written.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Run one decode step on `token` at the current position, then advance.
    pub fn step(
        &mut self,
        token: u32,
        embedder: &dyn Embedder,
        want_logits: bool,
    ) -> R<StepOutput> {
        let cfg = &self.set.config;
        if token as usize >= cfg.vocab_size {
            return Err(ChunkSetError::BadToken {
                token,
                vocab: cfg.vocab_size,
            });
        }
        let hidden = embedder.hidden(token)?;
        let ple_raw = embedder.ple_raw(token)?;
        let pos = self.pos;
        let ChunkSet {
            config,
            chunks,
            rope,
            ..
        } = &mut *self.set;
        let config = &*config;
        let bind = |kv: &KvState, i: &Input<'_>| -> Result<Option<Tensor>, BindError> {
            let n = i.name;
            if let Some(kind) = mask_kind(n) {
                let len = i.shape.last().copied().unwrap_or(0);
                let policy = config.cache(kind).kind();
                if policy == CacheKind::Positional && pos >= len {
                    return Err(ChunkSetError::ContextFull {
                        pos,
                        what: format!("context length of {n}"),
                        limit: len,
                    }
                    .into());
                }
                let window = (kind == LayerKind::Sliding).then_some(config.sliding_window);
                return Ok(Some(i.make(&decode_mask(pos, len, policy, window))?));
            }
            if names::rope_of_input(n).is_some() {
                return Ok(Some(i.make(&rope.rows(n, pos, 1)?)?));
            }
            if names::is_cache_input(n) {
                return Ok(Some(match kv.get(&(i.chunk, n.to_string())) {
                    Some(t) => t.clone(),
                    None => i.zeros()?,
                }));
            }
            Ok(Some(match n {
                names::HIDDEN_STATES if i.chunk == 0 => i.make(&hidden)?,
                names::PER_LAYER_RAW => i.make(&ple_raw)?,
                names::UPDATE_MASK => {
                    let len: usize = i.shape.iter().product();
                    let mut v = vec![0.0; len];
                    if let Some(x) = v.get_mut(pos.min(len.saturating_sub(1))) {
                        *x = 1.0;
                    }
                    i.make(&v)?
                }
                _ => return Ok(None),
            }))
        };
        // New caches replace the buffers they were computed from; the rest is handed over.
        let route =
            |kv: &mut KvState, ci: usize, _: &str, outs: TensorMap, handoff: &mut TensorMap| {
                for (k, v) in outs {
                    match names::cache_input_of(&k) {
                        Some(input) => {
                            kv.insert((ci, input), v);
                        }
                        None => {
                            handoff.insert(k, v);
                        }
                    }
                }
                Ok(())
            };
        let out = run_chunks(chunks, DECODE_FN, want_logits, &mut self.kv, bind, route)?;
        self.pos += 1;
        Ok(out)
    }

    /// Batched prefill of `tokens` (at most the prefill length `N`; call
    /// [`ChunkSet::load_prefill`] first) at positions `0..len` of a fresh session: runs every
    /// prefill chunk once on the tokens padded to `N` with the pad token, writes the K/V they
    /// produce into the decode caches, and leaves the session at position `len`. Returns the last
    /// real position's `token_id` / `token_logit` (and its logits on request).
    pub fn prefill(
        &mut self,
        tokens: &[u32],
        embedder: &dyn Embedder,
        want_logits: bool,
    ) -> R<StepOutput> {
        let n = self.set.prefill_length()?;
        let len = tokens.len();
        if self.pos != 0 {
            return Err(ChunkSetError::Prefill(format!(
                "prefill runs at positions 0.. of a fresh session; this one is at position {}",
                self.pos
            )));
        }
        if len == 0 || len > n {
            return Err(ChunkSetError::Prefill(format!(
                "{len} tokens do not fit the prefill length {n} (1..={n})"
            )));
        }
        let cfg = &self.set.config;
        if let Some(&token) = tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(ChunkSetError::BadToken {
                token,
                vocab: cfg.vocab_size,
            });
        }
        let mut padded = tokens.to_vec();
        padded.resize(n, cfg.pad_token_id.unwrap_or(0));
        let (mut hidden, mut ple_raw) = (Vec::new(), Vec::new());
        for &t in &padded {
            hidden.extend(embedder.hidden(t)?);
            ple_raw.extend(embedder.ple_raw(t)?);
        }
        let ChunkSet {
            config,
            prefill,
            rope,
            ..
        } = &mut *self.set;
        let config = &*config;
        let bind = |_: &LayerKv, i: &Input<'_>| -> Result<Option<Tensor>, BindError> {
            if names::rope_of_input(i.name).is_some() {
                return Ok(Some(i.make(&rope.rows(i.name, 0, n)?)?));
            }
            Ok(Some(match i.name {
                names::HIDDEN_STATES if i.chunk == 0 => i.make(&hidden)?,
                names::PER_LAYER_RAW => i.make(&ple_raw)?,
                names::CAUSAL_MASK => i.make(&causal_mask(n))?,
                names::LAST_POSITION_MASK => i.make(
                    &(0..n)
                        .map(|j| f32::from(u8::from(j + 1 == len)))
                        .collect::<Vec<_>>(),
                )?,
                _ => return Ok(None),
            }))
        };
        // Every output is handed over; the K/V of each layer are also kept for the write-back.
        let prefill_chunks = config.prefill_chunks();
        let route = |layer_kv: &mut LayerKv,
                     ci: usize,
                     chunk: &str,
                     outs: TensorMap,
                     handoff: &mut TensorMap| {
            let out_err = |o: &str| ChunkSetError::Output {
                chunk: chunk.to_string(),
                output: o.to_string(),
            };
            for kv in prefill_chunks
                .get(ci)
                .map(|c| c.kv.as_slice())
                .unwrap_or(&[])
            {
                let kt = outs.get(&kv.k).ok_or_else(|| out_err(&kv.k))?;
                let vt = outs.get(&kv.v).ok_or_else(|| out_err(&kv.v))?;
                layer_kv.insert(kv.layer, (kt.clone(), vt.clone()));
            }
            handoff.extend(outs);
            Ok(())
        };
        let mut layer_kv = LayerKv::new();
        let out = run_chunks(prefill, PREFILL_FN, want_logits, &mut layer_kv, bind, route)?;
        self.write_back(&layer_kv, len)?;
        self.pos = len;
        Ok(out)
    }

    /// Write prefill K/V (`[1, kv_heads, N, head_dim]` per layer) of positions `0..len` into the
    /// decode caches through each chunk's slot map.
    fn write_back(&mut self, layer_kv: &LayerKv, len: usize) -> R<()> {
        let set = &*self.set;
        for (ci, entry) in set.config.chunks.iter().enumerate() {
            for s in &entry.kv_slots {
                let (kt, vt) = layer_kv.get(&s.layer).ok_or_else(|| {
                    ChunkSetError::Prefill(format!(
                        "no prefill chunk produces the K/V of layer {} ({} slot {} of {})",
                        s.layer,
                        s.kind.label(),
                        s.slot,
                        entry.name
                    ))
                })?;
                let policy = set.config.cache(s.kind);
                for (part, src) in [(KvPart::K, kt), (KvPart::V, vt)] {
                    let name = s.kind.cache(part, Dir::In);
                    let key = (ci, name);
                    let t = slot_with_rows(
                        &set.chunks[ci],
                        &key.1,
                        self.kv.get(&key),
                        s,
                        policy,
                        src,
                        len,
                    )?;
                    self.kv.insert(key, t);
                }
            }
        }
        Ok(())
    }
}

/// Prefill K/V per layer.
type LayerKv = BTreeMap<usize, (Tensor, Tensor)>;

/// The strictly causal prefill mask `[N, N]`.
fn causal_mask(n: usize) -> Vec<f32> {
    (0..n * n)
        .map(|e| {
            if e % n <= e / n {
                0.0
            } else {
                f32::NEG_INFINITY
            }
        })
        .collect()
}

/// The decode cache buffer `name` of `chunk` (`current`, or zeros) with slot `s.slot` holding the
/// prefill rows `src` (`[1, kv, N, D]`) of positions `0..len`: a shift register receives the last
/// `min(len, T)` positions right-aligned, a positional cache positions `0..len`; only the true
/// head-dim columns are written.
fn slot_with_rows(
    chunk: &LoadedChunk,
    name: &str,
    current: Option<&Tensor>,
    s: &KvSlot,
    policy: CachePolicy,
    src: &Tensor,
    len: usize,
) -> R<Tensor> {
    let bad = |msg: String| ChunkSetError::Prefill(msg);
    let unbound = || ChunkSetError::Unbound {
        chunk: chunk.name.clone(),
        input: name.to_string(),
    };
    let ty = chunk
        .sig
        .inputs
        .iter()
        .find(|i| i.name == name)
        .and_then(|i| i.ty.clone())
        .ok_or_else(unbound)?;
    let shape = ty.static_shape().ok_or_else(unbound)?;
    let &[nslots, kvh, tlen, width] = shape.as_slice() else {
        return Err(bad(format!(
            "{}: `{name}` is {shape:?}, expected [slots, kv_heads, len, head_dim]",
            chunk.name
        )));
    };
    let ss = src.shape();
    if ss.len() != 4 || ss[1] != kvh || ss[3] > width || s.slot >= nslots {
        return Err(bad(format!(
            "layer {}: prefill {ss:?} does not fit slot {} of `{name}` {shape:?} in {}",
            s.layer, s.slot, chunk.name
        )));
    }
    let (n, d) = (ss[2], ss[3]);
    let (first, dst0) = match policy.kind() {
        CacheKind::ShiftRegister => {
            let m = len.min(tlen);
            (len - m, tlen - m)
        }
        CacheKind::Positional if len <= tlen => (0, 0),
        CacheKind::Ring => {
            return Err(bad(format!(
                "{}: a ring cache lives in the chunk's state (a stateful set: use \
                 mil_runtime::stateful)",
                chunk.name
            )));
        }
        CacheKind::Positional => {
            return Err(ChunkSetError::ContextFull {
                pos: len - 1,
                what: format!("cache `{name}` of {}", chunk.name),
                limit: tlen,
            });
        }
    };
    let mut buf = match current {
        Some(t) => t
            .to_f32()
            .map_err(|e| bad(format!("{name}: {e}")))?
            .into_owned(),
        None => vec![0.0; shape.iter().product()],
    };
    let sv = src.to_f32().map_err(|e| bad(format!("{name}: {e}")))?;
    for h in 0..kvh {
        for (r, p) in (first..len).enumerate() {
            let dst = ((s.slot * kvh + h) * tlen + dst0 + r) * width;
            let from = (h * n + p) * d;
            buf[dst..dst + d].copy_from_slice(&sv[from..from + d]);
        }
    }
    tensor_of(ty.dtype, &shape, &buf).map_err(|e| ChunkSetError::Chunk {
        chunk: chunk.name.clone(),
        source: Box::new(e),
    })
}
