//! Export → package on disk → read back → CPU interpreter decode loop → compare with the HF golden at
//! every prompt and decode position (the fp32 build must match like the reference forward does).
//! fp16 accuracy is not judged on one prompt: see the fidelity gate (crates/gemma-convert/tests/
//! fidelity_gate.rs) and `parity --tolerance fp16` (crates/gemma-convert/tests/parity_fp16.rs).

mod common;

use common::{Exact, Model, argmax, root};
use gemma4_export::build::{NoProgress, build};
use gemma4_export::{Compression, Precision, Variant};
use mil_runtime::BackendKind;
use mil_runtime::chunkset::ChunkSet;

fn run(
    model: &str,
    variant: Variant,
    fp32: bool,
    compression: Compression,
) -> (f32, f32, usize, usize) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("set");
    let opts = common::opts(model, &out)
        .variant(variant)
        .precision(Precision::from_fp32(fp32))
        .compression(compression);
    build(&opts, &NoProgress).unwrap();
    let golden = gemma4::golden::Golden::load(
        root()
            .join("fixtures/goldens")
            .join(format!("{model}.safetensors")),
    )
    .unwrap();
    let m = Model::open(model);
    let emb = Exact(&m);
    let mut set = ChunkSet::open(&out, BackendKind::Cpu).unwrap();
    let mut s = set.session();
    let v = golden.vocab;
    let ids: Vec<u32> = golden
        .input_ids
        .iter()
        .chain(golden.decode_input_ids.iter())
        .copied()
        .collect();
    let mut want: Vec<&[f32]> = golden.logits.chunks(v).collect();
    want.extend(golden.decode_logits.chunks(v));
    let (mut max_abs, mut sum_abs, mut agree) = (0f32, 0f32, 0usize);
    for (p, &t) in ids.iter().enumerate() {
        let o = s.step(t, &emb, true).unwrap();
        let got = o.logits.unwrap();
        assert_eq!(
            o.token_id as usize,
            argmax(&got),
            "token_id is not the argmax of the logits at {p}"
        );
        for (a, b) in got.iter().zip(want[p]) {
            max_abs = max_abs.max((a - b).abs());
            sum_abs += (a - b).abs();
        }
        agree += usize::from(argmax(&got) == argmax(want[p]));
        if std::env::var("PARITY_DEBUG").is_ok() {
            let m = got
                .iter()
                .zip(want[p])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            eprintln!("  pos {p}: max {m:.3e}");
        }
    }
    (max_abs, sum_abs / (ids.len() * v) as f32, agree, ids.len())
}

#[test]
fn fp32_swa4_matches_golden_on_every_fixture() {
    for model in ["tiny-e2b", "tiny-e2b-release", "tiny-gqa", "tiny-pal"] {
        let (max_abs, mean_abs, agree, n) = run(model, Variant::Swa4, true, Compression::Dense);
        eprintln!("{model} swa4 fp32: max {max_abs:.2e} mean {mean_abs:.2e} top1 {agree}/{n}");
        assert!(max_abs <= 2e-3, "{model}: max abs logit diff {max_abs}");
        assert_eq!(agree, n, "{model}: top-1");
    }
}

#[test]
fn fp32_other_variants_match_golden() {
    for variant in [
        Variant::Merged,
        Variant::Merged2,
        Variant::Merged1,
        Variant::Lite,
        Variant::Wfa { fw: 64 },
        Variant::Flash { block: 16 },
    ] {
        let (max_abs, _, agree, n) = run("tiny-e2b", variant.clone(), true, Compression::Dense);
        eprintln!("tiny-e2b {variant:?} fp32: max {max_abs:.2e} top1 {agree}/{n}");
        assert!(max_abs <= 2e-3, "{variant:?}: max abs logit diff {max_abs}");
        assert_eq!(agree, n, "{variant:?}: top-1");
    }
}
