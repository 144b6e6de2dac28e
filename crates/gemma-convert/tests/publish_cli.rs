//! `gemma-convert publish` end to end on tiny fixtures: the repository layout the CoreML-LLM app's
//! downloader fetches (the expected paths are written out here from `ModelDownloader.swift`,
//! independently of `chunkset::published`), a manifest whose sizes and hashes match the files, bundles
//! that read back, hard-linked prefill weights recorded, refusals with exit status 2 and nothing
//! written, byte-identical republishing, and `compare` on published directories.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chunkset::published::{FetchKind, PublishedManifest};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn model(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gemma-convert"))
        .args(args)
        .output()
        .expect("binary runs")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Build a tiny set (ctx 64, INT4) into `out`.
fn build(model: &Path, variant: &str, extra: &[&str], out: &Path) {
    let mut args = vec![
        "--model",
        s(model),
        "--variant",
        variant,
        "--ctx",
        "64",
        "--quiet",
        "--out",
        s(out),
    ];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert!(o.status.success(), "build {variant}: {}", stderr(&o));
}

fn publish(set: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["publish", s(set), "--out", s(out)];
    args.extend_from_slice(extra);
    run(&args)
}

/// Every regular file under `root`, relative, sorted.
fn tree(root: &Path) -> BTreeSet<String> {
    chunkset::list_files(root, &[])
        .unwrap()
        .into_iter()
        .collect()
}

fn bundle_files(dir: &str, stem: &str) -> Vec<String> {
    [
        "weights/weight.bin",
        "coremldata.bin",
        "model.mil",
        "metadata.json",
        "analytics/coremldata.bin",
    ]
    .iter()
    .map(|f| format!("{dir}{stem}.mlmodelc/{f}"))
    .collect()
}

/// The side files every layout publishes (`rope_dir`: where the RoPE tables go).
fn side_files(rope_dir: &str) -> Vec<String> {
    let mut v: Vec<String> = [
        "model_config.json",
        "hf_model/config.json",
        "hf_model/tokenizer.json",
        "hf_model/tokenizer_config.json",
        "embed_tokens_q8.bin",
        "embed_tokens_scales.bin",
        "embed_tokens_per_layer_q8.bin",
        "embed_tokens_per_layer_scales.bin",
        "per_layer_projection.bin",
        "per_layer_norm_weight.bin",
        "manifest.json",
    ]
    .map(String::from)
    .into();
    for f in ["cos_sliding", "sin_sliding", "cos_full", "sin_full"] {
        v.push(format!("{rope_dir}{f}.npy"));
    }
    v
}

fn sha(p: &Path) -> String {
    chunkset::sha256_file(p).unwrap().1
}

/// Check the manifest against the files: one entry per file but itself, sorted, sizes and sha256
/// of the bytes on disk; the total.
fn check_manifest(out: &Path) -> PublishedManifest {
    let m = PublishedManifest::read(out).unwrap();
    let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    let mut on_disk = tree(out);
    on_disk.remove("manifest.json");
    assert_eq!(
        paths,
        on_disk.iter().map(String::as_str).collect::<Vec<_>>(),
        "manifest entries = files, sorted"
    );
    for f in &m.files {
        let p = out.join(&f.path);
        assert_eq!(
            std::fs::metadata(&p).unwrap().len(),
            f.size_bytes,
            "{}",
            f.path
        );
        assert_eq!(sha(&p), f.sha256, "{}", f.path);
    }
    assert_eq!(
        m.total_size,
        m.files.iter().map(|f| f.size_bytes).sum::<u64>()
    );
    m
}

/// Every published bundle reads back and equals the set's bundle it came from.
fn check_bundles(out: &Path, set: &Path, pairs: &[(String, String)]) {
    for (published, built) in pairs {
        let a = mlpackage::read_model(&out.join(published))
            .unwrap_or_else(|e| panic!("{published}: {e}"));
        let b = mlpackage::read_model(&set.join(built)).unwrap();
        assert!(a == b, "{published} reads back as {built}");
    }
}

/// The pairs (prefill weight, decode weight) the downloader links that differ in `set`.
fn differing(set: &Path, linked: &[(&str, &str)]) -> Vec<String> {
    linked
        .iter()
        .filter(|(p, d)| {
            let w = |stem: &str| set.join(format!("{stem}.mlmodelc/weights/weight.bin"));
            sha(&w(p)) != sha(&w(d))
        })
        .map(|(p, _)| {
            format!(
                "prefill/{}.mlmodelc/weights/weight.bin",
                &p["prefill_".len()..]
            )
        })
        .collect()
}

