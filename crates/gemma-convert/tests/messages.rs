//! Bounds and messages (issue 9 §3.2–3.4): no allocation abort on a window wider than the
//! context, `--threads` capped, defaults derived from `--ctx`, messages that say what differs, each
//! OS error printed once, notes and warnings where a value is adjusted or out of the model's range.
//!
//! `GEMMA_CONVERT_BIN=/path/to/older/gemma-convert` runs these against another binary.

mod setkit;

use setkit::{copy_dir, fixtures, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tiny() -> PathBuf {
    fixtures().join("models/tiny-e2b")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Run with a deadline: `None` when it had to be killed.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let exe = std::env::var_os("GEMMA_CONVERT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_gemma-convert")));
    let mut child = Command::new(exe)
        .args(args)
        .env_remove("HF_HUB_OFFLINE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            return (None, format!("HUNG: {}", text(&o)));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    (o.status.code(), text(&o))
}

fn edited_model(dir: &Path, name: &str, edit: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let m = dir.join(name);
    copy_dir(&tiny(), &m);
    let p = m.join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    edit(&mut c);
    std::fs::write(&p, c.to_string()).unwrap();
    m
}

fn build(m: &Path, out: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut a = vec!["--model", s(m), "--ctx", "64", "--out", s(out), "--quiet"];
    a.extend_from_slice(extra);
    run(&a)
}

#[test]
fn a_sliding_window_wider_than_the_context_is_capped_at_it() {
    let tmp = tempfile::tempdir().unwrap();
    let m = edited_model(tmp.path(), "wide", |c| {
        c["sliding_window"] = 1_000_000_000u64.into()
    });
    let out = tmp.path().join("set");
    let (c, t) = build(&m, &out, &["--nbits", "0", "--precision", "fp32"]);
    assert_eq!(c, Some(0), "{t}");
    let mc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model_config.json")).unwrap())
            .unwrap();
    assert_eq!(mc["sliding_window"], 64, "window capped at ctx");
    // the set computes what the model computes (a window ≥ ctx sees every position)
    let (c, t) = run(&[
        "parity",
        "--model",
        s(&m),
        "--chunks",
        s(&out),
        "--tolerance",
        "fp32",
        "--decode-tokens",
        "8",
    ]);
    assert_eq!(c, Some(0), "{t}");
    let (c, t) = run(&["bench", "--chunks", s(&out), "--tokens", "4"]);
    assert_eq!(c, Some(0), "{t}");
}

#[test]
fn threads_are_capped_at_a_multiple_of_the_cores() {
    let tmp = tempfile::tempdir().unwrap();
    let (c, t) = build(&tiny(), &tmp.path().join("set"), &["--threads", "100000"]);
    assert_eq!(c, Some(0), "{t}");
    assert!(t.contains("--threads 100000 capped"), "{t}");
}

#[test]
fn defaults_of_fw_and_flash_block_follow_the_context() {
    let tmp = tempfile::tempdir().unwrap();
    for (variant, ctx) in [("wfa", "32"), ("flash", "48")] {
        let (c, t) = run(&[
            "--model",
            s(&tiny()),
            "--variant",
            variant,
            "--ctx",
            ctx,
            "--out",
            s(&tmp.path().join(variant)),
            "--quiet",
        ]);
        assert_eq!(c, Some(0), "{variant} at ctx {ctx}: {t}");
    }
    // an explicit value out of range is quoted as typed
    let (c, t) = run(&[
        "--model",
        s(&tiny()),
        "--variant",
        "wfa",
        "--fw",
        "64",
        "--ctx",
        "32",
        "--out",
        s(&tmp.path().join("bad")),
    ]);
    assert_eq!(c, Some(2), "{t}");
    assert!(t.contains("--fw 64") && !t.contains("2048"), "{t}");
}

#[test]
fn os_errors_are_printed_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (c, t) = run(&["inspect", s(&tmp.path().join("none.mlpackage"))]);
    assert_eq!(c, Some(2), "{t}");
    assert_eq!(t.matches("(os error 2)").count(), 1, "{t}");
}

