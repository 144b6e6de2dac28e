//! Helpers shared by the CLI tests that build chunk sets and then damage them on purpose: running
//! the binary, copying sets, editing their JSON, flipping bits, and re-hashing the manifest so that
//! only a structural or numeric check (not the sha256 comparison) can catch the damage.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

pub fn model(name: &str) -> String {
    fixtures().join("models").join(name).display().to_string()
}

pub fn golden(name: &str) -> String {
    fixtures()
        .join("goldens")
        .join(format!("{name}.safetensors"))
        .display()
        .to_string()
}

pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gemma-convert"))
        .args(args)
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .expect("binary runs")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Build `m` into `out` at ctx 64 with `extra` flags; panics with the output on failure.
pub fn build(m: &str, out: &Path, extra: &[&str]) {
    let mut a = vec!["--model", m, "--ctx", "64", "--out", s(out), "--quiet"];
    a.extend_from_slice(extra);
    let o = run(&a);
    assert!(o.status.success(), "build {extra:?}: {}", text(&o));
}

pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
}

/// A copy of `set` at `dst`.
pub fn copy_set(set: &Path, dst: &Path) -> PathBuf {
    copy_dir(set, dst);
    dst.to_path_buf()
}

/// Rewrite the manifest's file list with the sizes and sha256 of the files as they are now — what a
/// build that wrote these bytes itself would have recorded.
pub fn rehash(set: &Path) {
    let mut m = chunkset::ChunkSetManifest::read(set).unwrap();
    m.files = chunkset::hash_tree(set).unwrap();
    std::fs::write(set.join("manifest.json"), m.to_json().unwrap()).unwrap();
}

/// Edit a JSON file of the set in place.
pub fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// The weight.bin of chunk `pkg`'s package.
pub fn weight_bin(set: &Path, pkg: &str) -> PathBuf {
    set.join(format!(
        "{pkg}.mlpackage/Data/com.apple.CoreML/weights/weight.bin"
    ))
}

/// Flip the lowest mantissa bit of the first element of the first blob of `pkg`'s weight.bin
/// (records: 64-byte header, then `sentinel, dtype, size, offset` records; little-endian floats
/// keep the lowest mantissa bits in their first byte).
pub fn flip_low_mantissa_bit(set: &Path, pkg: &str) {
    let wb = weight_bin(set, pkg);
    let mut b = std::fs::read(&wb).unwrap();
    let data = u64::from_le_bytes(b[64 + 16..64 + 24].try_into().unwrap()) as usize;
    b[data] ^= 1;
    std::fs::write(&wb, b).unwrap();
}

/// Keep the first half of the rows of a `.npy` table (a valid file with fewer rows).
pub fn halve_npy_rows(path: &Path) {
    let b = std::fs::read(path).unwrap();
    let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
    let header = std::str::from_utf8(&b[10..10 + hl]).unwrap().to_string();
    let shape = header.split("'shape': (").nth(1).unwrap();
    let dims: Vec<usize> = shape
        .split(')')
        .next()
        .unwrap()
        .split(',')
        .filter_map(|d| d.trim().parse().ok())
        .collect();
    let (rows, dim) = (dims[0], dims[1]);
    let new_header = header.replacen(
        &format!("({rows}, {dim})"),
        &format!("({}, {dim})", rows / 2),
        1,
    );
    let mut new_header = new_header.trim_end().to_string();
    while new_header.len() + 1 < hl {
        new_header.push(' ');
    }
    new_header.push('\n');
    assert_eq!(new_header.len(), hl);
    let width = (b.len() - 10 - hl) / (rows * dim);
    let mut out = b[..10].to_vec();
    out.extend(new_header.as_bytes());
    out.extend(&b[10 + hl..10 + hl + rows / 2 * dim * width]);
    std::fs::write(path, out).unwrap();
}

/// The prompt and decode ids of a golden.
pub fn golden_ids(name: &str) -> Vec<u32> {
    let g = gemma4::golden::Golden::load(Path::new(&golden(name))).unwrap();
    g.input_ids
        .iter()
        .chain(&g.decode_input_ids)
        .copied()
        .collect()
}
