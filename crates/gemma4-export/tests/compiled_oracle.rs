//! Dense (`--nbits 0`) fp16 and fp32 builds of every tiny fixture model, with the decode, verify
//! and prefill functions, written as `--format both`: each chunk's bundle is what compiling its
//! package gives, and agrees with mlmodelc-export's compilation of the same package (the
//! differential oracle shared with `mlpackage`'s tests).

mod common;
#[path = "../../mlpackage/tests/common/oracle.rs"]
mod oracle;

use chunkset::{Compression, OutputFormat, Precision};
use common::fixture;
use gemma4_export::build::{BuildOptions, NoProgress, build};
use mlpackage::compiled::{Compiler, compile, package_source};

#[test]
fn dense_chunk_bundles_agree_with_mlmodelc_export() {
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for model in ["tiny-e2b", "tiny-e2b-release", "tiny-gqa", "tiny-pal"] {
        for fp32 in [false, true] {
            let out = tmp.path().join(format!("{model}-{fp32}"));
            let opts = BuildOptions::new(fixture(model), &out)
                .ctx(64)
                .precision(if fp32 {
                    Precision::Fp32
                } else {
                    Precision::Fp16
                })
                .compression(Compression::Dense)
                .functions("decode,verify:2,prefill:4".parse().unwrap())
                .format(OutputFormat::Both);
            let report = build(&opts, &NoProgress).unwrap();
            for p in &report.packages {
                let what = format!("{model} fp32={fp32} {}", p.name);
                let src = package_source(&out.join(format!("{}.mlpackage", p.name))).unwrap();
                let ours = compile(&src, &Compiler::gemma_convert()).unwrap();
                // the bundle the build wrote is exactly this compilation
                let bundle = out.join(format!("{}.mlmodelc", p.name));
                assert_eq!(
                    std::fs::read_to_string(bundle.join("model.mil")).unwrap(),
                    ours.model_mil,
                    "{what}"
                );
                for (f, bytes) in [
                    ("coremldata.bin", &ours.coremldata),
                    ("metadata.json", &ours.metadata),
                    ("analytics/coremldata.bin", &ours.analytics),
                ] {
                    assert!(
                        std::fs::read(bundle.join(f)).unwrap() == *bytes,
                        "{what}: {f}"
                    );
                }
                let files = src
                    .files
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
                    .collect();
                oracle::agrees_with_mlmodelc_export(&what, src.model.as_bytes(), &files, &ours);
                checked += 1;
            }
        }
    }
    // 4 models × 2 precisions × (4 decode + 4 prefill chunks)
    assert_eq!(checked, 64);
}
