//! Whole builds: reproducibility, `--only` parts, the INT4 policy on the palettization fixture, and
//! bad input leaving nothing behind.

mod common;

use common::fixture;
use gemma4_export::build::{BuildOptions, Functions, NoProgress, SIDE_PART, assemble, build};
use gemma4_export::bundle::manifest::{ChunkSetManifest, compare_sets};
use gemma4_export::{Quant, Variant};
use std::path::Path;

fn opts(model: &str, out: &Path, nbits: u8, threads: Option<usize>) -> BuildOptions {
    BuildOptions {
        model_dir: fixture(model),
        model_source: format!("fixtures/models/{model}"),
        variant: Variant::Swa4,
        ctx: 64,
        fp32: false,
        quant: Quant {
            nbits,
            group_size: 32,
        },
        functions: Functions::parse("decode").unwrap(),
        only: None,
        threads,
        zip: false,
        force: false,
        out: out.to_path_buf(),
        model_name: None,
        dump_after: None,
    }
}

#[test]
fn int4_build_is_reproducible_and_palettizes_every_projection() {
    let (ta, tb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = ta.path().join("set");
    let b = tb.path().join("set");
    let mut oa = opts("tiny-pal", &a, 4, Some(1));
    oa.zip = true;
    let report = build(&oa, &NoProgress).unwrap();
    assert_eq!(report.packages.len(), 4);
    let mut ob = opts("tiny-pal", &b, 4, Some(2));
    ob.zip = true;
    build(&ob, &NoProgress).unwrap();
    let diff = compare_sets(&a, &b).unwrap();
    assert!(diff.is_identical(), "1 vs 2 threads differ: {diff:?}");
    let (za, zb) = (
        std::fs::read(ta.path().join("set.zip")).unwrap(),
        std::fs::read(tb.path().join("set.zip")).unwrap(),
    );
    assert!(za == zb, "zips differ ({} vs {} bytes)", za.len(), zb.len());

    let m = ChunkSetManifest::read(&a).unwrap();
    for r in &m.uncompressed_weights {
        let name = r["name"].as_str().unwrap();
        assert!(
            name.ends_with("norm.weight")
                || name.ends_with("layer_scalar")
                || name.ends_with("layernorm.weight"),
            "only norms and scalars may stay uncompressed, found {r}"
        );
    }
    assert!(m.build["palettized_weights"].as_u64().unwrap() > 0);
    for f in [
        "chunk1.mlpackage/Data/com.apple.CoreML/weights/weight.bin",
        "model_config.json",
        "cos_full.npy",
        "embed_tokens_q8.bin",
        "hf_model/tokenizer.json",
    ] {
        assert!(m.files.iter().any(|e| e.path == f), "manifest lacks {f}");
    }
    for e in &m.files {
        let (size, sha) = gemma4_export::bundle::manifest::sha256_file(&a.join(&e.path)).unwrap();
        assert_eq!((size, sha), (e.size, e.sha256.clone()), "{}", e.path);
    }
}

#[test]
fn only_parts_assemble_into_the_full_build() {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    build(&opts("tiny-e2b", &full, 4, None), &NoProgress).unwrap();
    let mut parts = Vec::new();
    for part in ["chunk1", "chunk2", "chunk3", "chunk4", SIDE_PART] {
        let dir = tmp.path().join(format!("part-{part}"));
        let mut o = opts("tiny-e2b", &dir, 4, None);
        o.only = Some(part.into());
        build(&o, &NoProgress).unwrap();
        parts.push(dir);
    }
    let joined = tmp.path().join("joined");
    assemble(&parts, &joined, false).unwrap();
    let diff = compare_sets(&full, &joined).unwrap();
    assert!(diff.is_identical(), "assembled set differs: {diff:?}");
    // a missing part is refused
    let err = assemble(&parts[..3], &tmp.path().join("bad"), false).unwrap_err();
    assert!(err.to_string().contains("do not cover"), "{err}");
    assert!(!tmp.path().join("bad").exists());
}

#[test]
fn existing_output_and_bad_options_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), b"x").unwrap();
    let err = build(&opts("tiny-e2b", &out, 0, None), &NoProgress).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(std::fs::read(out.join("keep.txt")).unwrap(), b"x");

    let fresh = tmp.path().join("fresh");
    let mut o = opts("tiny-e2b", &fresh, 0, None);
    o.only = Some("chunk9".into());
    let err = build(&o, &NoProgress).unwrap_err();
    assert!(err.to_string().contains("chunk9"), "{err}");
    let mut o = opts("tiny-e2b", &fresh, 5, None);
    o.only = None;
    let err = build(&o, &NoProgress).unwrap_err();
    assert!(err.to_string().contains("--nbits 5"), "{err}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("out")],
        "partial output left behind: {left:?}"
    );
}

/// Every chunk of every fixture, as fp32, fp16 and INT4, passes coremltools 9.0's own checks
/// (proto parse, milproto rebuild with type inference, blob walk, constexpr materialisation).
#[test]
fn coremltools_accepts_every_chunk() {
    let configs: &[(&str, bool, u8)] = &[
        ("tiny-e2b", true, 0),
        ("tiny-e2b", false, 0),
        ("tiny-e2b", false, 4),
        ("tiny-e2b-release", false, 4),
        ("tiny-gqa", false, 4),
        ("tiny-pal", false, 4),
    ];
    for &(model, fp32, nbits) in configs {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("set");
        let mut o = opts(model, &out, nbits, None);
        o.fp32 = fp32;
        let report = build(&o, &NoProgress).unwrap();
        for p in &report.packages {
            let pkg = out.join(format!("{}.mlpackage", p.name));
            mlpackage::coremltools_check::check_package(
                &pkg,
                &mlpackage::coremltools_check::CheckOptions {
                    materialize: nbits > 0,
                },
            )
            .unwrap_or_else(|e| panic!("{model} fp32={fp32} nbits={nbits} {}: {e}", p.name));
        }
    }
}
