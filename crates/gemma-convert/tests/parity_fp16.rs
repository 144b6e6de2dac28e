//! `parity --tolerance fp16` (mean KL ≤ 0.05 nats and top-1 ≥ 85 % against an HF golden, see
//! `mil_runtime::parity`): a single-prompt sanity bound for fp16 sets, not their accuracy measure
//! (that is the many-sequence fidelity benchmark and its CI gate, `fidelity_gate.rs`). The fp16 set
//! of every fixture passes it with a wide margin; a set built from a checkpoint with one perturbed
//! weight fails it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gemma-convert"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn build_fp16(model: &Path, out: &Path) {
    let o = run(&[
        "--model".as_ref(),
        model.as_os_str(),
        "--variant".as_ref(),
        "swa4".as_ref(),
        "--nbits".as_ref(),
        "0".as_ref(),
        "--ctx".as_ref(),
        "64".as_ref(),
        "--quiet".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert!(o.status.success(), "build: {}", text(&o));
}

fn parity_fp16(model: &Path, set: &Path, golden: &Path) -> Output {
    run(&[
        "parity".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--chunks".as_ref(),
        set.as_os_str(),
        "--golden".as_ref(),
        golden.as_os_str(),
        "--tolerance".as_ref(),
        "fp16".as_ref(),
        "--json".as_ref(),
    ])
}

#[test]
fn fp16_sets_of_every_fixture_pass_the_fp16_tolerance_with_margin() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["tiny-e2b", "tiny-e2b-release", "tiny-gqa", "tiny-pal"] {
        let model = root().join("fixtures/models").join(name);
        let set = tmp.path().join(name);
        build_fp16(&model, &set);
        let golden = root().join(format!("fixtures/goldens/{name}.safetensors"));
        let o = parity_fp16(&model, &set, &golden);
        assert!(o.status.success(), "{name}: {}", text(&o));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let (kl, top1) = (
            j["mean_kl"].as_f64().unwrap(),
            j["top1_agreement"].as_f64().unwrap(),
        );
        eprintln!("{name} fp16: mean KL {kl:.4}, top-1 {top1:.3}");
        // margin: a quarter of the KL bound, and at most one flip in ten positions
        assert!(kl <= 0.05 / 4.0, "{name}: mean KL {kl}");
        assert!(top1 >= 0.9, "{name}: top-1 {top1}");
        assert_eq!(j["tolerance"], "fp16");
    }
}

/// A copy of the f32 checkpoint `src` (single `model.safetensors`) with `tensor` scaled by `factor`.
fn perturbed_copy(src: &Path, dst: &Path, tensor: &str, factor: f32) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
    let st = dst.join("model.safetensors");
    let mut b = std::fs::read(&st).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    let e = &header[tensor];
    assert_eq!(e["dtype"], "F32", "{tensor}");
    let off = e["data_offsets"].as_array().unwrap();
    let (a, z) = (
        8 + n + off[0].as_u64().unwrap() as usize,
        8 + n + off[1].as_u64().unwrap() as usize,
    );
    for c in b[a..z].chunks_exact_mut(4) {
        let v = f32::from_le_bytes(c.try_into().unwrap()) * factor;
        c.copy_from_slice(&v.to_le_bytes());
    }
    std::fs::write(&st, b).unwrap();
}

#[test]
fn a_perturbed_weight_fails_the_fp16_tolerance() {
    // Every branch of a Gemma 4 layer ends in an RMSNorm, so a projection scaled as a whole is mostly
    // normalised away (q/k/v/o, up, down); a scale inside a nonlinearity is not: one MLP gate
    // projection (before GELU) off by ×1.5. In layer 1 it costs 0.48 nats and a third of the top-1
    // (in layers 0–3: 0.45–2.8 nats); in layer 7 of 10 it is 0.045 nats and passes — the bound
    // catches gross conversion errors, the fidelity benchmark measures accuracy.
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny-e2b-perturbed");
    perturbed_copy(
        &root().join("fixtures/models/tiny-e2b"),
        &model,
        "model.layers.1.mlp.gate_proj.weight",
        1.5,
    );
    let set = tmp.path().join("set");
    build_fp16(&model, &set);
    let o = parity_fp16(
        &model,
        &set,
        &root().join("fixtures/goldens/tiny-e2b.safetensors"),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["pass"], false);
    eprintln!("perturbed gate_proj: {}", j["failure"]);
    let why = j["failure"].as_str().unwrap();
    assert!(why.contains("mean KL") && why.contains("top-1"), "{why}");
}
