//! `gemma-convert verify SET`: every file against manifest.json, every package readable,
//! model_config.json consistent with the manifest, the packages' I/O (the contract's, per function)
//! and hf_model/config.json, the side files' sizes and contents; exit 1 naming the file (and field)
//! on any mismatch, 2 when the set cannot be verified at all. `parity` and `bench` (stateful sets
//! included) run the same check first, under the set's shared lock.

mod setkit;

use setkit::*;
use std::path::Path;

/// Run `verify` and return (status, output).
fn verify(set: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut a = vec!["verify", s(set)];
    a.extend_from_slice(extra);
    let o = run(&a);
    (o.status.code(), text(&o))
}

#[test]
fn fresh_sets_of_every_variant_and_form_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let e2b = model("tiny-e2b");
    let fp32 = ["--nbits", "0", "--precision", "fp32"];
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "swa4-both",
            e2b.clone(),
            [
                &fp32[..],
                &[
                    "--functions",
                    "decode,verify:2,prefill:8",
                    "--format",
                    "both",
                ],
            ]
            .concat(),
        ),
        ("merged", e2b.clone(), vec!["--variant", "merged"]),
        (
            "taps-and-reference-forms",
            e2b.clone(),
            vec![
                "--functions",
                "decode,verify:3,prefill:8",
                "--taps",
                "eagle3,verify-logits",
                "--softmax",
                "native",
                "--gqa",
                "repeat",
                "--layout",
                "transpose",
            ],
        ),
        ("merged2", e2b.clone(), vec!["--variant", "merged2"]),
        ("merged1", e2b.clone(), vec!["--variant", "merged1"]),
        ("wfa", e2b.clone(), vec!["--variant", "wfa", "--fw", "16"]),
        (
            "flash",
            e2b.clone(),
            vec!["--variant", "flash", "--flash-block", "16"],
        ),
        (
            "lite",
            e2b.clone(),
            vec!["--variant", "lite", "--nbits", "8"],
        ),
        (
            "stateful-bundles",
            e2b.clone(),
            vec![
                "--variant",
                "stateful",
                "--functions",
                "decode,prefill_b:4",
                "--format",
                "mlmodelc",
            ],
        ),
        (
            "stateful3",
            e2b.clone(),
            [&fp32[..], &["--variant", "stateful3"]].concat(),
        ),
        ("gqa", model("tiny-gqa"), vec!["--nbits", "0"]),
        ("release", model("tiny-e2b-release"), vec![]),
    ];
    for (name, m, extra) in &cases {
        let out = tmp.path().join(name);
        build(m, &out, extra);
        let (c, t) = verify(&out, &[]);
        assert_eq!(c, Some(0), "{name}: {t}");
        assert!(t.contains("PASS"), "{name}: {t}");
        let o = run(&["verify", s(&out), "--json"]);
        assert!(o.status.success(), "{name}: {}", text(&o));
        let r = json(&o);
        assert_eq!(r["pass"], true, "{name}: {r}");
        assert_eq!(r["findings"].as_array().unwrap().len(), 0, "{name}: {r}");
        assert!(r["functions"].as_u64().unwrap() >= 1, "{name}: {r}");
        assert!(
            r["hashed_bytes"].as_u64().unwrap() == r["bytes"].as_u64().unwrap(),
            "{name}: every byte hashed: {r}"
        );
    }
}

/// A damaged copy of `base` (re-hashed when `rehash_after`), with the words its verify failure
/// must contain.
struct Case {
    name: &'static str,
    edit: Box<dyn Fn(&Path)>,
    rehash_after: bool,
    needles: Vec<&'static str>,
}

