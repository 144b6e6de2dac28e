//! Weight preparation: checkpoint tensors → MIL literals (fp16 / fp32 dense, or palettized LUTs).
//!
//! Every projection is emitted as a 1×1 conv weight `[O, I, 1, 1]`. When palettizing, each eligible
//! weight (coremltools' default policy: > 2048 elements, rank ≥ 2, output channels divisible by the
//! group size) becomes `constexpr_lut_to_dense(indices: uint<n>[O,I,1,1], lut: [O/g,1,1,1,2^n,1])`
//! fitted by `palettize`'s exact k-means; everything else stays dense and is recorded with the reason.
//! Prepared literals are cached by checkpoint key, so functions of one chunk (decode, verify, prefill)
//! share the same bytes and the package writer stores them once.

use crate::error::{ExportError, Result};
use chunkset::{Compression, LutConfig, NBits};
use gemma4::checkpoint::RawTensor;
use gemma4::st::StDtype;
use half::f16;
use half::slice::HalfFloatSliceExt;
use mil::builder::FunctionBuilder;
use mil::{DType, TensorType, TensorValue, Var};
use palettize::{Decision, Policy, TensorRecord};
use rayon::prelude::*;
use std::collections::BTreeMap;

/// Where weights come from (the checkpoint, or synthetic weights in tests and benchmarks).
pub trait WeightSource: Sync {
    /// Shape and f32 values of the tensor with checkpoint key `key` (after the prefix).
    fn load(&self, key: &str) -> Result<(Vec<usize>, Vec<f32>)>;

    /// Rows `start..start+count` of the 2-D (or 1-D, as one row) tensor `key` with `cols` columns.
    /// The default loads the whole tensor; sources over large tables override it to stay bounded.
    fn load_rows(&self, key: &str, start: usize, count: usize, cols: usize) -> Result<Vec<f32>> {
        let (shape, v) = self.load(key)?;
        let total: usize = shape.iter().product();
        let (lo, hi) = (start * cols, (start + count) * cols);
        if hi > total || shape.last().copied().unwrap_or(1) != cols && shape.len() > 1 {
            return Err(ExportError::Shape {
                tensor: key.to_string(),
                expected: vec![start + count, cols],
                found: shape,
            });
        }
        Ok(v[lo..hi].to_vec())
    }

    /// Shape and values of `key` rounded to fp16 (nearest even): what palettization reads. The
    /// default rounds [`WeightSource::load`]'s values; a checkpoint decodes its stored bytes
    /// straight to fp16 in parallel (the same values, without an f32 copy of the tensor).
    fn load_f16(&self, key: &str) -> Result<(Vec<usize>, Vec<f16>)> {
        let (shape, v) = self.load(key)?;
        let mut h = vec![f16::ZERO; v.len()];
        h.convert_from_f32_slice(&v);
        Ok((shape, h))
    }

    /// The stored bytes of `key` when the source is a memory-mapped checkpoint (`None` for other
    /// sources): large tables are then decoded row block by row block in parallel.
    fn stored(&self, _key: &str) -> Result<Option<RawTensor<'_>>> {
        Ok(None)
    }
}

/// Elements decoded per parallel task.
const DECODE_BLOCK: usize = 1 << 16;

/// Bytes per element of a stored float dtype.
fn float_width(raw: &RawTensor<'_>) -> Result<usize> {
    match raw.dtype {
        StDtype::F32 => Ok(4),
        StDtype::F16 | StDtype::BF16 => Ok(2),
        other => Err(gemma4::Error::UnsupportedDtype {
            file: raw.file.to_path_buf(),
            tensor: raw.name.clone(),
            dtype: other.name().to_string(),
        }
        .into()),
    }
}

/// Decode little-endian stored floats into `out` (one value per element); returns the position of
/// the first non-finite value, if any.
fn decode_into(dtype: StDtype, bytes: &[u8], out: &mut [f32]) -> Option<usize> {
    match dtype {
        StDtype::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        StDtype::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        _ => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
    }
    out.iter().position(|x| !x.is_finite())
}

fn non_finite(raw: &RawTensor<'_>, index: usize, value: f32) -> ExportError {
    gemma4::Error::NonFinite {
        file: raw.file.to_path_buf(),
        tensor: raw.name.clone(),
        index,
        value: format!("{value}"),
    }
    .into()
}

