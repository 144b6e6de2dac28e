//! LUT palettization of one weight tensor for `constexpr_lut_to_dense` (iOS18).
//!
//! **Grouping.** Axis 0 is the output-channel axis of a row-major `[O, ...]` weight (linear
//! `[O, I]`, conv `[O, I, kh, kw]`, embedding `[V, d]`). `group_size` consecutive output channels
//! share one LUT, so group `g` is the contiguous element range
//! `[g·gs·inner, (g+1)·gs·inner)` with `inner = Π shape[1..]`. `group_size` 0 or `>= O` means one
//! LUT for the whole tensor; otherwise `O % group_size` must be 0.
//!
//! **Fit per group** (exact, deterministic): histogram of distinct fp16 values (`-0.0 ≡ +0.0`) →
//! optimal weighted 1-D k-means with `k = 2^nbits` ([`crate::kmeans`], the same problem as
//! coremltools' `kmeans1d` path) → centroids in `f64`, ascending → LUT entries rounded to the
//! nearest fp16 (ties to even, one rounding). With fewer distinct values than `2^nbits`, every value
//! is its own entry (exact) and the unused trailing slots are `0.0`, like coremltools (they are
//! never referenced; the LUT is then ascending only over the used prefix).
//!
//! **Optimality.** The partition minimises the real-valued k-means objective exactly (the
//! problem kmeans1d solves). Rounding the centroids to fp16 then adds `R = Σ_c W_c·(lut_c −
//! mean_c)²` (each `|lut_c − mean_c|` ≤ half an fp16 ulp), so for *any* LUT `L` with at most
//! `2^nbits` entries `SSE ≤ SSE(L) + R`; on adversarial grids (a few values straddling a binade
//! boundary) a hand-picked fp16 LUT can beat the rounded optimum by less than `R`.
//!
//! **Indices** ([`Assignment`]): by default each value is re-assigned to the nearest *rounded* LUT
//! entry (ties → lower index). That never increases any element's error, so the MSE is ≤ the one
//! of coremltools' assignment (which keeps the k-means cluster of each value) with the same LUT.
//! [`Assignment::Cluster`] reproduces coremltools' indices exactly.
//!
//! **Output layout.** Indices: the weight's shape, row-major, packed LSB first
//! ([`crate::pack`]). LUT: fp16, shape `[G, 1, …, 1, 2^nbits, 1]` (rank + 2: `G` on axis 0, 1 on the
//! other weight axes, then the palette and a vector size of 1) — `[O/g, 1, 16, 1]` for a 4-bit
//! linear weight, `[O/g, 1, 1, 1, 16, 1]` for a 1×1 conv.
//!
//! **Input.** fp16 directly. `f32` weights are first rounded to fp16 (round to nearest even), i.e.
//! the fit sees exactly what an fp16 Core ML model would store; coremltools instead clusters fp32
//! weights with scikit-learn. NaN/±inf are rejected.
//!
//! **Parallelism.** Groups are independent tasks (rayon); each task owns its outputs and its
//! metrics, which are combined in group order afterwards, so the result is bit-identical for any
//! thread count. Not covered: vector palettization (`cluster_dim > 1`), per-channel scales,
//! grouping on axes other than 0.

use crate::error::{PackError, PalettizeError};
use crate::fp16::f64_to_f16;
use crate::histogram::{self, HistScratch};
use crate::kmeans::{self, Method};
use crate::metrics::{GroupStats, PalStats};
use crate::pack;
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// How indices are chosen once the LUT is fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Assignment {
    /// Nearest fp16-rounded LUT entry (ties to the lower index). Never worse than `Cluster`.
    #[default]
    Nearest,
    /// The k-means cluster of each value (coremltools' behaviour; no re-assignment).
    Cluster,
}

/// Palettization parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LutConfig {
    /// Bits per index, 1..=8 (MIL index types exist for 1, 2, 3, 4, 6, 8).
    pub nbits: u8,
    /// Output channels per LUT; 0 or `>= O` means one LUT for the tensor.
    pub group_size: usize,
    /// Index choice after fitting.
    pub assignment: Assignment,
}

impl Default for LutConfig {
    /// 4 bits, group size 32, nearest-entry assignment (coremltools' recipe for Gemma).
    fn default() -> Self {
        LutConfig {
            nbits: 4,
            group_size: 32,
            assignment: Assignment::Nearest,
        }
    }
}

