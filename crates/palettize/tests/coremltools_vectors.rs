//! Cross-checks against coremltools 9.0 outputs committed in `fixtures/palettize/`
//! (written by `scripts/palettize_vectors.py`; see its docstring for the file layout).

use half::f16;
use palettize::{
    Assignment, LutConfig, dequantize, pack, palettize_f16, quantize_rows, thread_pool,
};
use serde_json::Value;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/palettize")
}

fn read(name: &str) -> Vec<u8> {
    let p = dir().join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

fn read_f16(name: &str) -> Vec<f16> {
    read(name)
        .chunks_exact(2)
        .map(|c| f16::from_le_bytes([c[0], c[1]]))
        .collect()
}

fn manifest() -> Value {
    serde_json::from_slice(&read("manifest.json")).expect("manifest.json is valid JSON")
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("integer") as usize)
        .collect()
}

/// One coremltools case.
struct Case {
    name: String,
    shape: Vec<usize>,
    nbits: u8,
    group_size: usize,
    kmeans1d: bool,
    lut_shape: Vec<usize>,
    padding_bits: u8,
    group_mse: Vec<f64>,
    weight: Vec<f16>,
    lut: Vec<f16>,
    idx: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let m = manifest();
    let cases = m["cases"].as_array().expect("cases");
    assert!(cases.len() >= 8, "expected at least 8 cases");
    cases
        .iter()
        .map(|c| {
            let name = c["name"].as_str().expect("name").to_owned();
            Case {
                shape: usizes(&c["shape"]),
                nbits: c["nbits"].as_u64().expect("nbits") as u8,
                group_size: c["group_size"].as_u64().expect("group_size") as usize,
                kmeans1d: c["coremltools_path"] == "kmeans1d",
                lut_shape: usizes(&c["lut_shape"]),
                padding_bits: c["index_blob"]["padding_bits"].as_u64().expect("padding") as u8,
                group_mse: c["group_mse"]
                    .as_array()
                    .expect("group_mse")
                    .iter()
                    .map(|x| x.as_f64().expect("f64"))
                    .collect(),
                weight: read_f16(&format!("{name}.weight.f16")),
                lut: read_f16(&format!("{name}.lut.f16")),
                idx: read(&format!("{name}.idx.bin")),
                name,
            }
        })
        .collect()
}

/// Per-group MSE of a dense reconstruction against the weight, in f64.
fn group_mse(w: &[f16], deq: &[f16], groups: usize) -> Vec<f64> {
    let per = w.len() / groups;
    (0..groups)
        .map(|g| {
            let r = g * per..(g + 1) * per;
            w[r.clone()]
                .iter()
                .zip(&deq[r])
                .map(|(a, b)| (a.to_f64() - b.to_f64()).powi(2))
                .sum::<f64>()
                / per as f64
        })
        .collect()
}

/// Relative slack for "MSE ≤ coremltools" (equality up to summation order).
const SLACK: f64 = 1e-6;

#[test]
fn packing_matches_coremltools_blob_writer() {
    for c in cases() {
        let n = c.weight.len();
        let unpacked = pack::unpack(&c.idx, c.nbits, n).expect("unpack coremltools blob");
        assert_eq!(pack::pack(&unpacked, c.nbits).unwrap(), c.idx, "{}", c.name);
        assert_eq!(pack::padding_bits(n, c.nbits), c.padding_bits, "{}", c.name);
        // Our dequantization of coremltools' own (indices, LUT) reproduces its MSE.
        let groups = c.lut_shape[0];
        let deq = dequantize(&c.name, &unpacked, &c.shape, c.nbits, &c.lut, groups).unwrap();
        let mse = group_mse(&c.weight, &deq, groups);
        for (g, (a, b)) in mse.iter().zip(&c.group_mse).enumerate() {
            assert!(
                (a - b).abs() <= 1e-12 * b.max(1e-30),
                "{} group {g}: {a} vs {b}",
                c.name
            );
        }
    }
}

