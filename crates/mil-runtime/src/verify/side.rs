//! The side files the runtime reads besides the chunks: sizes from `model_config.json`, and the
//! contents a wrong byte would break silently (scales, norm, RoPE rows).

use super::Findings;
use chunkset::names::{
    self, EMBED_TOKENS, EMBED_TOKENS_PER_LAYER, PER_LAYER_NORM_FILE, PER_LAYER_PROJECTION_FILE,
    RopeTable,
};
use chunkset::{ChunkSetManifest, LayerKind, ModelConfig, Precision};
use half::f16;
use std::collections::BTreeSet;
use std::path::Path;

/// `a · b · …` in u128 (never overflows for the sizes a config can claim).
fn product(v: &[usize]) -> u128 {
    v.iter().map(|&x| x as u128).product()
}

/// Where the side files are and which of them the manifest lists.
struct Ctx<'a> {
    dir: &'a Path,
    present: &'a BTreeSet<String>,
    listed: BTreeSet<&'a str>,
}

impl Ctx<'_> {
    /// True if `rel` is there; a missing file the manifest does not list is reported here (a
    /// listed one is reported against the manifest).
    fn there(&self, rel: &str, f: &mut Findings) -> bool {
        if self.present.contains(rel) {
            return true;
        }
        if !self.listed.contains(rel) {
            f.unusable(
                rel,
                None,
                "missing (the runtime reads it; model_config.json says the set has it)".into(),
            );
        }
        false
    }
}

/// The file must be `want` bytes (`how`: where the number comes from).
fn size(c: &Ctx<'_>, rel: &str, want: u128, how: &str, f: &mut Findings) -> bool {
    if !c.there(rel, f) {
        return false;
    }
    match std::fs::metadata(c.dir.join(rel)) {
        Ok(m) if u128::from(m.len()) == want => true,
        Ok(m) => {
            f.mismatch(
                rel,
                Some("size"),
                format!("is {} bytes, {how} = {want} bytes", m.len()),
            );
            false
        }
        // missing files are reported against the manifest
        Err(_) => false,
    }
}

/// fp16 values of a small file, each finite (and non-negative for scales).
fn fp16_values(dir: &Path, rel: &str, what: &str, non_negative: bool, f: &mut Findings) {
    let Ok(b) = std::fs::read(dir.join(rel)) else {
        return;
    };
    for (r, c) in b.chunks_exact(2).enumerate() {
        let x = f16::from_le_bytes([c[0], c[1]]).to_f32();
        if !x.is_finite() || (non_negative && x < 0.0) {
            f.mismatch(
                rel,
                None,
                format!(
                    "{what} {r}: {x} is not a finite{} number",
                    if non_negative { " non-negative" } else { "" }
                ),
            );
            return;
        }
    }
}

/// The files must not be there (the config has nothing for them).
fn absent(present: &BTreeSet<String>, rel: &str, why: &str, f: &mut Findings) {
    if present.contains(rel) {
        f.mismatch(rel, None, format!("present, but {why}"));
    }
}