impl LutConfig {
    /// `nbits` bits, `group_size` channels per LUT, default assignment.
    pub fn new(nbits: u8, group_size: usize) -> Self {
        LutConfig {
            nbits,
            group_size,
            assignment: Assignment::default(),
        }
    }

    /// Number of LUT entries, `2^nbits`.
    pub fn palette_len(&self) -> usize {
        1usize << self.nbits.min(8)
    }

    /// Effective channels per group for `channels` output channels (`channels` if per-tensor).
    pub fn effective_group_size(&self, channels: usize) -> usize {
        if self.group_size == 0 || self.group_size >= channels {
            channels
        } else {
            self.group_size
        }
    }
}

/// A palettized weight in `constexpr_lut_to_dense` (iOS18) layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Palettized {
    /// Weight (and indices) shape.
    pub shape: Vec<usize>,
    /// Bits per index.
    pub nbits: u8,
    /// Output channels per LUT actually used (axis-0 size when per-tensor).
    pub group_size: usize,
    /// Indices, row-major, packed LSB first, `ceil(N·nbits/8)` bytes.
    pub indices_packed: Vec<u8>,
    /// LUT values, row-major over `lut_shape` (group-major, `2^nbits` entries per group).
    pub lut: Vec<f16>,
    /// `[G, 1, …, 1, 2^nbits, 1]` (rank + 2).
    pub lut_shape: Vec<usize>,
    /// Error metrics against the fp16 input.
    pub stats: PalStats,
}

impl Palettized {
    /// Number of LUT groups `G`.
    pub fn num_groups(&self) -> usize {
        self.lut_shape.first().copied().unwrap_or(0)
    }

    /// Number of weight elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Unused trailing bits of the packed index blob (`padding_size_in_bits`).
    pub fn padding_bits(&self) -> u8 {
        pack::padding_bits(self.numel(), self.nbits)
    }

    /// The LUT entries of group `g` (`2^nbits` values).
    pub fn group_lut(&self, g: usize) -> Option<&[f16]> {
        let p = 1usize << self.nbits;
        self.lut.get(g * p..(g + 1) * p)
    }

    /// Unpacked indices (one per element, row-major).
    pub fn indices(&self) -> Result<Vec<u8>, PackError> {
        pack::unpack(&self.indices_packed, self.nbits, self.numel())
    }

    /// Dense fp16 weight reconstructed from indices and LUT.
    pub fn dequantize(&self, tensor: &str) -> Result<Vec<f16>, PalettizeError> {
        let idx = self.indices().map_err(|source| PalettizeError::Pack {
            tensor: tensor.to_owned(),
            source,
        })?;
        dequantize(
            tensor,
            &idx,
            &self.shape,
            self.nbits,
            &self.lut,
            self.num_groups(),
        )
    }
}

/// `out[i] = lut[group(i)][indices[i]]` for a `[O, ...]` weight split into `groups` LUT groups
/// along axis 0 (the semantics of `constexpr_lut_to_dense` with a vector size of 1).
pub fn dequantize(
    tensor: &str,
    indices: &[u8],
    shape: &[usize],
    nbits: u8,
    lut: &[f16],
    groups: usize,
) -> Result<Vec<f16>, PalettizeError> {
    let bad = |why: String| PalettizeError::Inconsistent {
        tensor: tensor.to_owned(),
        why,
    };
    if !(1..=8).contains(&nbits) {
        return Err(PalettizeError::UnsupportedNbits {
            tensor: tensor.to_owned(),
            nbits,
        });
    }
    let numel = checked_numel(shape).ok_or_else(|| bad(format!("bad shape {shape:?}")))?;
    if indices.len() != numel {
        return Err(bad(format!(
            "{} indices for shape {shape:?} ({numel} elements)",
            indices.len()
        )));
    }
    let channels = shape.first().copied().unwrap_or(0);
    if groups == 0 || channels % groups != 0 {
        return Err(bad(format!(
            "{groups} groups do not divide {channels} channels"
        )));
    }
    let p = 1usize << nbits;
    if lut.len() != groups * p {
        return Err(bad(format!(
            "LUT has {} entries, expected {groups} x {p}",
            lut.len()
        )));
    }
    let per_group = numel / groups;
    let mut out = Vec::with_capacity(numel);
    for (g, chunk) in indices.chunks(per_group.max(1)).enumerate() {
        let table = &lut[g * p..(g + 1) * p];
        for (i, &ix) in chunk.iter().enumerate() {
            let v = table.get(ix as usize).ok_or_else(|| {
                bad(format!(
                    "index {ix} at element {} exceeds {p} entries",
                    g * per_group + i
                ))
            })?;
            out.push(*v);
        }
    }
    Ok(out)
}

