//! `parity`: the side files a run reads, against the checkpoint it compares with.
//!
//! What the Swift runtime reads (CoreML-LLM `ChunkedEngine.swift` / `EmbeddingLookup.swift`, and
//! `Gemma4StatefulEngine.swift` the same way): `hidden_states` = the int8 row of
//! `embed_tokens_q8.bin` times its fp16 scale / 127 times `embed_scale`, rounded to fp16;
//! `per_layer_raw` = the same from `embed_tokens_per_layer_q8.bin` times `per_layer_embed_scale`
//! (`lookupRaw`); chunk 1 computes `per_layer_combined` in its graph. On that path
//! `per_layer_projection.bin` must exist (the engine loads it, fp16 `[L·P, H]`) but is only used by
//! the monolithic-model path (`computePerLayerCombined`, which also reads the optional
//! `per_layer_norm_weight.bin` — as fp32, although the reference pipeline's own writer stores it in
//! fp16 as we do). So a broken projection or norm changes nothing a chunk computes: they are
//! compared with the checkpoint here, exactly, like the int8 rows the run reads.
//!
//! * int8 rows: every row of the token ids the run feeds, in both tables: the scale is `max|w|` of
//!   the checkpoint row to fp16 rounding, and every element dequantises to within the recipe's
//!   bound, `|q·s/127 − w| ≤ max|w|·(1/254 + 2⁻¹⁰)` (half a quantisation step, plus the fp16
//!   rounding of the scale) — independent of how a writer rounds ties;
//! * `per_layer_projection.bin`, `per_layer_norm_weight.bin`: bit for bit the checkpoint's tensors
//!   rounded to fp16 (round to nearest even, as torch and the `half` crate round);
//! * `hf_model/`: byte for byte the checkpoint directory's files of the same name, where both have
//!   one.

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, Result};
use chunkset::ModelConfig;
use chunkset::names::{
    self, EMBED_TOKENS, EMBED_TOKENS_PER_LAYER, HF_MODEL_DIR, PER_LAYER_NORM_FILE,
    PER_LAYER_PROJECTION_FILE,
};
use gemma4::Checkpoint;
use half::f16;
use serde_json::json;

/// What the side-file check covered and found.
#[derive(Debug, Default)]
pub struct SideReport {
    /// `(file, what was compared)`.
    pub checked: Vec<(String, String)>,
    /// The largest int8 error seen, as a fraction of its bound.
    pub worst_int8: f64,
    /// One line per problem, naming the file and the row or element.
    pub failures: Vec<String>,
}

impl SideReport {
    pub fn pass(&self) -> bool {
        self.failures.is_empty()
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "pass": self.pass(),
            "checked": self.checked.iter().map(|(f, w)| json!({"file": f, "what": w})).collect::<Vec<_>>(),
            "worst_int8_error_of_bound": self.worst_int8,
            "failures": self.failures,
        })
    }

    /// One line for the text report.
    pub fn line(&self) -> String {
        let what: Vec<String> = self
            .checked
            .iter()
            .map(|(f, w)| format!("{f} ({w})"))
            .collect();
        format!(
            "side files vs the checkpoint: {}; int8 rows at most {:.2} of their bound → {}",
            what.join(", "),
            self.worst_int8,
            if self.pass() { "PASS" } else { "FAIL" }
        )
    }
}

/// Bytes `[offset, offset + len)` of `path`.
fn read_at(path: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut f = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    f.seek(SeekFrom::Start(offset))
        .with_context(|| path.display().to_string())?;
    let mut b = vec![0u8; len];
    f.read_exact(&mut b)
        .with_context(|| format!("{}: row at byte {offset}", path.display()))?;
    Ok(b)
}

