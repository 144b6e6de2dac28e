//! The fp16 fidelity gate of CI (docs/FIDELITY.md): a small-N run of the fidelity benchmark.
//!
//! For tiny-pal (20 layers, E2B layout) and tiny-e2b, 128 seeded random sequences of 32 tokens
//! (`fixtures/fidelity/*-gate-*.safetensors`, made by `scripts/fidelity_reference.py --gate 2`: the
//! token ids, HF transformers' own fp16 figures at every position against its fp64 forward, and the
//! torch fp64 logits of the first two sequences). CI has no torch: `scripts/fidelity_fp64.py`
//! recomputes the fp64 logits of every sequence with an independent numpy forward, which checks
//! itself against the committed torch logits first. Then the fp16 swa4 set built by the binary runs
//! every sequence through the host decode loop and `gemma-convert fidelity --max-kl-ratio R` must
//! pass: our mean KL at most R × HF fp16's on the same sequences, R = 1.1 on tiny-pal and 1.25 on
//! tiny-e2b (see [`margin`]). A graph with the roundings this gate exists to keep out (RMSNorm gain
//! and `layer_scalar` as separate multiplies, the numerics before issue 14) must fail it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The stated bound: mean KL(ours) ≤ margin × mean KL(HF fp16) on the same sequences. tiny-pal's
/// 128-sequence ratio has a ±10 % interval, so 1.1 separates today's graph (×0.88–0.91) from the
/// regressions the gate exists for (×1.19–1.31). tiny-e2b's whole-graph KL is dominated by a few
/// chaotic sequences: its 128-sequence ratio has a ±20 % interval, and the same graph that measures
/// ×0.930 pooled over 800 sequences of 48 tokens measures ×1.147 [0.949, 1.345] here
/// (docs/FIDELITY.md), so its bound is 1.25: it catches gross regressions only, tiny-pal the fine ones.
fn margin(model: &str) -> &'static str {
    match model {
        "tiny-e2b" => "1.25",
        _ => "1.1",
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gemma-convert"))
}

fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: {}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The Python of the CI tests (numpy is all this test needs).
fn python() -> PathBuf {
    let p = std::env::var_os("GEMMA_CONVERT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"));
    let works = Command::new(&p)
        .args(["-c", "import numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        works,
        "{} cannot import numpy: run scripts/setup-python.sh or set GEMMA_CONVERT_PYTHON",
        p.display()
    );
    p
}

/// The committed gate reference of `model`.
fn gate_fixture(model: &str) -> PathBuf {
    let dir = root().join("fixtures/fidelity");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{model}-gate-")))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one gate fixture of {model} in {}",
        dir.display()
    );
    found.pop().unwrap()
}

/// The gate reference of `model` completed with numpy fp64 logits, in `dir`.
fn full_reference(model: &str, dir: &Path) -> PathBuf {
    let out = dir.join(format!("{model}-reference.safetensors"));
    let o = Command::new(python())
        .arg(root().join("scripts/fidelity_fp64.py"))
        .arg("--model")
        .arg(root().join("fixtures/models").join(model))
        .arg("--reference")
        .arg(gate_fixture(model))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    ok(&o, "scripts/fidelity_fp64.py");
    out
}

fn build(model: &str, out: &Path, numerics: Option<&str>) {
    let mut c = bin();
    c.arg("--model")
        .arg(root().join("fixtures/models").join(model))
        .args([
            "--variant",
            "swa4",
            "--nbits",
            "0",
            "--ctx",
            "64",
            "--quiet",
        ])
        .arg("--out")
        .arg(out);
    if let Some(n) = numerics {
        c.args(["--numerics", n]);
    }
    ok(&c.output().unwrap(), "build");
}