/// LUT tensor shape for a weight of shape `shape` with `groups` groups: `[G, 1, …, 2^nbits, 1]`.
pub fn lut_shape(shape: &[usize], groups: usize, nbits: u8) -> Vec<usize> {
    let mut s = vec![1usize; shape.len() + 2];
    s[0] = groups;
    let r = s.len();
    s[r - 2] = 1usize << nbits;
    s[r - 1] = 1;
    s
}

fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// Palettize an fp16 weight (see the module docs). `pool`: run inside this rayon pool, or in the
/// current/global pool when `None`.
pub fn palettize_f16(
    name: &str,
    w: &[f16],
    shape: &[usize],
    cfg: &LutConfig,
    pool: Option<&rayon::ThreadPool>,
) -> Result<Palettized, PalettizeError> {
    match pool {
        Some(p) => p.install(|| palettize_impl(name, w, shape, cfg)),
        None => palettize_impl(name, w, shape, cfg),
    }
}

/// Palettize an `f32` weight: every value is first rounded to fp16 (nearest even), then
/// [`palettize_f16`] runs on the result; metrics are against the fp16-rounded weight.
pub fn palettize_f32(
    name: &str,
    w: &[f32],
    shape: &[usize],
    cfg: &LutConfig,
    pool: Option<&rayon::ThreadPool>,
) -> Result<Palettized, PalettizeError> {
    let run = || {
        let mut h = vec![f16::ZERO; w.len()];
        h.par_chunks_mut(1 << 16)
            .zip(w.par_chunks(1 << 16))
            .for_each(|(o, i)| o.convert_from_f32_slice(i));
        palettize_impl(name, &h, shape, cfg)
    };
    match pool {
        Some(p) => p.install(run),
        None => run(),
    }
}

/// A named fp16 weight for [`palettize_batch`].
#[derive(Debug, Clone, Copy)]
pub struct WeightRef<'a> {
    /// Tensor name (used in errors).
    pub name: &'a str,
    /// Shape, row-major.
    pub shape: &'a [usize],
    /// Values.
    pub data: &'a [f16],
}

/// Palettize several tensors in parallel (tensors and their groups are all rayon tasks); results
/// are in input order.
pub fn palettize_batch(
    weights: &[WeightRef<'_>],
    cfg: &LutConfig,
    pool: Option<&rayon::ThreadPool>,
) -> Vec<Result<Palettized, PalettizeError>> {
    let run = || {
        weights
            .par_iter()
            .map(|w| palettize_impl(w.name, w.data, w.shape, cfg))
            .collect()
    };
    match pool {
        Some(p) => p.install(run),
        None => run(),
    }
}

/// Per-thread scratch of the group fit (tables are left clean after each group).
struct Worker {
    hist: HistScratch,
    km: kmeans::Scratch,
    /// fp16 bit pattern → index, valid only for the bits present in the current group.
    table: Vec<u8>,
    /// Unpacked indices of the current group (aligned path).
    idx: Vec<u8>,
    /// LUT index of each distinct value of the current group.
    value_idx: Vec<u8>,
}

impl Worker {
    fn new() -> Self {
        Worker {
            hist: HistScratch::new(),
            km: kmeans::Scratch::default(),
            table: vec![0; 1 << 16],
            idx: Vec::new(),
            value_idx: Vec::new(),
        }
    }
}

/// Largest per-thread index buffer kept between groups (bytes).
const MAX_KEPT_IDX: usize = 1 << 22;

thread_local! {
    /// Scratch of the current (rayon worker) thread, kept across groups and calls.
    static WORKER: std::cell::RefCell<Option<Worker>> = const { std::cell::RefCell::new(None) };
}

/// Run `f` with this thread's scratch (a fresh one if it is already in use).
fn with_worker<R>(f: impl FnOnce(&mut Worker) -> R) -> R {
    WORKER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => f(slot.get_or_insert_with(Worker::new)),
        Err(_) => f(&mut Worker::new()),
    })
}

