//! The `gemma-convert` binary end to end: `run` on a fixture reproduces HF's greedy decode, and
//! bad input exits with status 2 and a message naming the file, tensor or flag.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gemma-convert"));
    c.env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_HOME")
        .env_remove("HF_HUB_CACHE");
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn csv(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[test]
fn run_reproduces_the_hf_greedy_decode() {
    for name in ["tiny-e2b", "tiny-e2b-release"] {
        let g = gemma4::Golden::load(
            fixtures()
                .join("goldens")
                .join(format!("{name}.safetensors")),
        )
        .unwrap();
        let model = fixtures().join("models").join(name);
        let n = g.decode_input_ids.len().to_string();
        let o = run(&[
            "run",
            "--model",
            model.to_str().unwrap(),
            "--ids",
            &csv(&g.input_ids),
            "--max-new-tokens",
            &n,
            "--json",
        ]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
        let got: Vec<u32> = serde_json::from_value(v["generated_ids"].clone()).unwrap();
        assert_eq!(
            got, g.decode_input_ids,
            "{name}: greedy ids must match HF's"
        );
        assert_eq!(
            v["top_logits"].as_array().unwrap().len(),
            g.decode_input_ids.len()
        );
        assert_eq!(v["dtype"], "f32");
        // the first top logit is the max of the golden's last prefill row
        let v0 = v["top_logits"][0].as_f64().unwrap() as f32;
        let last = &g.logits[(g.input_ids.len() - 1) * g.vocab..];
        let want = last.iter().copied().fold(f32::MIN, f32::max);
        assert!((v0 - want).abs() < 2e-3, "{v0} vs {want}");
    }
}

#[test]
fn run_text_output_and_f16() {
    let model = fixtures().join("models").join("tiny-gqa");
    let o = run(&[
        "run",
        "--model",
        model.to_str().unwrap(),
        "--ids",
        "2,17,42",
        "--max-new-tokens",
        "3",
        "--dtype",
        "f16",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("prompt: 2,17,42"), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("step")).count(),
        3,
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("continuation: ")),
        "{out}"
    );
}

#[test]
fn bad_inputs_exit_2_naming_the_problem() {
    let model = fixtures().join("models").join("tiny-e2b");
    let m = model.to_str().unwrap();

    let o = run(&["run", "--model", "/no/such/checkpoint", "--ids", "2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/no/such/checkpoint"), "{}", stderr(&o));

    let o = run(&["run", "--model", m, "--ids", "2,9999"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--ids") && stderr(&o).contains("9999"),
        "{}",
        stderr(&o)
    );

    let o = run(&["run", "--model", m, "--ids", "2,x"]);
    assert_eq!(o.status.code(), Some(2), "clap usage error");
    assert!(stderr(&o).contains("--ids"), "{}", stderr(&o));

    let o = run(&["run", "--model", m, "--ids", "2", "--dtype", "f8"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--dtype"), "{}", stderr(&o));

    // a checkpoint with a tensor missing
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&model).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), tmp.path().join(e.file_name())).unwrap();
    }
    let p = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 64]).unwrap();
    let o = run(&["run", "--model", tmp.path().to_str().unwrap(), "--ids", "2"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("model.safetensors") && e.contains("tensor `model."),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");
}

#[cfg(not(feature = "hub"))]
#[test]
fn repo_ids_without_the_hub_feature_are_a_usage_error() {
    let o = run(&["run", "--model", "acme/tiny-model", "--ids", "2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--features hub"), "{}", stderr(&o));
}