/// Check the rows `ids` of the int8 table `stem` (`cols` wide) against checkpoint tensor `key`.
fn int8_rows(
    set: &Path,
    ckpt: &Checkpoint,
    stem: &str,
    key: &str,
    cols: usize,
    ids: &BTreeSet<u32>,
    r: &mut SideReport,
) -> Result<()> {
    let (q8, scales) = names::int8_files(stem);
    let (qp, sp) = (set.join(&q8), set.join(&scales));
    let mut bad_rows = 0;
    for &t in ids {
        let row = t as usize;
        let w = ckpt
            .load_rows_f32(key, row, 1)
            .with_context(|| format!("checkpoint tensor {key}, row {row}"))?;
        let q = read_at(&qp, (row * cols) as u64, cols)?;
        let sb = read_at(&sp, 2 * row as u64, 2)?;
        let s = f16::from_le_bytes([sb[0], sb[1]]).to_f32();
        let m = w.iter().fold(0f32, |a, x| a.max(x.abs()));
        // fp16 rounding of max|w| (relative 2^-11; 2^-24 absolute in the subnormal range)
        let scale_ok = (s - m).abs() <= m * 2f32.powi(-10) + 1e-7;
        let bound = m * (1.0 / 254.0 + 2f32.powi(-10)) + 1e-7;
        let (worst_i, worst) = q
            .iter()
            .zip(&w)
            .map(|(&qi, &wi)| (f32::from(qi as i8) * s / 127.0 - wi).abs())
            .enumerate()
            .fold((0, 0f32), |a, (i, e)| if e > a.1 { (i, e) } else { a });
        r.worst_int8 = r.worst_int8.max(f64::from(worst / bound));
        if !scale_ok {
            bad_rows += 1;
            r.failures.push(format!(
                "{scales}: row {row}: scale {s}, the checkpoint row's max |w| is {m} (the recipe \
                 stores it in fp16)"
            ));
        } else if worst > bound {
            bad_rows += 1;
            r.failures.push(format!(
                "{q8}: row {row}, column {worst_i}: dequantises to {} but the checkpoint has {} \
                 (int8 bound {bound:.3e})",
                f32::from(q[worst_i] as i8) * s / 127.0,
                w[worst_i]
            ));
        }
    }
    r.checked.push((
        q8,
        format!(
            "{} rows{}",
            ids.len(),
            if bad_rows > 0 {
                format!(", {bad_rows} wrong")
            } else {
                String::new()
            }
        ),
    ));
    Ok(())
}

/// `file` must be the checkpoint tensor `key` rounded to fp16, bit for bit.
fn fp16_tensor(
    set: &Path,
    ckpt: &Checkpoint,
    file: &str,
    key: &str,
    r: &mut SideReport,
) -> Result<()> {
    let (_, w) = ckpt
        .load_f32(key)
        .with_context(|| format!("checkpoint tensor {key}"))?;
    let b = std::fs::read(set.join(file)).with_context(|| set.join(file).display().to_string())?;
    let got: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let wrong: Vec<usize> = (0..w.len().max(got.len()))
        .filter(|&i| match (got.get(i), w.get(i)) {
            (Some(&g), Some(&x)) => g != f16::from_f32(x).to_bits(),
            _ => true,
        })
        .collect();
    if let Some(&i) = wrong.first() {
        r.failures.push(format!(
            "{file}: {} of {} elements differ from the checkpoint's {key} in fp16 (first: element \
             {i}, {} vs {})",
            wrong.len(),
            w.len(),
            got.get(i)
                .map_or("nothing".into(), |&g| f16::from_bits(g).to_string()),
            w.get(i)
                .map_or("nothing".into(), |x| f16::from_f32(*x).to_string())
        ));
    }
    r.checked
        .push((file.to_string(), format!("{} fp16 values", w.len())));
    Ok(())
}

/// Check the side files of `set` that a run over `ids` reads, against `ckpt` (see the module doc).
pub fn check(set: &Path, cfg: &ModelConfig, ckpt: &Checkpoint, ids: &[u32]) -> Result<SideReport> {
    let mut r = SideReport::default();
    let rows: BTreeSet<u32> = ids.iter().copied().collect();
    int8_rows(
        set,
        ckpt,
        EMBED_TOKENS,
        "embed_tokens.weight",
        cfg.hidden_size,
        &rows,
        &mut r,
    )?;
    if cfg.per_layer_dim > 0 {
        int8_rows(
            set,
            ckpt,
            EMBED_TOKENS_PER_LAYER,
            "embed_tokens_per_layer.weight",
            cfg.per_layer_dim * cfg.num_layers,
            &rows,
            &mut r,
        )?;
        fp16_tensor(
            set,
            ckpt,
            PER_LAYER_PROJECTION_FILE,
            "per_layer_model_projection.weight",
            &mut r,
        )?;
        fp16_tensor(
            set,
            ckpt,
            PER_LAYER_NORM_FILE,
            "per_layer_projection_norm.weight",
            &mut r,
        )?;
    }
    let hf = set.join(HF_MODEL_DIR);
    let mut same = 0;
    if let Ok(entries) = std::fs::read_dir(&hf) {
        let mut files: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        for name in files {
            let theirs = ckpt.dir().join(&name);
            if !theirs.is_file() {
                continue;
            }
            let ours = std::fs::read(hf.join(&name))
                .with_context(|| hf.join(&name).display().to_string())?;
            let want = std::fs::read(&theirs).with_context(|| theirs.display().to_string())?;
            if ours == want {
                same += 1;
            } else {
                r.failures.push(format!(
                    "{HF_MODEL_DIR}/{name}: differs from {} (the set's copy of the checkpoint's \
                     file)",
                    theirs.display()
                ));
            }
        }
    }
    r.checked
        .push((format!("{HF_MODEL_DIR}/"), format!("{same} files")));
    Ok(r)
}