fn palettize_impl(
    name: &str,
    w: &[f16],
    shape: &[usize],
    cfg: &LutConfig,
) -> Result<Palettized, PalettizeError> {
    let nbits = cfg.nbits;
    if !(1..=8).contains(&nbits) {
        return Err(PalettizeError::UnsupportedNbits {
            tensor: name.to_owned(),
            nbits,
        });
    }
    let bad_shape = |why| PalettizeError::BadShape {
        tensor: name.to_owned(),
        shape: shape.to_vec(),
        why,
    };
    if shape.is_empty() {
        return Err(bad_shape("rank 0"));
    }
    let numel = checked_numel(shape).ok_or_else(|| bad_shape("element count overflows"))?;
    if numel == 0 {
        return Err(bad_shape("zero-sized dimension"));
    }
    if w.len() != numel {
        return Err(PalettizeError::ShapeMismatch {
            tensor: name.to_owned(),
            shape: shape.to_vec(),
            expected: numel,
            actual: w.len(),
        });
    }
    let channels = shape[0];
    let gs = cfg.effective_group_size(channels);
    if !channels.is_multiple_of(gs) {
        return Err(PalettizeError::GroupSizeMismatch {
            tensor: name.to_owned(),
            channels,
            group_size: cfg.group_size,
        });
    }
    let groups = channels / gs;
    let per_group = numel / groups;
    if per_group > u32::MAX as usize {
        return Err(bad_shape("more than 2^32 elements per LUT group"));
    }
    let p = 1usize << nbits;
    // f16 is a transparent u16; view the data as bit patterns.
    let bits_ref: &[u16] = w.reinterpret_cast();
    let mut lut = vec![f16::ZERO; groups * p];
    let mut packed = vec![0u8; pack::packed_len(numel, nbits)];
    let group_bits = per_group * nbits as usize;
    let aligned = groups == 1 || group_bits.is_multiple_of(8);
    let fit = |wk: &mut Worker, g: usize, idx_out: &mut [u8], lut_out: &mut [f16]| {
        let data = &bits_ref[g * per_group..(g + 1) * per_group];
        fit_group(data, nbits, cfg.assignment, wk, idx_out, lut_out).map_err(|pos| {
            PalettizeError::NonFinite {
                tensor: name.to_owned(),
                index: g * per_group + pos,
                bits: data[pos],
            }
        })
    };
    let stats: Vec<GroupStats> = if aligned {
        let bytes_per_group = group_bits / 8;
        let bytes_per_group = if groups == 1 {
            packed.len()
        } else {
            bytes_per_group
        };
        packed
            .par_chunks_mut(bytes_per_group.max(1))
            .zip(lut.par_chunks_mut(p))
            .enumerate()
            .map(|(g, (out, lut_out))| {
                with_worker(|wk| {
                    let mut idx = std::mem::take(&mut wk.idx);
                    idx.resize(per_group, 0);
                    let r = fit(wk, g, &mut idx, lut_out);
                    if r.is_ok() {
                        pack::pack_into(&idx, nbits, out);
                    }
                    // Keep the buffer for the next group unless it is unusually large.
                    if idx.capacity() <= MAX_KEPT_IDX {
                        wk.idx = idx;
                    }
                    r
                })
            })
            .collect::<Result<_, _>>()?
    } else {
        let mut idx_all = vec![0u8; numel];
        let stats = idx_all
            .par_chunks_mut(per_group)
            .zip(lut.par_chunks_mut(p))
            .enumerate()
            .map(|(g, (idx, lut_out))| with_worker(|wk| fit(wk, g, idx, lut_out)))
            .collect::<Result<_, _>>()?;
        // 8 elements always occupy exactly nbits bytes, so 8k-element chunks pack independently.
        const CHUNK: usize = 8 * 4096;
        packed
            .par_chunks_mut(CHUNK / 8 * nbits as usize)
            .zip(idx_all.par_chunks(CHUNK))
            .for_each(|(o, i)| pack::pack_into(i, nbits, o));
        stats
    };
    Ok(Palettized {
        shape: shape.to_vec(),
        nbits,
        group_size: gs,
        indices_packed: packed,
        lut,
        lut_shape: lut_shape(shape, groups, nbits),
        stats: PalStats::from_groups(stats),
    })
}