#[test]
fn swa4_and_merged_with_prefill_publish_the_downloader_layout() {
    let tmp = tempfile::tempdir().unwrap();
    // (variant, --format, decode chunks, prefill ← decode pairs the entry hard-links, entry)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a [&'a str],
        &'a [(&'a str, &'a str)],
        &'a str,
    );
    let cases: [Case; 2] = [
        (
            "swa4",
            "mlmodelc",
            &["chunk1", "chunk2", "chunk3", "chunk4"],
            &[
                ("prefill_chunk1", "chunk1"),
                ("prefill_chunk2", "chunk2"),
                ("prefill_chunk3", "chunk3"),
                ("prefill_chunk4", "chunk4"),
            ],
            "gemma4-e2b",
        ),
        (
            "merged",
            "both",
            &["chunk1", "chunk2_3way", "chunk3_3way"],
            &[
                ("prefill_chunk1", "chunk1"),
                ("prefill_chunk4", "chunk3_3way"),
            ],
            "gemma4-e2b-3way",
        ),
    ];
    for (variant, format, decode, linked, entry) in cases {
        let set = tmp.path().join(variant);
        build(
            &model("tiny-pal"),
            variant,
            &["--functions", "decode,prefill:8", "--format", format],
            &set,
        );
        let out = tmp.path().join(format!("{variant}-published"));
        let o = publish(&set, &out, &[]);
        let differ = differing(&set, linked);
        if !differ.is_empty() {
            // a set whose linked pairs are not byte-identical (built before decode and prefill
            // shared one weight.bin) would load the wrong prefill weights on the device: refused,
            // naming exactly those pairs, nothing written
            assert_eq!(o.status.code(), Some(2), "{variant}: {}", stderr(&o));
            for p in &differ {
                assert!(stderr(&o).contains(p.as_str()), "{variant}: {}", stderr(&o));
            }
            for (p, _) in linked {
                let remote = format!("prefill/{}.mlmodelc", &p["prefill_".len()..]);
                let named = stderr(&o).contains(&format!("{remote}/weights/weight.bin vs"));
                assert_eq!(
                    named,
                    differ.iter().any(|d| d.starts_with(&remote)),
                    "{variant}"
                );
            }
            assert!(!out.exists());
            eprintln!(
                "{variant}: linked prefill weights differ in this build: refused as expected"
            );
            continue;
        }
        assert!(o.status.success(), "{variant}: {}", stderr(&o));

        // exactly the downloader's paths (plus the manifest), no packages
        let mut want: BTreeSet<String> = BTreeSet::new();
        for stem in decode {
            want.extend(bundle_files("swa/", stem));
        }
        for i in 1..=4 {
            want.extend(bundle_files("prefill/", &format!("chunk{i}")));
        }
        want.extend(side_files("swa/"));
        assert_eq!(tree(&out), want, "{variant}");

        let m = check_manifest(&out);
        assert_eq!(m.downloader_entry, entry);
        assert_eq!(m.not_provided.len(), 20, "the multimodal encoders");
        assert!(m.not_provided.iter().all(|p| p.starts_with("vision")
            || p.starts_with("audio")
            || p.ends_with(".npy")
            || p == "mel_filterbank.bin"));
        // the hard links the app makes are recorded, and the files are one inode here
        let links: Vec<(String, String)> = m
            .files
            .iter()
            .filter(|f| f.fetch == FetchKind::Hardlink)
            .map(|f| (f.path.clone(), f.link_from.clone().unwrap()))
            .collect();
        let want_links: Vec<(String, String)> = linked
            .iter()
            .map(|(p, d)| {
                (
                    format!(
                        "prefill/{}.mlmodelc/weights/weight.bin",
                        &p["prefill_".len()..]
                    ),
                    format!("swa/{d}.mlmodelc/weights/weight.bin"),
                )
            })
            .collect();
        assert_eq!(links, want_links, "{variant}");
        for (p, d) in &links {
            let (a, b) = (
                out.join(p).metadata().unwrap(),
                out.join(d).metadata().unwrap(),
            );
            assert_eq!(
                (a.dev(), a.ino()),
                (b.dev(), b.ino()),
                "{p} is a hard link of {d}"
            );
        }
        for f in &m.files {
            let local = f.local_path.as_deref();
            match f.path.as_str() {
                p if p.starts_with("swa/") => {
                    assert_eq!(f.fetch, FetchKind::Download, "{p}");
                    assert_eq!(local, Some(&p["swa/".len()..]), "{p}");
                }
                p if p.starts_with("prefill/") => {
                    assert_eq!(
                        local.unwrap(),
                        format!("prefill_{}", &p["prefill/".len()..])
                    );
                }
                p => assert_eq!(local, Some(p), "{p}"),
            }
        }
        // the bytes are the set's
        for stem in decode {
            check_bundles(
                &out,
                &set,
                &[(format!("swa/{stem}.mlmodelc"), format!("{stem}.mlmodelc"))],
            );
        }
        for i in 1..=4 {
            check_bundles(
                &out,
                &set,
                &[(
                    format!("prefill/chunk{i}.mlmodelc"),
                    format!("prefill_chunk{i}.mlmodelc"),
                )],
            );
        }
        assert_eq!(
            std::fs::read(out.join("swa/cos_full.npy")).unwrap(),
            std::fs::read(set.join("cos_full.npy")).unwrap()
        );
        assert_eq!(m.source.manifest_sha256, sha(&set.join("manifest.json")));
        // publishing again gives the same bytes
        let again = tmp.path().join(format!("{variant}-again"));
        assert!(publish(&set, &again, &[]).status.success());
        assert_eq!(tree(&again), tree(&out));
        for f in tree(&out) {
            assert!(
                std::fs::read(out.join(&f)).unwrap() == std::fs::read(again.join(&f)).unwrap(),
                "{variant}: {f}"
            );
        }
        assert!(run(&["compare", s(&out), s(&again)]).status.success());
    }
}

