//! `--model <repo id>` (the default `hub` feature) with `HF_HUB_OFFLINE=1`: resolved from a fake
//! Hugging Face cache laid out in a temp dir (HF_HUB_CACHE or HF_HOME/hub), never from the
//! network; a repo absent from the cache is a clear exit-2 error.
#![cfg(feature = "hub")]

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// Lay out `<hub>/models--acme--tiny/{refs/main, snapshots/<hash>/…}` with the tiny-e2b files.
fn fake_cache(hub: &Path) {
    let hash = "0123456789abcdef0123456789abcdef01234567";
    let repo = hub.join("models--acme--tiny");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), hash).unwrap();
    let snap = repo.join("snapshots").join(hash);
    std::fs::create_dir_all(&snap).unwrap();
    for e in std::fs::read_dir(fixtures().join("models").join("tiny-e2b")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), snap.join(e.file_name())).unwrap();
    }
}

fn run_offline(envs: &[(&str, &Path)], model: &str) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gemma-convert"));
    c.env_remove("HF_HOME")
        .env_remove("HF_HUB_CACHE")
        .env("HF_HUB_OFFLINE", "1");
    // any attempt to reach the network would go to a dead proxy and fail
    c.env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("HTTP_PROXY", "http://127.0.0.1:9");
    c.env("HF_ENDPOINT", "http://127.0.0.1:9");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.args([
        "run",
        "--model",
        model,
        "--ids",
        "2,17,42",
        "--max-new-tokens",
        "2",
        "--json",
    ]);
    c.output().unwrap()
}

#[test]
fn offline_resolution_through_hf_hub_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = tmp.path().join("hub");
    fake_cache(&hub);
    let o = run_offline(&[("HF_HUB_CACHE", &hub)], "acme/tiny");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["model"].as_str().unwrap().contains("snapshots"), "{v}");
    assert_eq!(v["generated_ids"].as_array().unwrap().len(), 2);

    // same cache found through HF_HOME/hub
    let o = run_offline(&[("HF_HOME", tmp.path())], "acme/tiny");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn offline_missing_repo_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = tmp.path().join("hub");
    fake_cache(&hub);
    let o = run_offline(&[("HF_HUB_CACHE", &hub)], "acme/absent");
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("acme/absent") && e.contains("HF_HUB_OFFLINE"),
        "{e}"
    );
    let o = run_offline(&[("HF_HUB_CACHE", &hub)], "acme/tiny@v9");
    assert_eq!(o.status.code(), Some(2));
}