/// A stored float tensor rounded to fp16 (nearest even, as `f16::from_f32` of its exact f32
/// value), decoded in parallel blocks; a non-finite value is an error naming the first one.
pub fn decode_f16(raw: &RawTensor<'_>) -> Result<Vec<f16>> {
    let w = float_width(raw)?;
    let mut out = vec![f16::ZERO; raw.bytes.len() / w];
    let bad: Vec<Option<(usize, f32)>> = out
        .par_chunks_mut(DECODE_BLOCK)
        .zip(raw.bytes.par_chunks(DECODE_BLOCK * w))
        .enumerate()
        .map_init(Vec::new, |f: &mut Vec<f32>, (b, (o, bytes))| {
            f.resize(o.len(), 0.0);
            if let Some(j) = decode_into(raw.dtype, bytes, f) {
                return Some((b * DECODE_BLOCK + j, f[j]));
            }
            o.convert_from_f32_slice(f);
            None
        })
        .collect();
    match bad.into_iter().flatten().next() {
        Some((i, v)) => Err(non_finite(raw, i, v)),
        None => Ok(out),
    }
}

/// Rows `start..start + out.len() / cols` of a stored 2-D float tensor with `cols` columns, as f32
/// (exact), into `out`; a non-finite value is an error naming it.
pub fn decode_rows_f32(
    raw: &RawTensor<'_>,
    cols: usize,
    start: usize,
    out: &mut [f32],
) -> Result<()> {
    let w = float_width(raw)?;
    let (lo, hi) = (start * cols * w, start * cols * w + out.len() * w);
    let bytes = raw.bytes.get(lo..hi).ok_or_else(|| ExportError::Shape {
        tensor: raw.name.clone(),
        expected: vec![start + out.len() / cols.max(1), cols],
        found: raw.shape.clone(),
    })?;
    match decode_into(raw.dtype, bytes, out) {
        Some(j) => Err(non_finite(raw, start * cols + j, out[j])),
        None => Ok(()),
    }
}

impl WeightSource for gemma4::Checkpoint {
    fn load(&self, key: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        Ok(self.load_f32(key)?)
    }

    fn load_f16(&self, key: &str) -> Result<(Vec<usize>, Vec<f16>)> {
        let raw = self.raw(key)?;
        Ok((raw.shape.clone(), decode_f16(&raw)?))
    }

    fn stored(&self, key: &str) -> Result<Option<RawTensor<'_>>> {
        Ok(Some(self.raw(key)?))
    }

    fn load_rows(&self, key: &str, start: usize, count: usize, cols: usize) -> Result<Vec<f32>> {
        let shape = self.shape(key)?;
        let row: usize = shape.iter().skip(1).product();
        if shape.len() > 1 && row != cols {
            return Err(ExportError::Shape {
                tensor: key.to_string(),
                expected: vec![start + count, cols],
                found: shape,
            });
        }
        if shape.len() <= 1 {
            // a vector read as one row
            let (_, v) = self.load_f32(key)?;
            return Ok(v);
        }
        Ok(self.load_rows_f32(key, start, count)?)
    }
}

#[derive(Clone)]
enum Prepared {
    Dense(TensorValue),
    Lut {
        indices: TensorValue,
        lut: TensorValue,
    },
}

/// Prepares and caches the weights of one chunk.
pub struct Weights<'a> {
    src: &'a dyn WeightSource,
    fp32: bool,
    compression: Compression,
    policy: Policy,
    pool: Option<&'a rayon::ThreadPool>,
    cache: BTreeMap<String, Prepared>,
    records: BTreeMap<String, TensorRecord>,
}

/// The MIL index type of a bit width.
fn index_dtype(nbits: NBits) -> DType {
    match nbits {
        NBits::B1 => DType::U1,
        NBits::B2 => DType::U2,
        NBits::B3 => DType::U3,
        NBits::B4 => DType::U4,
        NBits::B6 => DType::U6,
        NBits::B8 => DType::U8,
    }
}

/// The `palettize` settings of a LUT configuration.
fn palettize_config(c: &LutConfig) -> palettize::LutConfig {
    palettize::LutConfig::new(c.nbits.bits(), c.group_size)
}

impl<'a> Weights<'a> {
    /// A weight preparer for one chunk.
    pub fn new(
        src: &'a dyn WeightSource,
        fp32: bool,
        compression: Compression,
        pool: Option<&'a rayon::ThreadPool>,
    ) -> Self {
        Weights {
            src,
            fp32,
            compression,
            policy: Policy::default(),
            pool,
            cache: BTreeMap::new(),
            records: BTreeMap::new(),
        }
    }