fn case(
    name: &'static str,
    rehash_after: bool,
    needles: &[&'static str],
    edit: impl Fn(&Path) + 'static,
) -> Case {
    Case {
        name,
        edit: Box::new(edit),
        rehash_after,
        needles: needles.to_vec(),
    }
}

#[test]
fn verify_names_the_file_and_field_that_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let e2b = model("tiny-e2b");
    let base = tmp.path().join("base");
    build(&e2b, &base, &["--nbits", "0", "--precision", "fp32"]);
    // the same model at another context length: its packages have other I/O shapes
    let other = tmp.path().join("ctx32");
    let o = run(&[
        "--model",
        &e2b,
        "--ctx",
        "32",
        "--out",
        s(&other),
        "--quiet",
        "--nbits",
        "0",
        "--precision",
        "fp32",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let other_chunk2 = other.join("chunk2.mlpackage");
    let cases = vec![
        // item 5: one low mantissa bit of one weight
        case(
            "mantissa bit",
            false,
            &[
                "chunk2.mlpackage/Data/com.apple.CoreML/weights/weight.bin",
                "sha256",
            ],
            |d| flip_low_mantissa_bit(d, "chunk2"),
        ),
        case(
            "context 10^12",
            true,
            &["model_config.json", "context_length"],
            |d| {
                edit_json(&d.join("model_config.json"), |c| {
                    c["context_length"] = serde_json::json!(1_000_000_000_000u64)
                })
            },
        ),
        case(
            "hidden 32",
            true,
            &["model_config.json", "hidden_size"],
            |d| {
                edit_json(&d.join("model_config.json"), |c| {
                    c["hidden_size"] = serde_json::json!(32)
                })
            },
        ),
        case(
            "variant banana",
            true,
            &["model_config.json", "variant"],
            |d| {
                edit_json(&d.join("model_config.json"), |c| {
                    c["variant"] = serde_json::json!("banana")
                })
            },
        ),
        case(
            "vocab",
            true,
            &["model_config.json", "vocab_size", "chunk4"],
            |d| {
                edit_json(&d.join("model_config.json"), |c| {
                    c["vocab_size"] = serde_json::json!(500)
                })
            },
        ),
        case("chunk list", true, &["model_config.json", "chunks"], |d| {
            edit_json(&d.join("model_config.json"), |c| {
                c["chunks"][3]["name"] = serde_json::json!("chunk5")
            })
        }),
        case(
            "embeddings missing",
            false,
            &["embed_tokens_q8.bin", "missing"],
            |d| std::fs::remove_file(d.join("embed_tokens_q8.bin")).unwrap(),
        ),
        case("unlisted file", false, &["notes.txt", "not listed"], |d| {
            std::fs::write(d.join("notes.txt"), b"mine").unwrap()
        }),
        case(
            "halved RoPE table",
            true,
            &["cos_sliding.npy", "rows"],
            |d| halve_npy_rows(&d.join("cos_sliding.npy")),
        ),
        case(
            "short projection",
            true,
            &["per_layer_projection.bin", "bytes"],
            |d| {
                let p = d.join("per_layer_projection.bin");
                let b = std::fs::read(&p).unwrap();
                std::fs::write(&p, &b[..b.len() - 2]).unwrap();
            },
        ),
        case(
            "NaN scale",
            true,
            &["embed_tokens_scales.bin", "row 3"],
            |d| {
                let p = d.join("embed_tokens_scales.bin");
                let mut b = std::fs::read(&p).unwrap();
                b[6..8].copy_from_slice(&0x7e00u16.to_le_bytes());
                std::fs::write(&p, b).unwrap();
            },
        ),
        case(
            "package of another context",
            true,
            &["chunk2.mlpackage", "decode_q1", "causal_mask_full"],
            move |d| {
                std::fs::remove_dir_all(d.join("chunk2.mlpackage")).unwrap();
                copy_dir(&other_chunk2, &d.join("chunk2.mlpackage"));
            },
        ),
        case(
            "hf config of another model",
            true,
            &["hf_model/config.json", "hidden_size"],
            |d| {
                edit_json(&d.join("hf_model/config.json"), |c| {
                    c["hidden_size"] = serde_json::json!(128)
                })
            },
        ),
        case(
            "unreadable package",
            false,
            &["chunk3.mlpackage", "model.mlmodel"],
            |d| {
                std::fs::write(
                    d.join("chunk3.mlpackage/Data/com.apple.CoreML/model.mlmodel"),
                    b"not a protobuf",
                )
                .unwrap()
            },
        ),
    ];
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let d = copy_set(&base, &tmp.path().join(format!("case{i}")));
        (c.edit)(&d);
        if c.rehash_after {
            rehash(&d);
        }
        let (code, t) = verify(&d, &[]);
        if code != Some(1) {
            failures.push(format!("{}: exit {code:?}, want 1: {t}", c.name));
            continue;
        }
        for n in &c.needles {
            if !t.contains(n) {
                failures.push(format!("{}: output does not name `{n}`: {t}", c.name));
            }
        }
        if t.contains("panicked") {
            failures.push(format!("{}: panicked: {t}", c.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // the JSON report names the file and the field
    let d = copy_set(&base, &tmp.path().join("json"));
    edit_json(&d.join("model_config.json"), |c| {
        c["context_length"] = serde_json::json!(1_000_000_000_000u64)
    });
    rehash(&d);
    let o = run(&["verify", s(&d), "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r = json(&o);
    assert_eq!(r["pass"], false);
    assert!(
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["file"] == "model_config.json" && f["field"] == "context_length"),
        "{r}"
    );

    // nothing to verify: exit 2
    let (c, t) = verify(&tmp.path().join("nope"), &[]);
    assert_eq!(c, Some(2), "{t}");
    assert!(t.contains("nope"), "{t}");
    std::fs::create_dir(tmp.path().join("empty")).unwrap();
    let (c, t) = verify(&tmp.path().join("empty"), &[]);
    assert_eq!(c, Some(2), "{t}");
    assert!(t.contains("manifest.json"), "{t}");
}

#[test]
fn stateful_state_schema_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let e2b = model("tiny-e2b");
    let a = tmp.path().join("a");
    build(&e2b, &a, &["--variant", "stateful", "--nbits", "0"]);
    let b = tmp.path().join("b");
    let o = run(&[
        "--model",
        &e2b,
        "--ctx",
        "32",
        "--out",
        s(&b),
        "--quiet",
        "--variant",
        "stateful",
        "--nbits",
        "0",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::remove_dir_all(a.join("chunk_2.mlpackage")).unwrap();
    copy_dir(&b.join("chunk_2.mlpackage"), &a.join("chunk_2.mlpackage"));
    rehash(&a);
    let (c, t) = verify(&a, &[]);
    assert_eq!(c, Some(1), "{t}");
    for n in ["chunk_2.mlpackage", "infer", "kv_cache_full"] {
        assert!(t.contains(n), "{n}: {t}");
    }
}

#[test]
fn parity_and_bench_check_the_set_first() {
    let tmp = tempfile::tempdir().unwrap();
    let e2b = model("tiny-e2b");
    let g = golden("tiny-e2b");
    let base = tmp.path().join("base");
    build(&e2b, &base, &["--nbits", "0", "--precision", "fp32"]);
    let parity = |set: &Path| {
        run(&[
            "parity",
            "--model",
            &e2b,
            "--chunks",
            s(set),
            "--golden",
            &g,
            "--tolerance",
            "fp32",
        ])
    };
    let o = parity(&base);
    assert!(o.status.success(), "{}", text(&o));
    // claims of model_config.json that the packages contradict fail parity (they passed before)
    for (field, value) in [
        ("context_length", serde_json::json!(1_000_000_000_000u64)),
        ("hidden_size", serde_json::json!(32)),
        ("variant", serde_json::json!("banana")),
    ] {
        let d = copy_set(&base, &tmp.path().join(field));
        edit_json(&d.join("model_config.json"), |c| c[field] = value.clone());
        rehash(&d);
        let o = parity(&d);
        assert_eq!(o.status.code(), Some(1), "{field}: {}", text(&o));
        assert!(text(&o).contains(field), "{field}: {}", text(&o));
    }
    // item 5: a low mantissa bit flipped in weight.bin fails parity and bench (it passed before)
    let d = copy_set(&base, &tmp.path().join("bit"));
    flip_low_mantissa_bit(&d, "chunk3");
    let o = parity(&d);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("weight.bin"), "{}", text(&o));
    let o = run(&["bench", "--chunks", s(&d), "--tokens", "2"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("weight.bin"), "{}", text(&o));

    // the stateful paths check too
    let st = tmp.path().join("stateful");
    build(
        &e2b,
        &st,
        &[
            "--variant",
            "stateful3",
            "--nbits",
            "0",
            "--precision",
            "fp32",
        ],
    );
    flip_low_mantissa_bit(&st, "chunk_2");
    let o = run(&["bench", "--chunks", s(&st), "--tokens", "2"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("chunk_2.mlpackage"), "{}", text(&o));
    let o = parity(&st);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let turns = fixtures().join("goldens/tiny-e2b.turns.safetensors");
    let o = run(&[
        "parity",
        "--model",
        &e2b,
        "--chunks",
        s(&st),
        "--turns",
        s(&turns),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("chunk_2.mlpackage"), "{}", text(&o));
}

#[test]
fn stateful_readers_take_the_shared_lock() {
    use std::os::unix::io::AsRawFd;
    let tmp = tempfile::tempdir().unwrap();
    let e2b = model("tiny-e2b");
    let st = tmp.path().join("set");
    build(
        &e2b,
        &st,
        &[
            "--variant",
            "stateful3",
            "--nbits",
            "0",
            "--precision",
            "fp32",
        ],
    );
    // a writer holds the set's lock: every reader exits 2 naming it
    let lock = tmp.path().join(".set.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .unwrap();
    assert_eq!(
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    std::fs::write(&lock, "4242").unwrap();
    let turns = fixtures().join("goldens/tiny-e2b.turns.safetensors");
    for args in [
        vec![
            "parity",
            "--model",
            &e2b,
            "--chunks",
            s(&st),
            "--turns",
            s(&turns),
        ],
        vec!["parity", "--model", &e2b, "--chunks", s(&st)],
        vec!["bench", "--chunks", s(&st), "--tokens", "2"],
        vec!["verify", s(&st)],
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(".set.lock"), "{args:?}: {}", text(&o));
    }
    drop(f);
}

#[test]
fn publish_refuses_a_set_that_fails_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let set = tmp.path().join("set");
    build(
        &model("tiny-pal"),
        &set,
        &["--variant", "stateful3", "--format", "mlmodelc"],
    );
    let o = run(&["publish", s(&set), "--out", s(&tmp.path().join("ok"))]);
    assert!(o.status.success(), "{}", text(&o));
    // a RoPE table of half the rows, recorded in the manifest: every byte publish copies matches
    // the manifest, but the device would read past the table
    halve_npy_rows(&set.join("cos_sliding.npy"));
    rehash(&set);
    let out = tmp.path().join("out");
    let o = run(&["publish", s(&set), "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    for n in ["fails verify", "cos_sliding.npy", "rows"] {
        assert!(text(&o).contains(n), "{n}: {}", text(&o));
    }
    assert!(!out.exists());
}