#[test]
fn stateful3_publishes_flat_and_republishing_is_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let set = tmp.path().join("st3");
    build(
        &model("tiny-e2b"),
        "stateful3",
        &["--functions", "decode,prefill_b:4", "--format", "both"],
        &set,
    );
    let a = tmp.path().join("a");
    let o = publish(&set, &a, &["--hf-repo", "someone/tiny-stateful"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut want: BTreeSet<String> = BTreeSet::new();
    for stem in ["chunk_1", "chunk_2", "chunk_3"] {
        want.extend(bundle_files("", stem));
    }
    want.extend(side_files(""));
    assert_eq!(tree(&a), want);
    let m = check_manifest(&a);
    assert_eq!(m.downloader_entry, "gemma4-e2b-stateful-linear");
    assert!(m.not_provided.is_empty());
    for f in &m.files {
        assert_eq!(f.fetch, FetchKind::Download, "{}", f.path);
        assert_eq!(
            f.local_path.as_deref().unwrap(),
            format!("gemma4_e2b_stateful_chunks/{}", f.path)
        );
        assert_eq!(
            f.url.as_deref().unwrap(),
            format!(
                "https://huggingface.co/someone/tiny-stateful/resolve/main/{}",
                f.path
            )
        );
    }
    check_bundles(
        &a,
        &set,
        &["chunk_1", "chunk_2", "chunk_3"]
            .map(|c| (format!("{c}.mlmodelc"), format!("{c}.mlmodelc"))),
    );

    // publishing again (elsewhere, and over itself with --force) gives the same bytes
    let b = tmp.path().join("b");
    assert!(
        publish(&set, &b, &["--hf-repo", "someone/tiny-stateful"])
            .status
            .success()
    );
    let o = run(&["compare", s(&a), s(&b)]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let before: Vec<(String, Vec<u8>)> = tree(&a)
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(a.join(&p)).unwrap()))
        .collect();
    let o = publish(&set, &a, &["--hf-repo", "someone/tiny-stateful"]);
    assert_eq!(o.status.code(), Some(2), "non-empty without --force");
    let o = publish(&set, &a, &["--hf-repo", "someone/tiny-stateful", "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let after: Vec<(String, Vec<u8>)> = tree(&a)
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(a.join(&p)).unwrap()))
        .collect();
    assert!(before == after, "republishing is byte-identical");

    // compare detects a changed file and a missing one, with exit status 1
    let model_config = b.join("model_config.json");
    let mut bytes = std::fs::read(&model_config).unwrap();
    bytes.push(b'\n');
    std::fs::write(&model_config, bytes).unwrap();
    std::fs::remove_file(b.join("chunk_2.mlmodelc/analytics/coremldata.bin")).unwrap();
    let o = run(&["compare", s(&a), s(&b), "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["differ"], serde_json::json!(["model_config.json"]));
    assert_eq!(
        v["only_in_a"],
        serde_json::json!(["chunk_2.mlmodelc/analytics/coremldata.bin"])
    );
    assert_eq!(v["identical"], false);
}

/// Publishing `set` into a fresh `out` exits 2 with a message containing `needle`, and leaves
/// nothing beside `out`.
fn refused(set: &Path, needle: &str) {
    let parent = tempfile::tempdir().unwrap();
    let out = parent.path().join("out");
    let o = publish(set, &out, &[]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}: {}",
        set.display(),
        stderr(&o)
    );
    assert!(
        stderr(&o).contains(needle),
        "{}: {}",
        set.display(),
        stderr(&o)
    );
    assert!(
        tree(parent.path()).is_empty()
            && std::fs::read_dir(parent.path()).unwrap().next().is_none(),
        "nothing written"
    );
}

#[test]
fn sets_the_downloader_cannot_use_are_refused_with_status_2() {
    let tmp = tempfile::tempdir().unwrap();
    let t = |n: &str| tmp.path().join(n);
    let pal = model("tiny-pal");
    build(
        &pal,
        "swa4",
        &["--functions", "decode,prefill:8"],
        &t("packages"),
    );
    refused(&t("packages"), "--format mlmodelc");
    build(&pal, "stateful", &["--format", "mlmodelc"], &t("stateful"));
    refused(
        &t("stateful"),
        "no downloader entry fetches a 4-chunk stateful set",
    );
    build(&pal, "merged2", &["--format", "mlmodelc"], &t("merged2"));
    refused(&t("merged2"), "variant `merged2` has no published layout");
    build(
        &pal,
        "swa4",
        &[
            "--format",
            "mlmodelc",
            "--precision",
            "fp32",
            "--nbits",
            "0",
        ],
        &t("fp32"),
    );
    refused(&t("fp32"), "--precision fp32");
    build(&pal, "swa4", &["--format", "mlmodelc"], &t("no-prefill"));
    refused(&t("no-prefill"), "--functions decode,prefill:N");
    // a checkpoint without tokenizer files: the entry fetches hf_model/tokenizer.json
    build(
        &model("tiny-gqa"),
        "stateful3",
        &["--format", "mlmodelc"],
        &t("no-tokenizer"),
    );
    refused(&t("no-tokenizer"), "hf_model/tokenizer.json");
    // an --only part, and a directory that is no set
    build(
        &pal,
        "stateful3",
        &["--format", "mlmodelc", "--only", "side"],
        &t("part"),
    );
    refused(&t("part"), "gemma-convert assemble");
    std::fs::create_dir_all(t("empty")).unwrap();
    refused(&t("empty"), "not a chunk set");

    // a set changed after its build: a bundle file, then the context the downloader checks
    build(&pal, "stateful3", &["--format", "mlmodelc"], &t("changed"));
    let mil = t("changed").join("chunk_2.mlmodelc/model.mil");
    let mut text = std::fs::read(&mil).unwrap();
    text.extend_from_slice(b"\n");
    std::fs::write(&mil, text).unwrap();
    refused(&t("changed"), "changed after it was built");
    build(
        &pal,
        "swa4",
        &["--format", "mlmodelc", "--functions", "decode,prefill:8"],
        &t("ctx"),
    );
    let cfg = t("ctx").join("model_config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("\"context_length\": 64"));
    std::fs::write(
        &cfg,
        text.replace("\"context_length\": 64", "\"context_length\": 128"),
    )
    .unwrap();
    refused(
        &t("ctx"),
        "causal_mask_full has 64 positions but model_config.json's context_length is 128",
    );

    // the output may not be inside the set, nor a user directory
    let st3 = t("st3");
    build(&pal, "stateful3", &["--format", "mlmodelc"], &st3);
    let o = publish(&st3, &st3.join("published"), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("lies inside the set being published"),
        "{}",
        stderr(&o)
    );
    let user = t("user");
    std::fs::create_dir_all(&user).unwrap();
    std::fs::write(user.join("notes.txt"), "mine").unwrap();
    let o = publish(&st3, &user, &["--force"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("written by `gemma-convert publish`"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(user.join("notes.txt")).unwrap(),
        "mine"
    );
    // a set is not a published directory either
    let o = publish(&st3, &t("changed"), &["--force"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = publish(&st3, &t("x"), &["--hf-repo", "not a repo"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--hf-repo"), "{}", stderr(&o));
}