    /// Float dtype of dense literals.
    pub fn dtype(&self) -> DType {
        if self.fp32 { DType::F32 } else { DType::F16 }
    }

    fn dense(&self, key: &str, shape: &[usize], v: &[f32]) -> Result<TensorValue> {
        let r = if self.fp32 {
            TensorValue::from_f32(shape, v)
        } else {
            let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
            TensorValue::from_f16(shape, &h)
        };
        r.map_err(|source| ExportError::Value {
            tensor: key.to_string(),
            source,
        })
    }

    /// Load `key`, checking its shape.
    pub fn load_checked(&self, key: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let (shape, v) = self.src.load(key)?;
        if shape != expected {
            return Err(ExportError::Shape {
                tensor: key.to_string(),
                expected: expected.to_vec(),
                found: shape,
            });
        }
        Ok(v)
    }

    /// When palettizing, record why a weight of `shape` stays dense, if the policy keeps it.
    fn record_kept(&mut self, key: &str, shape: &[usize]) {
        if let Some(c) = self.compression.lut() {
            let decision = palettize::decide(shape, &palettize_config(c), &self.policy);
            self.record(key, shape, decision);
        }
    }

    fn record(&mut self, key: &str, shape: &[usize], decision: Decision) {
        if let Decision::Keep(reason) = decision {
            self.records
                .insert(key.to_string(), TensorRecord::kept(key, shape, reason));
        }
    }

    /// A projection weight `[O, I]` as a 1×1 conv weight var `[O, I, 1, 1]` (palettized if eligible).
    pub fn conv_weight(
        &mut self,
        b: &mut FunctionBuilder,
        name: &str,
        key: &str,
        o: usize,
        i: usize,
    ) -> Result<Var> {
        let prepared = match self.cache.get(key) {
            Some(p) => p.clone(),
            None => {
                let p = self.prepare_conv(key, o, i)?;
                self.cache.insert(key.to_string(), p.clone());
                p
            }
        };
        let r = match prepared {
            Prepared::Dense(t) => b.constant(name, t),
            Prepared::Lut { indices, lut } => b.lut_to_dense(name, indices, lut),
        };
        Ok(r?)
    }

    fn prepare_conv(&mut self, key: &str, o: usize, i: usize) -> Result<Prepared> {
        let shape4 = [o, i, 1, 1];
        let Some(lut) = self.compression.lut().copied() else {
            let v = self.load_checked(key, &[o, i])?;
            return Ok(Prepared::Dense(self.dense(key, &shape4, &v)?));
        };
        let cfg = palettize_config(&lut);
        let decision = palettize::decide(&shape4, &cfg, &self.policy);
        if !matches!(decision, Decision::Palettize) {
            let v = self.load_checked(key, &[o, i])?;
            self.record(key, &[o, i], decision);
            return Ok(Prepared::Dense(self.dense(key, &shape4, &v)?));
        }
        // palettization reads the fp16-rounded weight: load it as fp16 directly (the same values
        // palettize_f32 would round to, without an f32 copy of the tensor)
        let (shape, h) = self.src.load_f16(key)?;
        if shape != [o, i] {
            return Err(ExportError::Shape {
                tensor: key.to_string(),
                expected: vec![o, i],
                found: shape,
            });
        }
        let p = palettize::palettize_f16(key, &h, &shape4, &cfg, self.pool).map_err(|source| {
            ExportError::Palettize {
                tensor: key.to_string(),
                source,
            }
        })?;
        self.records
            .insert(key.to_string(), TensorRecord::palettized(key, &p));
        let vt = |source| ExportError::Value {
            tensor: key.to_string(),
            source,
        };
        let indices = TensorValue::from_bytes(
            TensorType::new(index_dtype(lut.nbits), &shape4),
            p.indices_packed,
        )
        .map_err(vt)?;
        let lut = if self.fp32 {
            let f: Vec<f32> = p.lut.iter().map(|x| x.to_f32()).collect();
            TensorValue::from_f32(&p.lut_shape, &f)
        } else {
            TensorValue::from_f16(&p.lut_shape, &p.lut)
        }
        .map_err(vt)?;
        Ok(Prepared::Lut { indices, lut })
    }

