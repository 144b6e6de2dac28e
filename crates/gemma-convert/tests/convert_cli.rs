//! The build, parity, bench, inspect, compare, assemble and rebuild commands end to end, as a user
//! types them (spec/cli-contract.md), including the checks failing when they should.

mod setkit;

use setkit::{fixtures, golden, json, model, run, text};
use std::path::Path;
use std::process::Output;

fn build(m: &str, out: &Path, extra: &[&str]) -> Output {
    let mut a = vec![
        "--model",
        m,
        "--ctx",
        "64",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ];
    a.extend_from_slice(extra);
    run(&a)
}

#[test]
fn fp32_build_passes_fp32_parity_and_reports_the_contract_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("set");
    let o = build(
        &model("tiny-e2b"),
        &out,
        &["--nbits", "0", "--precision", "fp32"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&[
        "parity",
        "--model",
        &model("tiny-e2b"),
        "--chunks",
        out.to_str().unwrap(),
        "--golden",
        &golden("tiny-e2b"),
        "--tolerance",
        "fp32",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r = json(&o);
    for k in [
        "variant",
        "backend",
        "positions",
        "top1_agreement",
        "max_abs_logit_diff",
        "mean_abs_logit_diff",
        "mean_kl",
        "pass",
    ] {
        assert!(r.get(k).is_some(), "report lacks {k}: {r}");
    }
    assert_eq!(r["pass"], true);
    assert_eq!(r["top1_agreement"], 1.0);
    assert!(r["max_abs_logit_diff"].as_f64().unwrap() <= 2e-3);
    // 12 prompt + 16 decode positions, past the window W = 8
    assert_eq!(r["positions"], 28);
    // without a golden: the reference forward
    let o = run(&[
        "parity",
        "--model",
        &model("tiny-e2b"),
        "--chunks",
        out.to_str().unwrap(),
        "--tolerance",
        "fp32",
    ]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn a_perturbed_weight_fails_parity() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("set");
    assert!(
        build(
            &model("tiny-e2b"),
            &out,
            &["--nbits", "0", "--precision", "fp32"]
        )
        .status
        .success()
    );
    // Scale one weight blob of chunk2 by 1.5 and record the new bytes in the manifest (as a build
    // that wrote them would): verify passes, the logits do not.
    perturb_blob(&out, "chunk2", MLP_GATE);
    rehash(&out);
    let o = run(&[
        "parity",
        "--model",
        &model("tiny-e2b"),
        "--chunks",
        out.to_str().unwrap(),
        "--golden",
        &golden("tiny-e2b"),
        "--tolerance",
        "fp32",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("FAIL (fp32)"), "{}", text(&o));
    assert!(text(&o).contains(": PASS ("), "verify passes: {}", text(&o));
}

/// Rewrite the manifest's file list with the files as they are now (what a build that wrote these
/// bytes would have recorded), so that only the numeric check can see a perturbation.
fn rehash(set: &Path) {
    let mut m = chunkset::ChunkSetManifest::read(set).unwrap();
    m.files = chunkset::hash_tree(set).unwrap();
    std::fs::write(set.join("manifest.json"), m.to_json().unwrap()).unwrap();
}

/// Scale the (fp32) weight blob of the const op `name` in `pkg`'s weight.bin by 1.5 (a record:
/// `sentinel, dtype, size, offset`, its data at `offset`). The file is replaced, not edited in
/// place: a prefill package shares its decode twin's `weight.bin` as a hard link, and the change
/// is meant for this package only.
fn perturb_blob(set: &Path, pkg: &str, name: &str) {
    let dir = set.join(format!("{pkg}.mlpackage"));
    let rec = mlpackage::named_blobs(&dir).unwrap()[name] as usize;
    let wb = dir.join("Data/com.apple.CoreML/weights/weight.bin");
    let mut b = std::fs::read(&wb).unwrap();
    assert_eq!(
        u32::from_le_bytes(b[rec + 4..rec + 8].try_into().unwrap()),
        2,
        "fp32 blob"
    );
    let size = u64::from_le_bytes(b[rec + 8..rec + 16].try_into().unwrap()) as usize;
    let data = u64::from_le_bytes(b[rec + 16..rec + 24].try_into().unwrap()) as usize;
    for c in b[data..data + size].chunks_exact_mut(4) {
        let v = f32::from_le_bytes(c.try_into().unwrap()) * 1.5;
        c.copy_from_slice(&v.to_le_bytes());
    }
    let tmp = wb.with_extension("bin.tmp");
    std::fs::write(&tmp, b).unwrap();
    std::fs::rename(&tmp, &wb).unwrap();
}

/// Layer 3's MLP gate projection (chunk2 of tiny-e2b holds layers 3–4). Not the first blob: with
/// RMSNorm's gain folded into `layer_norm`'s gamma, the input norm's gain alone is rescaled, and
/// Gemma 4's q/k/v norms make attention blind to its scale.
const MLP_GATE: &str = "L3_gate_proj_weight";

fn parity_json(m: &str, set: &Path, extra: &[&str]) -> Output {
    let mut a = vec![
        "parity",
        "--model",
        m,
        "--chunks",
        set.to_str().unwrap(),
        "--golden",
    ];
    let g = golden(Path::new(m).file_name().unwrap().to_str().unwrap());
    a.push(&g);
    a.extend_from_slice(&["--tolerance", "fp32", "--json"]);
    a.extend_from_slice(extra);
    run(&a)
}

#[test]
fn prefill_parity_checks_the_batched_prompt_and_the_written_back_caches() {
    // tiny-e2b: 12-token prompt, sliding window 8, 16 decode steps.
    let tmp = tempfile::tempdir().unwrap();
    let m = model("tiny-e2b");
    let fp32 = ["--nbits", "0", "--precision", "fp32"];
    // N = 16: the whole prompt (padded) in one call, crossing the window.
    let whole = tmp.path().join("whole");
    let o = build(
        &m,
        &whole,
        &[&fp32[..], &["--functions", "decode,prefill:16"]].concat(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = parity_json(&m, &whole, &["--prefill"]);
    assert!(o.status.success(), "{}", text(&o));
    let r = json(&o);
    assert_eq!(r["prefill"]["tokens"], 12, "{r}");
    assert_eq!(r["prefill"]["position"], 11, "{r}");
    assert_eq!(r["positions"], 1 + 16, "{r}");
    assert_eq!(r["top1_agreement"], 1.0);
    assert!(r["max_abs_logit_diff"].as_f64().unwrap() <= 2e-3, "{r}");
    assert_eq!(r["per_position"][0]["position"], 11);
    assert_eq!(r["per_position"][1]["position"], 12);

    // N = 8 < prompt: 8 tokens batched, the other 4 through decode after the write-back.
    let part = tmp.path().join("part");
    let o = build(
        &m,
        &part,
        &[&fp32[..], &["--functions", "decode,prefill:8"]].concat(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = parity_json(&m, &part, &["--prefill"]);
    assert!(o.status.success(), "{}", text(&o));
    let r = json(&o);
    assert_eq!(r["prefill"]["tokens"], 8, "{r}");
    assert_eq!(r["positions"], 1 + 4 + 16, "{r}");

    // bench times one full-length (N = 16) prefill, then decodes on from position 16.
    let o = run(&[
        "bench",
        "--chunks",
        whole.to_str().unwrap(),
        "--tokens",
        "4",
        "--prefill",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r = json(&o);
    assert_eq!(r["prefill"]["tokens"], 16, "{r}");
    assert_eq!(
        r["prefill"]["ms_per_chunk_call"].as_array().unwrap().len(),
        4
    );
    assert!(r["prefill"]["tokens_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(r["tokens"], 4);

    // A perturbed prefill chunk: decode-only parity cannot see it, prefill parity fails. (Its
    // weight file is chunk2's, hard-linked; the first MLP gate projection is changed in a copy
    // that replaces the prefill package's file only.)
    perturb_blob(&whole, "prefill_chunk2", MLP_GATE);
    rehash(&whole);
    let o = parity_json(&m, &whole, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let o = parity_json(&m, &whole, &["--prefill"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(json(&o)["pass"], false);

    // A set without prefill chunks: a usage error naming the flag.
    let plain = tmp.path().join("plain");
    assert!(build(&m, &plain, &fp32).status.success());
    let o = parity_json(&m, &plain, &["--prefill"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("--prefill") && text(&o).contains("no prefill chunks"),
        "{}",
        text(&o)
    );
    let o = run(&["bench", "--chunks", plain.to_str().unwrap(), "--prefill"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn a_sliding_mask_off_by_one_fails_parity() {
    // lite keeps ctx-long sliding caches; the host builds the window mask from model_config.json.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("set");
    let o = build(
        &model("tiny-e2b"),
        &out,
        &["--variant", "lite", "--nbits", "0", "--precision", "fp32"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let args = [
        "parity",
        "--model",
        &model("tiny-e2b"),
        "--chunks",
        out.to_str().unwrap(),
        "--golden",
        &golden("tiny-e2b"),
        "--tolerance",
        "fp32",
    ];
    let o = run(&args);
    assert!(
        o.status.success(),
        "correct lite set must pass: {}",
        text(&o)
    );
    let mc = out.join("model_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&mc).unwrap()).unwrap();
    cfg["sliding_window"] = serde_json::json!(cfg["sliding_window"].as_u64().unwrap() + 1);
    std::fs::write(&mc, serde_json::to_string(&cfg).unwrap()).unwrap();
    let o = run(&args);
    assert_eq!(o.status.code(), Some(1), "W+1 mask must fail: {}", text(&o));
}

#[test]
fn int4_build_matches_its_own_graph_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("set");
    assert!(
        build(
            &model("tiny-pal"),
            &out,
            &["--nbits", "4", "--precision", "fp32"]
        )
        .status
        .success()
    );
    let o = run(&[
        "parity",
        "--model",
        &model("tiny-pal"),
        "--chunks",
        out.to_str().unwrap(),
        "--reference-weights",
        "graph",
        "--tolerance",
        "fp32",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // against the unquantised golden the same set is far off (the tiny random model is fragile)
    let o = run(&[
        "parity",
        "--model",
        &model("tiny-pal"),
        "--chunks",
        out.to_str().unwrap(),
        "--golden",
        &golden("tiny-pal"),
        "--tolerance",
        "fp32",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn bench_and_inspect_report() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("set");
    assert!(
        build(&model("tiny-pal"), &out, &["--nbits", "4"])
            .status
            .success()
    );
    let o = run(&[
        "bench",
        "--chunks",
        out.to_str().unwrap(),
        "--tokens",
        "8",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r = json(&o);
    assert!(r["tokens_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(r["ms_per_chunk_call"].as_array().unwrap().len(), 4);
    let o = run(&["inspect", out.join("chunk4.mlpackage").to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    for s in [
        "token_id",
        "kv14_k",
        "constexpr_lut_to_dense",
        "lut indices",
    ] {
        assert!(t.contains(s), "inspect output lacks {s}:\n{t}");
    }
    let o = run(&["inspect", out.to_str().unwrap(), "--mil"]);
    assert!(
        o.status.success() && text(&o).contains("decode_q1"),
        "{}",
        text(&o)
    );
}

#[test]
fn compare_rebuild_and_assemble() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let m = model("tiny-e2b");
    assert!(build(&m, &a, &["--nbits", "4", "--zip"]).status.success());
    assert!(tmp.path().join("a.zip").is_file());
    let b = tmp.path().join("b");
    let o = run(&[
        "rebuild",
        a.to_str().unwrap(),
        "--out",
        b.to_str().unwrap(),
        "--model",
        &m,
        "--threads",
        "1",
    ]);
    assert!(
        o.status.success(),
        "rebuild must be identical: {}",
        text(&o)
    );
    let o = run(&["compare", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    // parts built separately assemble into the same bytes
    let mut parts = Vec::new();
    for part in ["chunk1", "chunk2", "chunk3", "chunk4", "side"] {
        let p = tmp.path().join(format!("part-{part}"));
        assert!(
            build(&m, &p, &["--nbits", "4", "--only", part])
                .status
                .success()
        );
        parts.push(p.display().to_string());
    }
    let c = tmp.path().join("c");
    let mut args = vec!["assemble", "--out", c.to_str().unwrap()];
    args.extend(parts.iter().map(String::as_str));
    assert!(run(&args).status.success());
    assert!(
        run(&["compare", a.to_str().unwrap(), c.to_str().unwrap()])
            .status
            .success()
    );
    // a different build differs, and compare says which files
    let d = tmp.path().join("d");
    assert!(build(&m, &d, &["--nbits", "8"]).status.success());
    let o = run(&["compare", a.to_str().unwrap(), d.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("differ     chunk1.mlpackage/Data/com.apple.CoreML/weights/weight.bin"),
        "{}",
        text(&o)
    );
}

#[test]
fn bad_input_exits_2_names_the_problem_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--model".into(), "/nonexistent/ckpt".into()],
            "/nonexistent/ckpt",
        ),
        (
            vec![
                "--model".into(),
                model("tiny-e2b"),
                "--variant".into(),
                "swa5".into(),
            ],
            "swa5",
        ),
        (
            vec![
                "--model".into(),
                model("tiny-e2b"),
                "--nbits".into(),
                "5".into(),
            ],
            "--nbits",
        ),
        (
            vec![
                "--model".into(),
                model("tiny-e2b"),
                "--functions".into(),
                "decode,bogus".into(),
            ],
            "bogus",
        ),
        (
            vec![
                "--model".into(),
                model("tiny-e2b"),
                "--only".into(),
                "chunk9".into(),
            ],
            "chunk9",
        ),
        (
            vec![
                "--model".into(),
                model("tiny-e2b"),
                "--softmax".into(),
                "fast".into(),
            ],
            "--softmax",
        ),
        (
            vec![
                "--model".into(),
                model("tiny-e2b"),
                "--gqa".into(),
                "broadcast".into(),
            ],
            "--gqa",
        ),
        (
            vec![
                "--model".into(),
                model("tiny-e2b"),
                "--taps".into(),
                "eagle2".into(),
            ],
            "eagle2",
        ),
        (
            vec![
                "--model".into(),
                model("tiny-e2b"),
                "--taps".into(),
                "verify-logits".into(),
            ],
            "verify",
        ),
    ];
    for (args, needle) in cases {
        let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
        a.extend(["--ctx", "64", "--out", out.to_str().unwrap(), "--quiet"]);
        let o = run(&a);
        assert_eq!(o.status.code(), Some(2), "{a:?}: {}", text(&o));
        assert!(
            text(&o).contains(needle),
            "{a:?}: message should name {needle}: {}",
            text(&o)
        );
    }
    // a truncated checkpoint
    let bad = tmp.path().join("bad-ckpt");
    std::fs::create_dir(&bad).unwrap();
    let src = fixtures().join("models/tiny-e2b");
    std::fs::copy(src.join("config.json"), bad.join("config.json")).unwrap();
    let st = std::fs::read(src.join("model.safetensors")).unwrap();
    std::fs::write(bad.join("model.safetensors"), &st[..st.len() / 2]).unwrap();
    let o = build(bad.to_str().unwrap(), &out, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("model.safetensors"), "{}", text(&o));
    // an existing non-empty output directory
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("x"), b"keep").unwrap();
    let o = build(&model("tiny-e2b"), &out, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--force"), "{}", text(&o));
    assert_eq!(std::fs::read(out.join("x")).unwrap(), b"keep");
    let mut left: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, vec!["bad-ckpt", "out"], "partial output left behind");
    // parity on something that is not a set
    let o = run(&[
        "parity",
        "--model",
        &model("tiny-e2b"),
        "--chunks",
        tmp.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn inspect_says_which_runtime_loads_a_set_and_what_leaves_the_ane() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model("tiny-e2b");
    let merged = tmp.path().join("merged");
    let o = build(
        &m,
        &merged,
        &[
            "--variant",
            "merged",
            "--functions",
            "decode,verify:2,prefill:16",
            "--taps",
            "eagle3,verify-logits",
            "--softmax",
            "native",
            "--layout",
            "transpose",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&["inspect", merged.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    for s in [
        "loaded by: CoreML-LLM ChunkedEngine, Topology II",
        "weight.bin shared (byte-identical): prefill_chunk1 = chunk1, prefill_chunk4 = chunk3_3way",
        "forms: softmax=native,gqa=reshape,layout=transpose; taps: eagle3,verify-logits",
        "off-ANE pattern: argmax tail (",
        "off-ANE pattern: identity",
        "docs/EXPERIMENTS.md",
        "out hidden_at_L9",
        "out logits_fp16",
    ] {
        assert!(t.contains(s), "inspect output lacks {s}:\n{t}");
    }
    // the recorded forms and taps rebuild the same set
    let again = tmp.path().join("again");
    let o = run(&[
        "rebuild",
        merged.to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
        "--model",
        &m,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // variants the Swift runtime has no loader for say so
    for (variant, extra) in [("lite", vec![]), ("wfa", vec!["--fw", "32"])] {
        let out = tmp.path().join(variant);
        let mut args = vec!["--variant", variant];
        args.extend(extra);
        assert!(build(&m, &out, &args).status.success());
        let o = run(&["inspect", out.to_str().unwrap(), "--json"]);
        assert!(o.status.success(), "{}", text(&o));
        let r = json(&o);
        assert_eq!(r["loaded_by"]["variant"], variant, "{r}");
        assert!(r["loaded_by"]["coreml_llm"].is_null(), "{r}");
        let o = run(&["inspect", out.to_str().unwrap()]);
        assert!(
            text(&o).contains(&format!("CoreML-LLM has no loader for {variant}")),
            "{}",
            text(&o)
        );
    }
}