fn fidelity(model: &str, set: &Path, reference: &Path) -> (Output, serde_json::Value) {
    let o = bin()
        .arg("fidelity")
        .arg("--model")
        .arg(root().join("fixtures/models").join(model))
        .arg("--chunks")
        .arg(set)
        .arg("--reference")
        .arg(reference)
        .args(["--max-kl-ratio", margin(model), "--json"])
        .output()
        .unwrap();
    let j = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (o, j)
}

fn figures(j: &serde_json::Value) -> String {
    format!(
        "{} sequences × {}: mean KL ours {:.5} vs HF fp16 {:.5}, ratio ×{:.3} [{:.3}, {:.3}]",
        j["sequences"],
        j["positions_per_sequence"],
        j["ours"]["kl"]["mean"].as_f64().unwrap_or(f64::NAN),
        j["hf_fp16"]["kl"]["mean"].as_f64().unwrap_or(f64::NAN),
        j["kl_ratio"]["ratio"].as_f64().unwrap_or(f64::NAN),
        j["kl_ratio"]["lo"].as_f64().unwrap_or(f64::NAN),
        j["kl_ratio"]["hi"].as_f64().unwrap_or(f64::NAN),
    )
}

#[test]
fn fp16_sets_are_as_accurate_as_hf_fp16_and_unfolded_graphs_fail() {
    let tmp = tempfile::tempdir().unwrap();
    for model in ["tiny-pal", "tiny-e2b"] {
        let reference = full_reference(model, tmp.path());
        let set = tmp.path().join(format!("{model}-swa4-fp16"));
        build(model, &set, None);
        let (o, j) = fidelity(model, &set, &reference);
        eprintln!("{model} swa4 fp16: {}", figures(&j));
        ok(
            &o,
            &format!("{model}: the fidelity gate (×{})", margin(model)),
        );
        assert_eq!(j["pass"], true, "{model}: {j}");
        assert_eq!(j["sequences"], 128);
        assert_eq!(j["token_id_mismatches"], 0);
    }

    // the roundings issue 14 removed: the gate must catch them
    let model = "tiny-pal";
    let reference = tmp.path().join(format!("{model}-reference.safetensors"));
    let set = tmp.path().join(format!("{model}-unfolded"));
    build(
        model,
        &set,
        Some("norm-gain=multiply,layer-scalar=multiply"),
    );
    let (o, j) = fidelity(model, &set, &reference);
    eprintln!("{model} swa4 fp16, unfolded: {}", figures(&j));
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(j["pass"], false);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("above the bound ×1.1"), "{err}");
}