#[test]
fn mse_never_worse_than_coremltools() {
    let pool = thread_pool(2).unwrap();
    for c in cases() {
        for assignment in [Assignment::Nearest, Assignment::Cluster] {
            let cfg = LutConfig {
                nbits: c.nbits,
                group_size: c.group_size,
                assignment,
            };
            let p = palettize_f16(&c.name, &c.weight, &c.shape, &cfg, Some(&pool)).unwrap();
            assert_eq!(p.lut_shape, c.lut_shape, "{}", c.name);
            assert_eq!(p.padding_bits(), c.padding_bits, "{}", c.name);
            assert_eq!(p.indices_packed.len(), c.idx.len(), "{}", c.name);
            assert_eq!(p.stats.groups.len(), c.group_mse.len());
            let deq = p.dequantize(&c.name).unwrap();
            let ours = group_mse(&c.weight, &deq, p.num_groups());
            for (g, ((o, theirs), st)) in ours
                .iter()
                .zip(&c.group_mse)
                .zip(&p.stats.groups)
                .enumerate()
            {
                assert!(
                    *o <= theirs * (1.0 + SLACK),
                    "{} {assignment:?} group {g}: ours {o:e} > coremltools {theirs:e}",
                    c.name
                );
                // Reported stats agree with an independent recomputation.
                assert!(
                    (st.mse() - o).abs() <= 1e-12 * o.max(1e-30),
                    "{} group {g}",
                    c.name
                );
            }
            if c.kmeans1d && assignment == Assignment::Cluster {
                // Same optimal k-means → same LUT bits; with coremltools' assignment the packed
                // indices are the very bytes coremltools writes into weight.bin.
                // Only exception: a centroid exactly on an fp16 rounding midpoint, which we round
                // to even and kmeans1d's float arithmetic may push either way.
                let idx = p.indices().unwrap();
                let pal = 1usize << c.nbits;
                let per = c.weight.len() / p.num_groups();
                for (e, (a, b)) in p.lut.iter().zip(&c.lut).enumerate() {
                    if a.to_bits() != b.to_bits() {
                        let (g, m) = (e / pal, e % pal);
                        let members: Vec<f16> = (g * per..(g + 1) * per)
                            .filter(|i| usize::from(idx[*i]) == m)
                            .map(|i| c.weight[i])
                            .collect();
                        assert!(
                            exact_midpoint_tie(&members, *a, *b),
                            "{} group {g} entry {m}: ours {a} vs coremltools {b} (not a tie)",
                            c.name
                        );
                    }
                }
                assert!(p.indices_packed == c.idx, "{}: index bytes differ", c.name);
            }
        }
    }
}

/// Units of 2^-24 (every fp16 value is an integer multiple of it).
fn units(v: f16) -> i128 {
    (v.to_f64() * 16_777_216.0) as i128
}

/// True if the exact mean of `members` is the midpoint of the adjacent fp16 values `ours` and
/// `theirs`, and `ours` is the one with the even mantissa (round half to even).
fn exact_midpoint_tie(members: &[f16], ours: f16, theirs: f16) -> bool {
    if members.is_empty() || ours.to_bits().abs_diff(theirs.to_bits()) != 1 {
        return false;
    }
    let sum: i128 = members.iter().map(|v| units(*v)).sum();
    let n = members.len() as i128;
    2 * sum == (units(ours) + units(theirs)) * n && ours.to_bits().is_multiple_of(2)
}

#[test]
fn nearest_assignment_strictly_helps_on_the_shared_vector() {
    // coremltools' pal4_vector: MSE 3.744334e-06; nearest-entry re-assignment may only lower it.
    let c = cases()
        .into_iter()
        .find(|c| c.name == "pal4_vector")
        .expect("pal4_vector case");
    let near = palettize_f16("pal4", &c.weight, &c.shape, &LutConfig::new(4, 32), None).unwrap();
    let clus = palettize_f16(
        "pal4",
        &c.weight,
        &c.shape,
        &LutConfig {
            assignment: Assignment::Cluster,
            ..LutConfig::new(4, 32)
        },
        None,
    )
    .unwrap();
    let want: f64 = c.group_mse.iter().sum::<f64>() / c.group_mse.len() as f64;
    assert!((clus.stats.mse() - want).abs() <= 1e-12 * want);
    assert!(near.stats.mse() <= clus.stats.mse());
    assert_eq!(near.lut, clus.lut);
}

#[test]
fn unused_lut_slots_are_zero_like_coremltools() {
    let c = cases()
        .into_iter()
        .find(|c| c.name == "few_distinct_4bit_g32")
        .expect("case");
    let p = palettize_f16("few", &c.weight, &c.shape, &LutConfig::new(4, 32), None).unwrap();
    assert_eq!(p.stats.mse(), 0.0);
    for g in 0..p.num_groups() {
        let lut = p.group_lut(g).unwrap();
        let used = p.stats.groups[g].clusters as usize;
        assert_eq!(used, 9);
        assert!(lut[..used].windows(2).all(|w| w[0] < w[1]));
        assert!(lut[used..].iter().all(|v| v.to_bits() == 0));
    }
    assert_eq!(p.lut, c.lut);
}

#[test]
fn int8_rows_match_numpy_recipe() {
    let m = manifest();
    let spec = &m["int8_rows"];
    let rows = spec["rows"].as_u64().unwrap() as usize;
    let cols = spec["cols"].as_u64().unwrap() as usize;
    let w: Vec<f32> = read("int8_rows.weight.f32")
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let q = quantize_rows("int8_rows", &w, rows, cols, None).unwrap();
    assert_eq!(q.q_bytes(), read("int8_rows.q8.bin"));
    assert_eq!(q.scale_bytes(), read("int8_rows.scales.f16"));
    assert!(q.q.contains(&127) || q.q.contains(&-127));
}
