//! Every exit path of the binary, table-driven (README "Exit status"): 0 success, 1 a check failed
//! (or an internal failure), 2 bad input or usage with a message naming the file, tensor, field or
//! flag. Signals (130 / 143), lock conflicts and full disks (1) are driven in `tests/safety.rs`.
//!
//! This table is the source of truth for `src/exit.rs`: a row states the status and what the
//! message must name. `GEMMA_CONVERT_BIN=/path/to/older/gemma-convert` runs it against another
//! binary.

mod setkit;

use setkit::{copy_dir, fixtures, golden, model, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let exe = std::env::var_os("GEMMA_CONVERT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_gemma-convert")));
    let mut c = Command::new(exe);
    c.env_remove("HF_HUB_OFFLINE");
    c
}

/// Run with a deadline (a hang is a failure, not a stuck test).
fn run(args: &[String]) -> (Option<i32>, String) {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let t0 = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            return (None, format!("HUNG, killed after 120 s: {}", text(&o)));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    (o.status.code(), text(&o))
}

/// A copy of the tiny-e2b checkpoint with its config edited.
fn edited_model(dir: &Path, name: &str, edit: impl Fn(&mut serde_json::Value)) -> String {
    let m = dir.join(name);
    copy_dir(&fixtures().join("models/tiny-e2b"), &m);
    let p = m.join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    edit(&mut c);
    std::fs::write(&p, c.to_string()).unwrap();
    m.display().to_string()
}

/// A copy of the tiny-e2b checkpoint whose safetensors header lets two tensors share bytes.
fn overlapping_model(dir: &Path) -> String {
    let m = dir.join("overlap");
    copy_dir(&fixtures().join("models/tiny-e2b"), &m);
    let p = m.join("model.safetensors");
    let b = std::fs::read(&p).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let mut h: serde_json::Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    // two entries of the same byte size: point the second at the first's bytes
    let o = h.as_object().unwrap();
    let mut by_size: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
    for (k, v) in o {
        if let Some(off) = v.get("data_offsets") {
            let (a, e) = (off[0].as_u64().unwrap(), off[1].as_u64().unwrap());
            by_size.entry(e - a).or_default().push(k.clone());
        }
    }
    let pair = by_size.values().find(|v| v.len() >= 2).unwrap().clone();
    let first = h[&pair[0]]["data_offsets"].clone();
    h[&pair[1]]["data_offsets"] = first;
    let mut text = serde_json::to_vec(&h).unwrap();
    while text.len() < n {
        text.push(b' ');
    }
    assert_eq!(text.len(), n, "header must keep its length");
    let mut out = b[..8].to_vec();
    out.extend(text);
    out.extend(&b[8 + n..]);
    std::fs::write(&p, out).unwrap();
    m.display().to_string()
}

struct Env {
    dir: PathBuf,
    /// tiny-e2b, fp32, ctx 64
    set: PathBuf,
    /// tiny-e2b, nbits 8, ctx 64
    set8: PathBuf,
}