    /// The values a graph built with these settings computes with for the projection `key` (`[O, I]`):
    /// the dequantised LUT if it is palettized, else the weight rounded to the graph's dtype.
    pub fn graph_values(&self, key: &str, o: usize, i: usize) -> Result<Vec<f32>> {
        let v = self.load_checked(key, &[o, i])?;
        let shape4 = [o, i, 1, 1];
        if let Some(cfg) = self.compression.lut().map(palettize_config)
            && matches!(
                palettize::decide(&shape4, &cfg, &self.policy),
                Decision::Palettize
            )
        {
            let pe = |source| ExportError::Palettize {
                tensor: key.to_string(),
                source,
            };
            let p = palettize::palettize_f32(key, &v, &shape4, &cfg, self.pool).map_err(pe)?;
            return Ok(p
                .dequantize(key)
                .map_err(pe)?
                .iter()
                .map(|x| x.to_f32())
                .collect());
        }
        Ok(self.round(v))
    }

    /// Round values to the graph's float dtype (identity for fp32 graphs).
    pub fn round(&self, v: Vec<f32>) -> Vec<f32> {
        if self.fp32 {
            v
        } else {
            v.into_iter().map(|x| f16::from_f32(x).to_f32()).collect()
        }
    }

    /// A rank-1 weight (norm gain) as a dense literal of the graph's float dtype.
    pub fn vector(&mut self, key: &str, n: usize) -> Result<TensorValue> {
        if let Some(Prepared::Dense(t)) = self.cache.get(key) {
            return Ok(t.clone());
        }
        let v = self.load_checked(key, &[n])?;
        self.record_kept(key, &[n]);
        let t = self.dense(key, &[n], &v)?;
        self.cache
            .insert(key.to_string(), Prepared::Dense(t.clone()));
        Ok(t)
    }

    /// A rank-1 weight times `scale` (computed in f64 from the checkpoint value, rounded once to the
    /// graph's dtype); `scale == 1` is [`Weights::vector`].
    pub fn vector_scaled(&mut self, key: &str, n: usize, scale: f64) -> Result<TensorValue> {
        if scale == 1.0 {
            return self.vector(key, n);
        }
        let ckey = format!("{key}*{scale:e}");
        if let Some(Prepared::Dense(t)) = self.cache.get(&ckey) {
            return Ok(t.clone());
        }
        self.vector(key, n)?; // the keep record of the weight itself
        let v: Vec<f32> = self
            .load_checked(key, &[n])?
            .into_iter()
            .map(|x| (f64::from(x) * scale) as f32)
            .collect();
        let t = self.dense(key, &[n], &v)?;
        self.cache.insert(ckey, Prepared::Dense(t.clone()));
        Ok(t)
    }

    /// [`Weights::conv_weight`] of the weight times `scale` (`scale == 1` is
    /// [`Weights::conv_weight`]). A dense weight is scaled in f64 from the checkpoint value and
    /// rounded once to the graph's dtype; a palettized one keeps the indices of the unscaled weight
    /// and scales its LUT (in f64, rounded once), so the graph computes `scale ×` exactly the values
    /// of [`Weights::graph_values`] up to one rounding of each LUT entry (palettizing the scaled
    /// weight instead would cluster differently, and the graph-weights checkpoint would no longer be
    /// what the set computes with).
    pub fn conv_weight_scaled(
        &mut self,
        b: &mut FunctionBuilder,
        name: &str,
        key: &str,
        (o, i): (usize, usize),
        scale: f64,
    ) -> Result<Var> {
        if scale == 1.0 {
            return self.conv_weight(b, name, key, o, i);
        }
        let ckey = format!("{key}*{scale:e}");
        let prepared = match self.cache.get(&ckey) {
            Some(p) => p.clone(),
            None => {
                let base = match self.cache.get(key) {
                    Some(p) => p.clone(),
                    None => {
                        let p = self.prepare_conv(key, o, i)?;
                        self.cache.insert(key.to_string(), p.clone());
                        p
                    }
                };
                let p = match base {
                    Prepared::Lut { indices, lut } => {
                        let v: Vec<f32> = lut
                            .to_f32_vec()
                            .map_err(|source| ExportError::Value {
                                tensor: key.to_string(),
                                source,
                            })?
                            .into_iter()
                            .map(|x| (f64::from(x) * scale) as f32)
                            .collect();
                        let lut = self.dense(key, &lut.shape(), &v)?;
                        Prepared::Lut { indices, lut }
                    }
                    Prepared::Dense(_) => {
                        let v: Vec<f32> = self
                            .load_checked(key, &[o, i])?
                            .into_iter()
                            .map(|x| (f64::from(x) * scale) as f32)
                            .collect();
                        Prepared::Dense(self.dense(key, &[o, i, 1, 1], &v)?)
                    }
                };
                self.cache.insert(ckey, p.clone());
                p
            }
        };
        let r = match prepared {
            Prepared::Dense(t) => b.constant(name, t),
            Prepared::Lut { indices, lut } => b.lut_to_dense(name, indices, lut),
        };
        Ok(r?)
    }

