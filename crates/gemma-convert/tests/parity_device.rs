//! `parity` checks what the device reads: by default it runs the set the way the Swift runtime
//! does (int8 embedding and PLE tables from the side files) and, next to it, with the checkpoint's
//! exact embeddings; it checks the side files the run reads against the checkpoint (int8 rows
//! within the recipe's bound, PLE projection and norm equal to the checkpoint's in fp16), so a
//! broken side file fails the default check. It also reads the logits of head chunks that call
//! them something else than `logits` (the input of the `reduce_argmax` behind `token_id`).

mod setkit;

use setkit::*;
use std::path::Path;

fn parity(m: &str, set: &Path, g: &str, extra: &[&str]) -> std::process::Output {
    let mut a = vec![
        "parity",
        "--model",
        m,
        "--chunks",
        s(set),
        "--golden",
        g,
        "--tolerance",
        "fp32",
    ];
    a.extend_from_slice(extra);
    run(&a)
}

#[test]
fn the_default_run_uses_the_side_files_and_reports_the_exact_run_beside_it() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model("tiny-e2b");
    let g = golden("tiny-e2b");
    let set = tmp.path().join("set");
    build(&m, &set, &["--nbits", "0", "--precision", "fp32"]);
    let o = parity(&m, &set, &g, &["--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let r = json(&o);
    assert_eq!(r["pass"], true, "{r}");
    // the exact-checkpoint run: the named tolerance
    assert_eq!(r["embeddings"], "checkpoint", "{r}");
    assert_eq!(r["positions"], 28, "{r}");
    assert!(r["max_abs_logit_diff"].as_f64().unwrap() <= 2e-3, "{r}");
    // the device run: int8 side files, every position, its own bound
    let d = &r["device"];
    assert_eq!(d["embeddings"], "side", "{r}");
    assert_eq!(d["positions"], 28, "{r}");
    assert_eq!(d["pass"], true, "{r}");
    assert!(d["max_abs_logit_diff"].as_f64().unwrap() > 0.0, "{r}");
    // the side files it read, against the checkpoint
    let sf = &r["side_files"];
    assert_eq!(sf["pass"], true, "{r}");
    for f in [
        "embed_tokens_q8.bin",
        "embed_tokens_per_layer_q8.bin",
        "per_layer_projection.bin",
        "per_layer_norm_weight.bin",
    ] {
        assert!(sf["checked"].to_string().contains(f), "{f}: {r}");
    }
    assert_eq!(r["verify"]["pass"], true, "{r}");
    // text: both runs, one line each
    let o = parity(&m, &set, &g, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("device run") && t.contains("exact-checkpoint run"),
        "{t}"
    );
    // either run alone on request
    let o = parity(&m, &set, &g, &["--embeddings", "checkpoint", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(json(&o)["device"].is_null());
    let o = parity(&m, &set, &g, &["--embeddings", "side", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(json(&o)["embeddings"], "side");
}

#[test]
fn a_broken_side_file_fails_the_default_check() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model("tiny-e2b");
    let g = golden("tiny-e2b");
    let base = tmp.path().join("base");
    build(&m, &base, &["--nbits", "0", "--precision", "fp32"]);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(base.join("model_config.json")).unwrap())
            .unwrap();
    let h = cfg["hidden_size"].as_u64().unwrap() as usize;
    let lp =
        (cfg["per_layer_dim"].as_u64().unwrap() * cfg["num_layers"].as_u64().unwrap()) as usize;
    let ids = golden_ids("tiny-e2b");
    let tok = ids[3] as usize;
    type Edit = Box<dyn Fn(&Path)>;
    // (name, edit, exit status, words the message must contain); every edit is re-hashed into
    // the manifest, so only the side-file checks can see it
    let row = format!("row {tok}");
    let cases: Vec<(&str, Edit, i32, Vec<&str>)> = vec![
        (
            "flipped embedding row",
            Box::new(move |d| {
                let p = d.join("embed_tokens_q8.bin");
                let mut b = std::fs::read(&p).unwrap();
                for x in &mut b[tok * h..(tok + 1) * h] {
                    *x = (*x as i8).wrapping_neg() as u8;
                }
                std::fs::write(&p, b).unwrap();
            }),
            1,
            vec!["embed_tokens_q8.bin", &row],
        ),
        (
            "scaled embedding row",
            Box::new(move |d| {
                let p = d.join("embed_tokens_scales.bin");
                let mut b = std::fs::read(&p).unwrap();
                let s = half::f16::from_le_bytes([b[2 * tok], b[2 * tok + 1]]);
                let s = half::f16::from_f32(s.to_f32() * 1.25);
                b[2 * tok..2 * tok + 2].copy_from_slice(&s.to_le_bytes());
                std::fs::write(&p, b).unwrap();
            }),
            1,
            vec!["embed_tokens_scales.bin"],
        ),
        (
            "scaled PLE row",
            Box::new(move |d| {
                let p = d.join("embed_tokens_per_layer_q8.bin");
                let mut b = std::fs::read(&p).unwrap();
                for x in &mut b[tok * lp..(tok + 1) * lp] {
                    *x = ((*x as i8) / 2) as u8;
                }
                std::fs::write(&p, b).unwrap();
            }),
            1,
            vec!["embed_tokens_per_layer_q8.bin"],
        ),
        (
            "zero PLE norm",
            Box::new(|d| {
                let p = d.join("per_layer_norm_weight.bin");
                let n = std::fs::metadata(&p).unwrap().len() as usize;
                std::fs::write(&p, vec![0u8; n]).unwrap();
            }),
            1,
            vec!["per_layer_norm_weight.bin"],
        ),
        (
            "perturbed PLE projection",
            Box::new(|d| {
                let p = d.join("per_layer_projection.bin");
                let mut b = std::fs::read(&p).unwrap();
                b[1] ^= 0x40;
                std::fs::write(&p, b).unwrap();
            }),
            1,
            vec!["per_layer_projection.bin"],
        ),
        (
            "truncated RoPE table",
            Box::new(|d| halve_npy_rows(&d.join("sin_full.npy"))),
            1,
            vec!["sin_full.npy"],
        ),
        (
            "hf_model config of another model",
            Box::new(|d| {
                edit_json(&d.join("hf_model/config.json"), |c| {
                    c["num_hidden_layers"] = serde_json::json!(12)
                })
            }),
            1,
            vec!["hf_model/config.json"],
        ),
        (
            "embeddings missing",
            Box::new(|d| std::fs::remove_file(d.join("embed_tokens_q8.bin")).unwrap()),
            2,
            vec!["embed_tokens_q8.bin"],
        ),
    ];
    let mut failures = Vec::new();
    for (i, (name, edit, want, needles)) in cases.iter().enumerate() {
        let d = copy_set(&base, &tmp.path().join(format!("case{i}")));
        edit(&d);
        rehash(&d);
        let o = parity(&m, &d, &g, &[]);
        let t = text(&o);
        if o.status.code() != Some(*want) {
            failures.push(format!(
                "{name}: exit {:?}, want {want}: {t}",
                o.status.code()
            ));
            continue;
        }
        for n in needles {
            if !t.contains(n) {
                failures.push(format!("{name}: message does not name `{n}`: {t}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn stateful_default_parity_runs_both_embeddings() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model("tiny-e2b");
    let set = tmp.path().join("set");
    build(
        &m,
        &set,
        &[
            "--variant",
            "stateful",
            "--nbits",
            "0",
            "--precision",
            "fp32",
            "--functions",
            "decode,prefill_b:4",
        ],
    );
    let o = parity(&m, &set, &golden("tiny-e2b"), &["--prefill", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let r = json(&o);
    assert_eq!(r["pass"], true, "{r}");
    assert!(r["max_abs_logit_diff"].as_f64().unwrap() <= 2e-3, "{r}");
    assert_eq!(r["device"]["pass"], true, "{r}");
    assert_eq!(r["device"]["positions"], 28, "{r}");
    assert_eq!(r["side_files"]["pass"], true, "{r}");
    // a broken PLE row fails it
    let p = set.join("embed_tokens_per_layer_q8.bin");
    let mut b = std::fs::read(&p).unwrap();
    let tok = golden_ids("tiny-e2b")[0] as usize;
    let lp = b.len() / 512;
    for x in &mut b[tok * lp..(tok + 1) * lp] {
        *x = (*x as i8).wrapping_neg() as u8;
    }
    std::fs::write(&p, b).unwrap();
    rehash(&set);
    let o = parity(&m, &set, &golden("tiny-e2b"), &["--prefill"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("embed_tokens_per_layer_q8.bin"),
        "{}",
        text(&o)
    );
}

/// Rename the value `from` to `to` everywhere in every function of the package at `pkg` and write
/// it back.
fn rename_value(pkg: &Path, from: &str, to: &str) {
    let mut p = mlpackage::read_package(pkg).unwrap();
    let mut renamed = 0;
    for f in p.program.functions.values_mut() {
        for op in &mut f.block.operations {
            for o in &mut op.outputs {
                if o.name == from {
                    o.name = to.to_string();
                    renamed += 1;
                }
            }
            for bindings in op.inputs.values_mut() {
                for b in bindings {
                    if let mil::Binding::Name(n) = b
                        && n == from
                    {
                        *n = to.to_string();
                    }
                }
            }
        }
        for o in &mut f.block.outputs {
            if o == from {
                *o = to.to_string();
            }
        }
    }
    assert!(renamed > 0, "no value `{from}` in {}", pkg.display());
    let tmp = pkg.with_extension("rewritten");
    mlpackage::write_package(&p, &tmp, &mlpackage::WriteOptions::default()).unwrap();
    std::fs::remove_dir_all(pkg).unwrap();
    std::fs::rename(&tmp, pkg).unwrap();
}

#[test]
fn logits_are_read_where_the_argmax_reads_them() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model("tiny-e2b");
    let g = golden("tiny-e2b");
    let set = tmp.path().join("set");
    build(
        &m,
        &set,
        &[
            "--nbits",
            "0",
            "--precision",
            "fp32",
            "--functions",
            "decode,prefill:8",
        ],
    );
    // the reference pipeline's chunk4 calls its logits `logits_cast_fp16`
    for pkg in ["chunk4", "prefill_chunk4"] {
        rename_value(
            &set.join(format!("{pkg}.mlpackage")),
            "logits",
            "logits_cast_fp16",
        );
    }
    rehash(&set);
    for extra in [&[][..], &["--prefill"][..]] {
        let mut a = vec!["--json"];
        a.extend_from_slice(extra);
        let o = parity(&m, &set, &g, &a);
        assert!(o.status.success(), "{extra:?}: {}", text(&o));
        let r = json(&o);
        assert_eq!(r["top1_agreement"], 1.0, "{r}");
        assert!(r["max_abs_logit_diff"].as_f64().unwrap() <= 2e-3, "{r}");
        assert_eq!(r["token_id_is_argmax"], true, "{r}");
    }
    let o = run(&["verify", s(&set)]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&["bench", "--chunks", s(&set), "--tokens", "2"]);
    assert!(o.status.success(), "{}", text(&o));
}
