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
use half::f16;
use mil::builder::FunctionBuilder;
use mil::{DType, TensorType, TensorValue, Var};
use palettize::{Decision, Policy, TensorRecord};
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
}

impl WeightSource for gemma4::Checkpoint {
    fn load(&self, key: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        Ok(self.load_f32(key)?)
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
        let v = self.load_checked(key, &[o, i])?;
        self.prepare_conv_values(key, o, i, v)
    }

    fn prepare_conv_values(
        &mut self,
        key: &str,
        o: usize,
        i: usize,
        v: Vec<f32>,
    ) -> Result<Prepared> {
        let shape4 = [o, i, 1, 1];
        let Some(lut) = self.compression.lut().copied() else {
            return Ok(Prepared::Dense(self.dense(key, &shape4, &v)?));
        };
        let cfg = palettize_config(&lut);
        let decision = palettize::decide(&shape4, &cfg, &self.policy);
        if !matches!(decision, Decision::Palettize) {
            self.record(key, &[o, i], decision);
            return Ok(Prepared::Dense(self.dense(key, &shape4, &v)?));
        }
        let p = palettize::palettize_f32(key, &v, &shape4, &cfg, self.pool).map_err(|source| {
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