    /// A scalar weight (`layer_scalar`, shape `[1]`) as f64.
    pub fn scalar(&mut self, key: &str) -> Result<f64> {
        let v = self.load_checked(key, &[1])?;
        self.record_kept(key, &[1]);
        Ok(f64::from(v[0]))
    }

    /// What happened to every weight (only when palettizing), sorted by key.
    pub fn records(&self) -> Vec<TensorRecord> {
        self.records.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// `n` values with a spread of magnitudes and signs (some exactly representable, most not).
    fn values(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32) * 0.7311).sin() * 10f32.powi((i % 7) as i32 - 4))
            .collect()
    }

    fn encode(dtype: StDtype, v: &[f32]) -> Vec<u8> {
        match dtype {
            StDtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            StDtype::F16 => v
                .iter()
                .flat_map(|x| f16::from_f32(*x).to_le_bytes())
                .collect(),
            _ => v
                .iter()
                .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                .collect(),
        }
    }

    fn raw<'a>(dtype: StDtype, shape: &[usize], bytes: &'a [u8]) -> RawTensor<'a> {
        RawTensor {
            dtype,
            shape: shape.to_vec(),
            bytes,
            file: Path::new("test.safetensors"),
            name: "w".into(),
        }
    }

    /// The exact f32 value of each stored element (what `load_f32` returns).
    fn exact(dtype: StDtype, v: &[f32]) -> Vec<f32> {
        match dtype {
            StDtype::F32 => v.to_vec(),
            StDtype::F16 => v.iter().map(|x| f16::from_f32(*x).to_f32()).collect(),
            _ => v
                .iter()
                .map(|x| half::bf16::from_f32(*x).to_f32())
                .collect(),
        }
    }

    #[test]
    fn parallel_decoding_equals_the_scalar_conversion_for_every_float_dtype() {
        // more than two decode blocks, not a multiple of the block, from an odd (unaligned) offset
        let n = 2 * DECODE_BLOCK + 1234;
        let v = values(n);
        for dtype in [StDtype::F32, StDtype::F16, StDtype::BF16] {
            let mut buf = vec![0u8];
            buf.extend(encode(dtype, &v));
            let r = raw(dtype, &[n / 2, 2], &buf[1..]);
            let want: Vec<f16> = exact(dtype, &v).into_iter().map(f16::from_f32).collect();
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let got = pool.install(|| decode_f16(&r)).unwrap();
                assert!(
                    got.iter()
                        .map(|x| x.to_bits())
                        .eq(want.iter().map(|x| x.to_bits())),
                    "{dtype:?}, {threads} threads"
                );
            }
            let mut rows = vec![0f32; 3 * 2];
            decode_rows_f32(&r, 2, 1000, &mut rows).unwrap();
            assert_eq!(rows, exact(dtype, &v[2000..2006]), "{dtype:?}");
        }
    }

    #[test]
    fn decoding_names_the_first_non_finite_value_and_refuses_other_dtypes() {
        let n = 3 * DECODE_BLOCK;
        let mut v = values(n);
        // one bad value in the last block and an earlier one in the second block
        v[2 * DECODE_BLOCK + 5] = f32::NAN;
        v[DECODE_BLOCK + 17] = f32::INFINITY;
        let bytes = encode(StDtype::BF16, &v);
        let r = raw(StDtype::BF16, &[n], &bytes);
        match decode_f16(&r) {
            Err(ExportError::Checkpoint(gemma4::Error::NonFinite { index, .. })) => {
                assert_eq!(index, DECODE_BLOCK + 17)
            }
            other => panic!("expected a non-finite error, got {other:?}"),
        }
        let mut rows = vec![0f32; 64];
        match decode_rows_f32(&r, 64, (2 * DECODE_BLOCK) / 64, &mut rows) {
            Err(ExportError::Checkpoint(gemma4::Error::NonFinite { index, .. })) => {
                assert_eq!(index, 2 * DECODE_BLOCK + 5)
            }
            other => panic!("expected a non-finite error, got {other:?}"),
        }
        let ints = [0u8; 16];
        assert!(matches!(
            decode_f16(&raw(StDtype::I64, &[2], &ints)),
            Err(ExportError::Checkpoint(
                gemma4::Error::UnsupportedDtype { .. }
            ))
        ));
    }
}