/// Check every side file of the set described by `cfg`.
pub(super) fn check(
    dir: &Path,
    cfg: &ModelConfig,
    manifest: &ChunkSetManifest,
    present: &BTreeSet<String>,
    f: &mut Findings,
) {
    let c = Ctx {
        dir,
        present,
        listed: manifest.files.iter().map(|e| e.path.as_str()).collect(),
    };
    let (h, v, vp) = (
        cfg.hidden_size,
        cfg.vocab_size,
        cfg.vocab_size_per_layer_input,
    );
    let (l, p) = (cfg.num_layers, cfg.per_layer_dim);
    let (q8, scales) = names::int8_files(EMBED_TOKENS);
    size(
        &c,
        &q8,
        product(&[v, h]),
        "model_config.json's vocab_size × hidden_size",
        f,
    );
    if size(&c, &scales, product(&[2, v]), "2 × vocab_size", f) {
        fp16_values(dir, &scales, "row", true, f);
    }
    let (pq8, pscales) = names::int8_files(EMBED_TOKENS_PER_LAYER);
    if p > 0 {
        size(
            &c,
            &pq8,
            product(&[vp, l, p]),
            "model_config.json's vocab_size_per_layer_input × num_layers × per_layer_dim",
            f,
        );
        if size(
            &c,
            &pscales,
            product(&[2, vp]),
            "2 × vocab_size_per_layer_input",
            f,
        ) {
            fp16_values(dir, &pscales, "row", true, f);
        }
        size(
            &c,
            PER_LAYER_PROJECTION_FILE,
            product(&[2, l, p, h]),
            "fp16 [num_layers × per_layer_dim, hidden_size]",
            f,
        );
        if size(
            &c,
            PER_LAYER_NORM_FILE,
            product(&[2, p]),
            "fp16 [per_layer_dim]",
            f,
        ) {
            fp16_values(dir, PER_LAYER_NORM_FILE, "element", false, f);
        }
    } else {
        let why = "per_layer_dim is 0 (no PLE)";
        for rel in [&pq8, &pscales] {
            absent(present, rel, why, f);
        }
        absent(present, PER_LAYER_PROJECTION_FILE, why, f);
        absent(present, PER_LAYER_NORM_FILE, why, f);
    }
    for kind in LayerKind::ALL {
        let dim = match kind {
            LayerKind::Sliding => cfg.head_dim,
            LayerKind::Full => cfg.global_head_dim,
        };
        let files = RopeTable::BOTH.map(|t| kind.rope_file(t));
        match dim.filter(|_| cfg.layer_types.contains(&kind)) {
            Some(d) => rope_pair(&c, cfg, &files, d, f),
            None => {
                for rel in &files {
                    absent(
                        present,
                        rel,
                        &format!("the model has no {} layers", kind.label()),
                        f,
                    );
                }
            }
        }
    }
}

/// The cos and sin tables of one kind: dtype of the set's precision, `rope_rows` rows of the
/// kind's head dim, values in [−1, 1] with cos² + sin² = 1 (to the dtype's rounding).
fn rope_pair(c: &Ctx<'_>, cfg: &ModelConfig, files: &[String; 2], dim: usize, f: &mut Findings) {
    let mut tables = Vec::new();
    let (width, dtype, tol) = match cfg.precision {
        Precision::Fp16 => (2, "fp16 ('<f2')", 4e-3),
        Precision::Fp32 => (4, "fp32 ('<f4')", 1e-5),
    };
    for rel in files {
        if !c.there(rel, f) {
            return;
        }
        let Ok(b) = std::fs::read(c.dir.join(rel)) else {
            return;
        };
        let t = match crate::npy::parse(&b) {
            Ok(t) => t,
            Err(e) => {
                f.unusable(rel, None, e);
                return;
            }
        };
        let mut ok = true;
        if t.width != width {
            f.mismatch(
                rel,
                Some("dtype"),
                format!(
                    "is {}-byte floats, a {} set's tables are {dtype}",
                    t.width,
                    cfg.precision.name()
                ),
            );
            ok = false;
        }
        if t.rows != cfg.rope_rows {
            f.mismatch(
                rel,
                Some("rows"),
                format!(
                    "has {} rows, model_config.json's rope_rows is {}",
                    t.rows, cfg.rope_rows
                ),
            );
            ok = false;
        }
        if t.cols != dim {
            f.mismatch(
                rel,
                Some("width"),
                format!("rows of {}, the layer kind's head dim is {dim}", t.cols),
            );
            ok = false;
        }
        if let Some(i) = t
            .data
            .iter()
            .position(|x| !x.is_finite() || x.abs() > 1.0 + tol)
        {
            f.mismatch(
                rel,
                None,
                format!(
                    "row {}: {} is not a cosine or sine",
                    i / t.cols.max(1),
                    t.data[i]
                ),
            );
            ok = false;
        }
        if !ok {
            return;
        }
        tables.push(t);
    }
    let [cos, sin] = &tables[..] else {
        return;
    };
    if let Some(i) = cos
        .data
        .iter()
        .zip(&sin.data)
        .position(|(c, s)| (c * c + s * s - 1.0).abs() > tol)
    {
        f.mismatch(
            &files[0],
            None,
            format!(
                "row {}, column {}: cos² + sin² = {} (with {}), not 1",
                i / dim,
                i % dim,
                cos.data[i] * cos.data[i] + sin.data[i] * sin.data[i],
                files[1]
            ),
        );
    }
}