impl Env {
    /// A fresh copy of the fp32 set, edited.
    fn set_copy(&self, name: &str, edit: impl Fn(&Path)) -> String {
        let d = self.dir.join(name);
        copy_dir(&self.set, &d);
        edit(&d);
        d.display().to_string()
    }
    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// Record the files of `set` as they are now in its manifest (as a build that wrote them would), so
/// that only a check other than the sha256 comparison can see an edit.
fn rehash(set: &Path) {
    let mut m = chunkset::ChunkSetManifest::read(set).unwrap();
    m.files = chunkset::hash_tree(set).unwrap();
    std::fs::write(set.join("manifest.json"), m.to_json().unwrap()).unwrap();
}

fn build_args(m: &str, out: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["--model", m, "--ctx", "64", "--out", out, "--quiet"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn parity_args(m: &str, set: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["parity", "--model", m, "--chunks", set]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn v(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// Scale the first fp32 blob of `pkg`'s weight.bin by 1.5.
fn perturb(set: &Path, pkg: &str) {
    let wb = set.join(format!(
        "{pkg}.mlpackage/Data/com.apple.CoreML/weights/weight.bin"
    ));
    let mut b = std::fs::read(&wb).unwrap();
    let size = u64::from_le_bytes(b[64 + 8..64 + 16].try_into().unwrap()) as usize;
    let data = u64::from_le_bytes(b[64 + 16..64 + 24].try_into().unwrap()) as usize;
    for c in b[data..data + size].chunks_exact_mut(4) {
        let x = f32::from_le_bytes(c.try_into().unwrap()) * 1.5 + 0.01;
        c.copy_from_slice(&x.to_le_bytes());
    }
    std::fs::write(&wb, b).unwrap();
}

#[test]
fn every_exit_path() {
    let tmp = tempfile::tempdir().unwrap();
    let env = Env {
        dir: tmp.path().to_path_buf(),
        set: tmp.path().join("set"),
        set8: tmp.path().join("set8"),
    };
    let tiny = model("tiny-e2b");
    let (c, t) = run(&build_args(
        &tiny,
        &env.path("set"),
        &["--nbits", "0", "--precision", "fp32"],
    ));
    assert_eq!(c, Some(0), "{t}");
    let (c, t) = run(&build_args(&tiny, &env.path("set8"), &["--nbits", "8"]));
    assert_eq!(c, Some(0), "{t}");
    let set = env.set.display().to_string();
    let set8 = env.set8.display().to_string();

    // (name, args, status, what the message must name)
    type Row = (&'static str, Vec<String>, i32, Vec<&'static str>);
    let rows: Vec<Row> = vec![
        // ---- 0: success
        ("build", build_args(&tiny, &env.path("ok"), &[]), 0, vec![]),
        (
            "parity passes",
            parity_args(
                &tiny,
                &set,
                &["--golden", &golden("tiny-e2b"), "--tolerance", "fp32"],
            ),
            0,
            vec!["PASS"],
        ),
        ("compare identical", v(&["compare", &set, &set]), 0, vec![]),
        ("verify passes", v(&["verify", &set]), 0, vec!["PASS"]),
        ("inspect", v(&["inspect", &set]), 0, vec![]),
        (
            "bench",
            v(&["bench", "--chunks", &set, "--tokens", "2"]),
            0,
            vec![],
        ),
        (
            "run",
            v(&[
                "run",
                "--model",
                &tiny,
                "--ids",
                "2,3",
                "--max-new-tokens",
                "1",
            ]),
            0,
            vec![],
        ),
        // ---- 1: a check failed
        (
            "parity fails",
            parity_args(
                &tiny,
                &env.set_copy("perturbed", |d| {
                    perturb(d, "chunk2");
                    rehash(d)
                }),
                &["--golden", &golden("tiny-e2b"), "--tolerance", "fp32"],
            ),
            1,
            vec!["FAIL (fp32)"],
        ),
        (
            "parity: a side file unlike the checkpoint",
            parity_args(
                &tiny,
                &env.set_copy("ple-norm", |d| {
                    let p = d.join("per_layer_norm_weight.bin");
                    let n = std::fs::metadata(&p).unwrap().len() as usize;
                    std::fs::write(&p, vec![0u8; n]).unwrap();
                    rehash(d)
                }),
                &["--golden", &golden("tiny-e2b"), "--tolerance", "fp32"],
            ),
            1,
            vec!["per_layer_norm_weight.bin"],
        ),
        (
            "parity: the set fails verify",
            parity_args(
                &tiny,
                &env.set_copy("ctx-claim", |d| {
                    let p = d.join("model_config.json");
                    let t = std::fs::read_to_string(&p).unwrap();
                    std::fs::write(
                        &p,
                        t.replace("\"context_length\": 64", "\"context_length\": 640"),
                    )
                    .unwrap();
                    rehash(d)
                }),
                &[],
            ),
            1,
            vec!["model_config.json", "context_length"],
        ),
        (
            "verify: a file unlike the manifest",
            v(&[
                "verify",
                &env.set_copy("bit", |d| {
                    let wb = d.join("chunk2.mlpackage/Data/com.apple.CoreML/weights/weight.bin");
                    let mut b = std::fs::read(&wb).unwrap();
                    let data = u64::from_le_bytes(b[64 + 16..64 + 24].try_into().unwrap()) as usize;
                    b[data] ^= 1;
                    std::fs::write(&wb, b).unwrap();
                }),
            ]),
            1,
            vec!["weight.bin", "sha256"],
        ),
        (
            "compare differs",
            v(&["compare", &set, &set8]),
            1,
            vec!["differ"],
        ),
        // ---- 2: bad input or usage
        (
            "unknown flag value",
            v(&["--model", &tiny, "--nbits", "x"]),
            2,
            vec!["--nbits"],
        ),
        (
            "missing checkpoint",
            build_args("/no/such/ckpt", &env.path("o1"), &[]),
            2,
            vec!["/no/such/ckpt"],
        ),
        (
            "corrupt package",
            parity_args(
                &tiny,
                &env.set_copy("corrupt", |d| {
                    std::fs::write(
                        d.join("chunk2.mlpackage/Data/com.apple.CoreML/model.mlmodel"),
                        b"not a protobuf",
                    )
                    .unwrap()
                }),
                &[],
            ),
            2,
            vec!["chunk2"],
        ),
        (
            "missing package",
            parity_args(
                &tiny,
                &env.set_copy("nopkg", |d| {
                    std::fs::remove_dir_all(d.join("chunk3.mlpackage")).unwrap()
                }),
                &[],
            ),
            2,
            vec!["chunk3.mlpackage"],
        ),
        (
            "attention_k_eq_v model",
            build_args(
                &edited_model(&env.dir, "keqv", |c| c["attention_k_eq_v"] = true.into()),
                &env.path("o2"),
                &[],
            ),
            2,
            vec!["attention_k_eq_v"],
        ),
        (
            "MoE model",
            build_args(
                &edited_model(&env.dir, "moe", |c| c["enable_moe_block"] = true.into()),
                &env.path("o3"),
                &[],
            ),
            2,
            vec!["enable_moe_block"],
        ),
        (
            "OUT's parent is a file",
            {
                std::fs::write(env.dir.join("afile"), b"x").unwrap();
                build_args(&tiny, &env.path("afile/out"), &[])
            },
            2,
            vec!["afile", "not a directory"],
        ),
        (
            "--backend coreml here",
            parity_args(&tiny, &set, &["--backend", "coreml"]),
            2,
            vec!["--backend"],
        ),
        (
            "chunks: []",
            parity_args(
                &tiny,
                &env.set_copy("nochunks", |d| {
                    let p = d.join("model_config.json");
                    let mut c: serde_json::Value =
                        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
                    c["chunks"] = serde_json::json!([]);
                    std::fs::write(&p, c.to_string()).unwrap();
                }),
                &[],
            ),
            2,
            vec!["model_config.json", "chunks"],
        ),
        (
            "parity with another checkpoint",
            parity_args(&model("tiny-gqa"), &set, &[]),
            2,
            vec!["--model", "different checkpoint"],
        ),
        (
            "overlapping tensors",
            build_args(&overlapping_model(&env.dir), &env.path("o4"), &[]),
            2,
            vec!["model.safetensors", "overlaps"],
        ),
        (
            "a FIFO as model.safetensors",
            {
                let m = env.dir.join("fifo");
                std::fs::create_dir(&m).unwrap();
                std::fs::copy(
                    fixtures().join("models/tiny-e2b/config.json"),
                    m.join("config.json"),
                )
                .unwrap();
                let p =
                    std::ffi::CString::new(m.join("model.safetensors").to_str().unwrap()).unwrap();
                assert_eq!(unsafe { libc::mkfifo(p.as_ptr(), 0o644) }, 0);
                build_args(m.to_str().unwrap(), &env.path("o5"), &[])
            },
            2,
            vec!["model.safetensors", "not a regular file"],
        ),
        (
            "--threads 0",
            build_args(&tiny, &env.path("o6"), &["--threads", "0"]),
            2,
            vec!["--threads"],
        ),
        (
            "a function twice",
            build_args(
                &tiny,
                &env.path("o7"),
                &["--functions", "decode,verify:2,verify:3"],
            ),
            2,
            vec!["--functions", "verify"],
        ),
        (
            "--tokens beyond the context",
            v(&["bench", "--chunks", &set, "--tokens", "64"]),
            2,
            vec!["--tokens", "64"],
        ),
        (
            "missing RoPE table",
            parity_args(
                &tiny,
                &env.set_copy("norope", |d| {
                    std::fs::remove_file(d.join("cos_full.npy")).unwrap()
                }),
                &[],
            ),
            2,
            vec!["cos_full.npy"],
        ),
        (
            "not a golden",
            parity_args(
                &tiny,
                &set,
                &["--golden", &format!("{tiny}/model.safetensors")],
            ),
            2,
            vec!["--golden", "input_ids"],
        ),
        (
            "not a chunk set",
            parity_args(&tiny, &env.path(""), &[]),
            2,
            vec!["model_config.json"],
        ),
        (
            "parity: a side file missing",
            parity_args(
                &tiny,
                &env.set_copy("no-embed", |d| {
                    std::fs::remove_file(d.join("embed_tokens_q8.bin")).unwrap()
                }),
                &[],
            ),
            2,
            vec!["embed_tokens_q8.bin", "missing"],
        ),
        (
            "verify: not a set",
            v(&["verify", &env.path("")]),
            2,
            vec!["manifest.json"],
        ),
        (
            "OUT not ours",
            {
                std::fs::create_dir(env.dir.join("user")).unwrap();
                std::fs::write(env.dir.join("user/notes"), b"mine").unwrap();
                build_args(&tiny, &env.path("user"), &["--force"])
            },
            2,
            vec!["--out", "user"],
        ),
        (
            "publish an fp32 set",
            v(&["publish", &set, "--out", &env.path("published")]),
            2,
            vec!["--precision fp32"],
        ),
        (
            "publish packages only",
            v(&["publish", &set8, "--out", &env.path("published")]),
            2,
            vec!["--format mlmodelc"],
        ),
        (
            "publish no set",
            v(&["publish", &tiny, "--out", &env.path("published")]),
            2,
            vec!["not a chunk set"],
        ),
    ];
    let mut failures = Vec::new();
    for (name, args, want, needles) in &rows {
        let (code, t) = run(args);
        if code != Some(*want) {
            failures.push(format!("{name}: exit {code:?}, want {want}: {t}"));
            continue;
        }
        for n in needles {
            if !t.contains(n) {
                failures.push(format!("{name}: message does not name `{n}`: {t}"));
            }
        }
        if t.contains("panicked") {
            failures.push(format!("{name}: panicked: {t}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows wrong:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}