#[test]
fn the_numpy_fp64_forward_refuses_a_reference_of_another_checkpoint() {
    // scripts/fidelity_fp64.py checks the checkpoint key before computing anything
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.safetensors");
    let o = Command::new(python())
        .arg(root().join("scripts/fidelity_fp64.py"))
        .arg("--model")
        .arg(root().join("fixtures/models/tiny-e2b"))
        .arg("--reference")
        .arg(gate_fixture("tiny-pal"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("another checkpoint"));
    assert!(!out.exists());
}

#[test]
fn fidelity_refuses_bad_references_with_status_2() {
    let tmp = tempfile::tempdir().unwrap();
    let model = root().join("fixtures/models/tiny-e2b");
    let set = tmp.path().join("set");
    build("tiny-e2b", &set, None);
    let run = |reference: &Path, extra: &[&str]| {
        bin()
            .arg("fidelity")
            .arg("--model")
            .arg(&model)
            .arg("--chunks")
            .arg(&set)
            .arg("--reference")
            .arg(reference)
            .args(extra)
            .output()
            .unwrap()
    };
    // the gate fixture lacks fp64 logits; a reference of another model; a missing file; bad flags
    let gate = gate_fixture("tiny-e2b");
    let cases: Vec<(PathBuf, Vec<&str>, &str)> = vec![
        (gate.clone(), vec![], "no fp64_logits"),
        (gate_fixture("tiny-pal"), vec![], "another checkpoint"),
        (
            tmp.path().join("missing.safetensors"),
            vec![],
            "missing.safetensors",
        ),
        (gate.clone(), vec!["--max-kl-ratio", "0"], "--max-kl-ratio"),
    ];
    for (reference, extra, want) in cases {
        let o = run(&reference, &extra);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{want}: {err}");
        assert!(err.contains(want), "expected `{want}` in: {err}");
    }
    // the set passes `verify` before anything is read: a file the manifest does not list fails it
    // (exit 1, naming the file); a directory that is no set is a usage error
    std::fs::write(set.join("stray.bin"), b"x").unwrap();
    let o = run(&gate, &[]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(1), "{all}");
    assert!(all.contains("stray.bin"), "{all}");
    let o = bin()
        .arg("fidelity")
        .arg("--model")
        .arg(&model)
        .arg("--chunks")
        .arg(tmp.path())
        .arg("--reference")
        .arg(&gate)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a chunk set"));
}

#[test]
fn graph_weights_writes_a_loadable_checkpoint_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let model = root().join("fixtures/models/tiny-e2b");
    let set = tmp.path().join("set");
    let o = bin()
        .arg("--model")
        .arg(&model)
        .args([
            "--variant",
            "swa4",
            "--nbits",
            "4",
            "--ctx",
            "64",
            "--quiet",
        ])
        .arg("--out")
        .arg(&set)
        .output()
        .unwrap();
    ok(&o, "INT4 build");
    let gw = |out: &Path| {
        bin()
            .arg("graph-weights")
            .arg("--model")
            .arg(&model)
            .arg("--chunks")
            .arg(&set)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let out = tmp.path().join("graph");
    ok(&gw(&out), "graph-weights");
    let ck = gemma4::Checkpoint::open(&out).unwrap();
    assert!(!ck.config().tie_word_embeddings());
    // the palettized projections are their dequantised LUT values: a few distinct values per group
    let (_, q) = ck.load_f32("layers.0.self_attn.q_proj.weight").unwrap();
    let (_, q0) = gemma4::Checkpoint::open(&model)
        .unwrap()
        .load_f32("layers.0.self_attn.q_proj.weight")
        .unwrap();
    assert_ne!(q, q0);
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    let again = gw(&out);
    assert_eq!(
        again.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("--out"));
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        before
    );
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".graph-weights-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn every_numerics_option_keeps_fp32_parity() {
    // the numerics choices change roundings, never the function: each one, built in fp32 with every
    // function (decode, verify, prefill), matches the HF golden at the fp32 tolerance (tiny-pal: PLE,
    // KV sharing, 4 chunks, so folded layer_scalars cross chunk boundaries)
    let tmp = tempfile::tempdir().unwrap();
    let model = root().join("fixtures/models/tiny-pal");
    let golden = root().join("fixtures/goldens/tiny-pal.safetensors");
    for numerics in [
        "norm-gain=multiply,layer-scalar=multiply",
        "layer-scalar=multiply",
        "layer-scalar=fold-across-chunks",
        "rope=elementwise",
    ] {
        let set = tmp.path().join(numerics.replace([',', '='], "_"));
        let o = bin()
            .arg("--model")
            .arg(&model)
            .args([
                "--variant",
                "swa4",
                "--nbits",
                "0",
                "--precision",
                "fp32",
                "--ctx",
                "64",
                "--functions",
                "decode,verify:4,prefill:8",
                "--quiet",
                "--numerics",
                numerics,
            ])
            .arg("--out")
            .arg(&set)
            .output()
            .unwrap();
        ok(&o, &format!("build {numerics}"));
        for extra in [&[][..], &["--prefill"][..]] {
            let o = bin()
                .arg("parity")
                .arg("--model")
                .arg(&model)
                .arg("--chunks")
                .arg(&set)
                .arg("--golden")
                .arg(&golden)
                .args(["--tolerance", "fp32"])
                .args(extra)
                .output()
                .unwrap();
            ok(&o, &format!("fp32 parity of {numerics} {extra:?}"));
        }
    }
}