#[test]
fn assemble_says_what_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("model");
    copy_dir(&tiny(), &m);
    let part = |name: &str| tmp.path().join(format!("part-{name}"));
    for p in ["chunk1", "chunk2", "chunk3"] {
        let (c, t) = build(&m, &part(p), &["--only", p]);
        assert_eq!(c, Some(0), "{t}");
    }
    // the checkpoint changes at the same path before the last parts are built
    let st = m.join("model.safetensors");
    let mut b = std::fs::read(&st).unwrap();
    let n = b.len();
    b[n - 2] ^= 0x01;
    std::fs::write(&st, b).unwrap();
    for p in ["chunk4", "side"] {
        let (c, t) = build(&m, &part(p), &["--only", p]);
        assert_eq!(c, Some(0), "{t}");
    }
    let out = tmp.path().join("set");
    let mut a = vec!["assemble", "--out", s(&out)];
    let parts: Vec<PathBuf> = ["chunk1", "chunk2", "chunk3", "chunk4", "side"]
        .into_iter()
        .map(part)
        .collect();
    a.extend(parts.iter().map(|p| s(p)));
    let (c, t) = run(&a);
    assert_eq!(c, Some(2), "{t}");
    assert!(
        t.contains("same command") && t.contains("model_files") && !t.contains("different command"),
        "{t}"
    );
    assert!(!out.exists());
}

#[test]
fn bench_notes_fewer_default_steps_and_build_warns_past_the_trained_context() {
    let tmp = tempfile::tempdir().unwrap();
    let m = edited_model(tmp.path(), "short", |c| {
        c["max_position_embeddings"] = 32.into()
    });
    let out = tmp.path().join("set");
    let (c, t) = build(&m, &out, &[]);
    assert_eq!(c, Some(0), "{t}");
    assert!(
        t.contains("warning") && t.contains("max_position_embeddings (32)"),
        "{t}"
    );
    let (c, t) = run(&["bench", "--chunks", s(&out)]);
    assert_eq!(c, Some(0), "{t}");
    assert!(t.contains("note: timing 62 steps, not 64"), "{t}");
}

#[test]
fn bench_palettize_uses_the_project_venv_like_bench_e2b() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = std::fs::read_to_string(root.join("scripts/bench_palettize.sh")).unwrap();
    let e2b = std::fs::read_to_string(root.join("scripts/bench_e2b.sh")).unwrap();
    assert!(e2b.contains(".venv"), "bench_e2b.sh is the model");
    assert!(script.contains(".venv/bin/python"), "{script}");
    assert!(
        !script.contains("/home/") && !script.contains("/Users/") && !script.contains("/work/"),
        "no developer machine path: {script}"
    );
}

#[test]
fn a_golden_in_hf_layout_passes_with_a_note_on_unused_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("set");
    let (c, t) = build(&tiny(), &out, &["--nbits", "0", "--precision", "fp32"]);
    assert_eq!(c, Some(0), "{t}");
    // the fixture golden with HF's batch dimension on its optional tensors
    let src = fixtures().join("goldens/tiny-e2b.safetensors");
    let b = std::fs::read(&src).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let mut h: serde_json::Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    let fh = h["final_hidden"]["shape"].clone();
    h["final_hidden"]["shape"] = serde_json::json!([1, fh[0], fh[1]]);
    let lo = h["layer_outputs"]["shape"].clone();
    h["layer_outputs"]["shape"] = serde_json::json!([lo[0], 1, lo[1], lo[2]]);
    let mut text = serde_json::to_vec(&h).unwrap();
    text.resize(n.max(text.len()).next_multiple_of(8), b' ');
    let mut g = (text.len() as u64).to_le_bytes().to_vec();
    g.extend(&text);
    g.extend(&b[8 + n..]);
    let golden = tmp.path().join("hf-layout.safetensors");
    std::fs::write(&golden, g).unwrap();
    let (c, t) = run(&[
        "parity",
        "--model",
        s(&tiny()),
        "--chunks",
        s(&out),
        "--golden",
        s(&golden),
        "--tolerance",
        "fp32",
    ]);
    assert_eq!(c, Some(0), "{t}");
    assert!(
        t.contains("note") && t.contains("rope_inv_freq.full_attention"),
        "{t}"
    );
}
