//! `scripts/regenerate.sh`, the local twin of `.github/workflows/regenerate.yml` (whose jobs run
//! this script's `parts`, `part NAME` and `finish`), end to end on a tiny fixture: parts built one
//! by one and assembled, verified, published, and the comparison with a
//! previous release — identical, then changed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_gemma-convert")
}

const SETTINGS: [&str; 9] = [
    "MODEL",
    "VARIANT",
    "CTX",
    "NBITS",
    "FUNCTIONS",
    "WORK",
    "PREVIOUS",
    "HF_REPO",
    "GEMMA_CONVERT",
];

/// Run the script with `env` (every other setting unset) and the test's binary.
fn script(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new("bash");
    c.arg(root().join("scripts/regenerate.sh")).args(args);
    for k in SETTINGS {
        c.env_remove(k);
    }
    c.env("GEMMA_CONVERT", bin())
        .env("CTX", "64")
        .env("NBITS", "4");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("bash runs")
}

fn out(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn gc(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn the_script_regenerates_publishes_and_compares_with_the_previous_release() {
    let tmp = tempfile::tempdir().unwrap();
    let model = root().join("fixtures/models/tiny-pal");
    let functions = Path::new("decode,prefill_b:4");
    let base = |work: &Path| -> Vec<(&'static str, PathBuf)> {
        vec![
            ("MODEL", model.clone()),
            ("VARIANT", "stateful3".into()),
            ("FUNCTIONS", functions.into()),
            ("WORK", work.to_path_buf()),
        ]
    };
    let run = |args: &[&str], v: &[(&'static str, PathBuf)]| {
        let pairs: Vec<(&str, &Path)> = v.iter().map(|(k, p)| (*k, p.as_path())).collect();
        script(args, &pairs)
    };

    // the matrix: one part at a time, then assemble, verify, publish; no previous release yet
    let w1 = tmp.path().join("w1");
    let o = run(&["parts"], &base(&w1));
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        r#"["chunk_1","chunk_2","chunk_3","side"]"#
    );
    let o = run(&["all"], &base(&w1));
    assert!(o.status.success(), "{}", out(&o));
    let log = out(&o);
    for step in [
        "== part chunk_1",
        "== part side",
        "== assemble (4 parts)",
        "== verify",
        "== publish",
        "== compare: skipped",
    ] {
        assert!(log.contains(step), "{step}: {log}");
    }
    let published = w1.join("published");
    assert!(chunkset::PublishedManifest::read(&published).is_ok());

    // the same bytes as a full build published directly
    let full = tmp.path().join("full");
    let o = gc(&[
        "--model",
        s(&model),
        "--variant",
        "stateful3",
        "--ctx",
        "64",
        "--nbits",
        "4",
        "--functions",
        "decode,prefill_b:4",
        "--format",
        "mlmodelc",
        "--quiet",
        "--out",
        s(&full),
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let direct = tmp.path().join("direct");
    assert!(
        gc(&["publish", s(&full), "--out", s(&direct)])
            .status
            .success()
    );
    let o = gc(&["compare", s(&direct), s(&published)]);
    assert!(o.status.success(), "matrix = full build: {}", out(&o));

    // regenerated elsewhere against the previous release: identical
    let w2 = tmp.path().join("w2");
    let mut with_prev = base(&w2);
    with_prev.push(("PREVIOUS", published.clone()));
    let o = run(&["all"], &with_prev);
    assert!(o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("identical to the previous release"));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w2.join("compare.json")).unwrap()).unwrap();
    assert_eq!(report["identical"], true);

    // a previous release that differs in one file: status 1, the file named in the report
    let prev = tmp.path().join("prev");
    for f in chunkset::list_files(&published, &[]).unwrap() {
        let d = prev.join(&f);
        std::fs::create_dir_all(d.parent().unwrap()).unwrap();
        std::fs::copy(published.join(&f), d).unwrap();
    }
    let npy = prev.join("cos_full.npy");
    let mut b = std::fs::read(&npy).unwrap();
    let last = b.len() - 1;
    b[last] ^= 1;
    std::fs::write(&npy, b).unwrap();
    let mut changed = base(&w2);
    changed.push(("PREVIOUS", prev.clone()));
    let o = run(&["finish"], &changed);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w2.join("compare.json")).unwrap()).unwrap();
    assert_eq!(report["differ"], serde_json::json!(["cos_full.npy"]));

    // bad settings: exit 2, nothing built
    let w3 = tmp.path().join("w3");
    let mut bad = base(&w3);
    bad[1] = ("VARIANT", "lite".into());
    assert_eq!(run(&["parts"], &bad).status.code(), Some(2));
    assert_eq!(run(&["part", "nope"], &base(&w3)).status.code(), Some(2));
    let no_model: Vec<_> = base(&w3).into_iter().skip(1).collect();
    assert_eq!(run(&["part", "side"], &no_model).status.code(), Some(2));
    assert_eq!(run(&["finish"], &base(&w3)).status.code(), Some(2));
    assert_eq!(run(&["bogus"], &base(&w3)).status.code(), Some(2));
    assert!(!w3.join("set").exists() && !w3.join("published").exists());
}

#[test]
fn the_parts_of_swa4_and_merged_assemble_and_finish_publishes_as_publish_does() {
    let tmp = tempfile::tempdir().unwrap();
    let model = root().join("fixtures/models/tiny-e2b");
    for (variant, n) in [("swa4", 5), ("merged", 4)] {
        let work = tmp.path().join(variant);
        let env = [
            ("MODEL", model.as_path()),
            ("VARIANT", Path::new(variant)),
            ("FUNCTIONS", Path::new("decode,prefill:8")),
            ("WORK", work.as_path()),
        ];
        let o = script(&["parts"], &env);
        let parts: Vec<String> = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(parts.len(), n, "{variant}: {parts:?}");
        for p in &parts {
            let o = script(&["part", p], &env);
            assert!(o.status.success(), "{variant} {p}: {}", out(&o));
        }
        // finish: the parts cover the set (assemble accepts them), and its status is publish's
        let o = script(&["finish"], &env);
        assert!(out(&o).contains("== publish"), "{variant}: {}", out(&o));
        assert!(work.join("set/manifest.json").is_file());
        let direct = gc(&[
            "publish",
            s(&work.join("set")),
            "--out",
            s(&tmp.path().join(format!("{variant}-direct"))),
        ]);
        assert_eq!(
            o.status.code(),
            direct.status.code(),
            "{variant}: {}\n{}",
            out(&o),
            out(&direct)
        );
    }
}