/// Fit one group: LUT into `lut_out` (len 2^nbits), indices into `idx_out` (len = data.len()).
/// `Err(pos)` for a non-finite value at `pos`.
fn fit_group(
    data: &[u16],
    nbits: u8,
    assignment: Assignment,
    wk: &mut Worker,
    idx_out: &mut [u8],
    lut_out: &mut [f16],
) -> Result<GroupStats, usize> {
    let hist = histogram::build(data, &mut wk.hist)?;
    let weights = hist.counts;
    let k = 1usize << nbits;
    let cl = kmeans::solve(
        hist.values,
        weights,
        k,
        Method::Lagrangian,
        false,
        &mut wk.km,
    );
    let used = cl.len();
    lut_out.fill(f16::ZERO);
    for (slot, c) in lut_out.iter_mut().zip(&cl.centroids) {
        *slot = f64_to_f16(*c);
    }
    let lut_f64: Vec<f64> = lut_out[..used].iter().map(|v| v.to_f64()).collect();
    // Index of each distinct value.
    let value_idx = &mut wk.value_idx;
    value_idx.clear();
    value_idx.resize(hist.values.len(), 0);
    match assignment {
        Assignment::Cluster => {
            for (m, w) in cl.starts.windows(2).enumerate() {
                value_idx[w[0]..w[1]].fill(m as u8);
            }
        }
        Assignment::Nearest => {
            // Distinct entries (first index of each), strictly ascending.
            let mut cands: Vec<(f64, u8)> = Vec::with_capacity(used);
            for (m, v) in lut_f64.iter().enumerate() {
                if cands.last().is_none_or(|(last, _)| last < v) {
                    cands.push((*v, m as u8));
                }
            }
            let mut c = 0usize;
            for (t, v) in hist.values.iter().enumerate() {
                while c + 1 < cands.len() && (v - cands[c + 1].0).abs() < (v - cands[c].0).abs() {
                    c += 1;
                }
                value_idx[t] = cands[c].1;
            }
        }
    }
    // Metrics over distinct values, ascending.
    let mut sse = 0.0;
    let mut signal = 0.0;
    let mut max_abs: f64 = 0.0;
    for ((v, n), ix) in hist.values.iter().zip(weights).zip(value_idx.iter()) {
        let e = lut_f64[*ix as usize] - v;
        sse += n * e * e;
        signal += n * v * v;
        max_abs = max_abs.max(e.abs());
    }
    // Map every element through a bit-pattern table (−0.0 shares +0.0's index).
    for (b, ix) in hist.bits.iter().zip(value_idx.iter()) {
        wk.table[*b as usize] = *ix;
        if *b == 0 {
            wk.table[0x8000] = *ix;
        }
    }
    for (o, b) in idx_out.iter_mut().zip(data) {
        *o = wk.table[*b as usize];
    }
    Ok(GroupStats {
        elements: data.len() as u64,
        distinct: hist.values.len() as u32,
        clusters: used as u32,
        sse,
        signal,
        max_abs_error: max_abs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: usize) -> Vec<f16> {
        (0..n)
            .map(|i| f16::from_f32(((i * 7919) % 1009) as f32 / 1009.0 - 0.5))
            .collect()
    }

    #[test]
    fn lut_shapes_follow_rank_plus_two() {
        assert_eq!(lut_shape(&[2048, 1536], 64, 4), [64, 1, 16, 1]);
        assert_eq!(lut_shape(&[64, 64, 1, 1], 2, 4), [2, 1, 1, 1, 16, 1]);
        assert_eq!(lut_shape(&[100], 1, 2), [1, 4, 1]);
        let w = ramp(64 * 48);
        let p = palettize_f16("conv", &w, &[64, 48, 1, 1], &LutConfig::new(4, 32), None).unwrap();
        assert_eq!(p.lut_shape, [2, 1, 1, 1, 16, 1]);
        assert_eq!(p.group_size, 32);
        let t = palettize_f16("t", &w, &[64, 48], &LutConfig::new(3, 0), None).unwrap();
        assert_eq!((t.lut_shape.clone(), t.group_size), (vec![1, 1, 8, 1], 64));
        let big = palettize_f16("t", &w, &[64, 48], &LutConfig::new(3, 1000), None).unwrap();
        assert_eq!(big.lut, t.lut);
        assert_eq!(big.indices_packed, t.indices_packed);
    }

    #[test]
    fn errors_name_the_tensor() {
        let w = ramp(96);
        let cfg = LutConfig::new(4, 32);
        let e = palettize_f16("a.weight", &w, &[64, 2], &cfg, None).unwrap_err();
        assert!(matches!(
            e,
            PalettizeError::ShapeMismatch {
                expected: 128,
                actual: 96,
                ..
            }
        ));
        assert!(e.to_string().contains("a.weight"));
        let e = palettize_f16("a", &w, &[48, 2], &cfg, None).unwrap_err();
        assert!(matches!(
            e,
            PalettizeError::GroupSizeMismatch {
                channels: 48,
                group_size: 32,
                ..
            }
        ));
        let e = palettize_f16("a", &w, &[96], &LutConfig::new(0, 32), None).unwrap_err();
        assert!(matches!(
            e,
            PalettizeError::UnsupportedNbits { nbits: 0, .. }
        ));
        let e = palettize_f16("a", &w, &[96], &LutConfig::new(9, 32), None).unwrap_err();
        assert!(matches!(
            e,
            PalettizeError::UnsupportedNbits { nbits: 9, .. }
        ));
        assert!(matches!(
            palettize_f16("a", &[], &[], &cfg, None).unwrap_err(),
            PalettizeError::BadShape { .. }
        ));
        assert!(matches!(
            palettize_f16("a", &[], &[0, 4], &cfg, None).unwrap_err(),
            PalettizeError::BadShape { .. }
        ));
        let mut bad = ramp(64 * 4);
        bad[200] = f16::INFINITY;
        let e = palettize_f16("nan.w", &bad, &[64, 4], &cfg, None).unwrap_err();
        assert_eq!(
            e,
            PalettizeError::NonFinite {
                tensor: "nan.w".into(),
                index: 200,
                bits: 0x7c00
            }
        );
    }

    #[test]
    fn f32_input_is_rounded_to_fp16_first() {
        let w32: Vec<f32> = (0..64 * 40)
            .map(|i| ((i * 31) % 97) as f32 * 1e-3 - 0.05)
            .collect();
        let w16: Vec<f16> = w32.iter().map(|v| f16::from_f32(*v)).collect();
        let cfg = LutConfig::new(2, 16);
        let a = palettize_f32("w", &w32, &[64, 40], &cfg, None).unwrap();
        let b = palettize_f16("w", &w16, &[64, 40], &cfg, None).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn batch_equals_single_calls_in_order() {
        let (a, b) = (ramp(64 * 40), ramp(32 * 96));
        let refs = [
            WeightRef {
                name: "a",
                shape: &[64, 40],
                data: &a,
            },
            WeightRef {
                name: "b",
                shape: &[32, 96],
                data: &b,
            },
            WeightRef {
                name: "bad",
                shape: &[3, 3],
                data: &b,
            },
        ];
        let cfg = LutConfig::default();
        let out = palettize_batch(&refs, &cfg, None);
        assert_eq!(
            out[0].as_ref().unwrap(),
            &palettize_f16("a", &a, &[64, 40], &cfg, None).unwrap()
        );
        assert_eq!(
            out[1].as_ref().unwrap(),
            &palettize_f16("b", &b, &[32, 96], &cfg, None).unwrap()
        );
        assert!(
            matches!(&out[2], Err(PalettizeError::ShapeMismatch { tensor, .. }) if tensor == "bad")
        );
    }

    #[test]
    fn unaligned_groups_pack_like_a_single_stream() {
        // 3 bits x 5 elements per group: group starts are not byte aligned.
        let w = ramp(6 * 5);
        let p = palettize_f16("w", &w, &[6, 5], &LutConfig::new(3, 1), None).unwrap();
        let idx = p.indices().unwrap();
        assert_eq!(pack::pack(&idx, 3).unwrap(), p.indices_packed);
        assert_eq!(p.padding_bits(), 6);
        // 5 distinct values per group <= 8 entries: exact.
        assert_eq!(p.dequantize("w").unwrap(), w);
    }

    #[test]
    fn dequantize_checks_consistency() {
        let lut = vec![f16::ONE; 4];
        assert!(dequantize("t", &[0, 1, 2, 3], &[2, 2], 2, &lut, 1).is_ok());
        assert!(dequantize("t", &[0, 1, 2], &[2, 2], 2, &lut, 1).is_err());
        assert!(dequantize("t", &[0, 1, 2, 3], &[2, 2], 2, &lut, 2).is_err());
        assert!(dequantize("t", &[0, 1, 2, 4], &[2, 2], 2, &lut, 1).is_err());
        assert!(dequantize("t", &[0, 1, 2, 3], &[2, 2], 2, &lut, 3).is_err());
    }
}
