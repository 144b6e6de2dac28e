//! Whole builds: reproducibility, `--only` parts, the INT4 policy on the palettization fixture, and
//! bad input leaving nothing behind.

mod common;

use chunkset::{ChunkSetManifest, compare_sets};
use common::opts;
use gemma4_export::build::{HASH_PHASE, NoProgress, SIDE_PART, SIDE_PHASE, assemble, build};
use gemma4_export::{Compression, NBits, Precision, Variant};

#[test]
fn int4_build_is_reproducible_and_palettizes_every_projection() {
    let (ta, tb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = ta.path().join("set");
    let b = tb.path().join("set");
    let report = build(&opts("tiny-pal", &a).threads(1).zip(true), &NoProgress).unwrap();
    assert_eq!(report.packages.len(), 4);
    // the side files and the checkpoint hashing ran beside the chunk phases: reported as such,
    // once each
    let names: Vec<&str> = report.phases.iter().map(|(n, _)| n.as_str()).collect();
    for p in [SIDE_PHASE, HASH_PHASE] {
        assert_eq!(names.iter().filter(|n| **n == p).count(), 1, "{names:?}");
    }
    assert!(!names.contains(&"side files"), "{names:?}");
    build(&opts("tiny-pal", &b).threads(2).zip(true), &NoProgress).unwrap();
    let diff = compare_sets(&a, &b).unwrap();
    assert!(diff.is_identical(), "1 vs 2 threads differ: {diff:?}");
    let (za, zb) = (
        std::fs::read(ta.path().join("set.zip")).unwrap(),
        std::fs::read(tb.path().join("set.zip")).unwrap(),
    );
    assert!(za == zb, "zips differ ({} vs {} bytes)", za.len(), zb.len());

    let m = ChunkSetManifest::read(&a).unwrap();
    for r in &m.uncompressed_weights {
        let name = r.name.as_str();
        assert!(
            name.ends_with("norm.weight")
                || name.ends_with("layer_scalar")
                || name.ends_with("layernorm.weight"),
            "only norms and scalars may stay uncompressed, found {r:?}"
        );
    }
    assert!(m.build.palettized_weights.unwrap() > 0);
    assert_eq!(
        m.build.spec,
        opts("tiny-pal", &a).spec,
        "the options are recorded"
    );
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
        let (size, sha) = chunkset::sha256_file(&a.join(&e.path)).unwrap();
        assert_eq!((size, sha), (e.size, e.sha256.clone()), "{}", e.path);
    }
}

#[test]
fn only_parts_assemble_into_the_full_build() {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    build(&opts("tiny-e2b", &full), &NoProgress).unwrap();
    let mut parts = Vec::new();
    for part in ["chunk1", "chunk2", "chunk3", "chunk4", SIDE_PART] {
        let dir = tmp.path().join(format!("part-{part}"));
        build(&opts("tiny-e2b", &dir).only(part), &NoProgress).unwrap();
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
    let dense = |out: &std::path::Path| opts("tiny-e2b", out).compression(Compression::Dense);
    let err = build(&dense(&out), &NoProgress).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    assert!(err.is_bad_input(), "{err}");
    assert_eq!(std::fs::read(out.join("keep.txt")).unwrap(), b"x");

    let fresh = tmp.path().join("fresh");
    let err = build(&dense(&fresh).only("chunk9"), &NoProgress).unwrap_err();
    assert!(err.to_string().contains("chunk9"), "{err}");
    assert!(err.is_bad_input(), "{err}");
    let err = build(&dense(&fresh).variant(Variant::Wfa { fw: 65 }), &NoProgress).unwrap_err();
    assert!(err.to_string().contains("--fw 65"), "{err}");
    assert!(err.is_bad_input(), "{err}");
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
    let int4 = Compression::int(NBits::B4);
    let configs: &[(&str, Precision, Compression)] = &[
        ("tiny-e2b", Precision::Fp32, Compression::Dense),
        ("tiny-e2b", Precision::Fp16, Compression::Dense),
        ("tiny-e2b", Precision::Fp16, int4),
        ("tiny-e2b-release", Precision::Fp16, int4),
        ("tiny-gqa", Precision::Fp16, int4),
        ("tiny-pal", Precision::Fp16, int4),
    ];
    for &(model, precision, compression) in configs {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("set");
        let o = opts(model, &out)
            .precision(precision)
            .compression(compression);
        let report = build(&o, &NoProgress).unwrap();
        for p in &report.packages {
            let pkg = out.join(format!("{}.mlpackage", p.name));
            mlpackage::coremltools_check::check_package(
                &pkg,
                &mlpackage::coremltools_check::CheckOptions {
                    materialize: compression != Compression::Dense,
                    ..Default::default()
                },
            )
            .unwrap_or_else(|e| panic!("{model} {precision:?} {compression:?} {}: {e}", p.name));
        }
    }
}
