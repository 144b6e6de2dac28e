//! `--model <repo id>` online, against a fake Hugging Face hub served on 127.0.0.1 (`HF_ENDPOINT`),
//! so CI never touches the network: the repo's file list is read, only the files a conversion
//! needs are downloaded (with the token from `HF_TOKEN` or the token file) into the standard cache
//! layout (`blobs/`, `snapshots/<commit>/`, `refs/main`), a second run downloads nothing, the same
//! cache then serves `HF_HUB_OFFLINE=1`, and a missing token is a clear exit-2 error.
#![cfg(feature = "hub")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

const COMMIT: &str = "89abcdef0123456789abcdef0123456789abcdef";
const TOKEN: &str = "hf_test_token";

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models/tiny-e2b")
}

/// Files of the fake repo: the tiny-e2b checkpoint plus files a conversion does not need.
fn repo_files() -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(tiny()).unwrap() {
        let e = e.unwrap();
        m.insert(
            e.file_name().to_string_lossy().into_owned(),
            std::fs::read(e.path()).unwrap(),
        );
    }
    m.insert("README.md".into(), b"# not needed".to_vec());
    m.insert("onnx/model.onnx".into(), vec![0u8; 1000]);
    m
}

/// Serve `/api/models/acme/tiny/revision/main` and `/acme/tiny/resolve/main/<file>` (ranges) until
/// the process ends; every request path is recorded.
fn fake_hub() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let files = repo_files();
    let seen = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut headers = BTreeMap::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            seen.lock().unwrap().push(path.clone());
            let authorised = headers.get("authorization").map(String::as_str)
                == Some(&format!("Bearer {TOKEN}"));
            let (status, extra, body): (&str, Vec<(String, String)>, Vec<u8>) = if !authorised {
                ("401 Unauthorized", vec![], b"gated".to_vec())
            } else if path == "/api/models/acme/tiny/revision/main" {
                let siblings: Vec<String> = files
                    .keys()
                    .map(|f| format!("{{\"rfilename\":\"{f}\"}}"))
                    .collect();
                let body = format!(
                    "{{\"sha\":\"{COMMIT}\",\"siblings\":[{}]}}",
                    siblings.join(",")
                );
                ("200 OK", vec![], body.into_bytes())
            } else if let Some(f) = path.strip_prefix("/acme/tiny/resolve/main/") {
                match files.get(f) {
                    Some(data) => {
                        let start: usize = headers
                            .get("range")
                            .and_then(|r| r.strip_prefix("bytes="))
                            .and_then(|r| r.split('-').next())
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0);
                        let end = if headers.get("range").is_some_and(|r| r.ends_with("-0")) {
                            1
                        } else {
                            data.len()
                        };
                        let etag = format!("\"etag-{}-{}\"", f.replace('.', "-"), data.len());
                        (
                            "206 Partial Content",
                            vec![
                                ("x-repo-commit".into(), COMMIT.into()),
                                ("etag".into(), etag),
                                (
                                    "content-range".into(),
                                    format!("bytes {start}-{}/{}", end.max(1) - 1, data.len()),
                                ),
                            ],
                            data[start..end].to_vec(),
                        )
                    }
                    None => ("404 Not Found", vec![], b"no".to_vec()),
                }
            } else {
                ("404 Not Found", vec![], b"no".to_vec())
            };
            let mut resp = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (k, v) in extra {
                resp.push_str(&format!("{k}: {v}\r\n"));
            }
            resp.push_str("\r\n");
            let _ = stream.write_all(resp.as_bytes());
            let _ = stream.write_all(&body);
            let _ = stream.flush();
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
        }
    });
    (addr, log)
}

fn run(endpoint: &str, home: &Path, envs: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gemma-convert"));
    for k in [
        "HF_HOME",
        "HF_HUB_CACHE",
        "HF_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_OFFLINE",
        "HUGGING_FACE_HUB_TOKEN",
        "XDG_CACHE_HOME",
    ] {
        c.env_remove(k);
    }
    c.env("HF_ENDPOINT", endpoint)
        .env("HF_HOME", home)
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.args(args).output().unwrap()
}

fn run_model(endpoint: &str, home: &Path, envs: &[(&str, &str)]) -> Output {
    run(
        endpoint,
        home,
        envs,
        &[
            "run",
            "--model",
            "acme/tiny",
            "--ids",
            "2,17,42",
            "--max-new-tokens",
            "2",
            "--json",
        ],
    )
}

#[test]
fn downloads_the_needed_files_into_the_standard_cache_then_works_offline() {
    let (endpoint, log) = fake_hub();
    let home = tempfile::tempdir().unwrap();
    let o = run_model(&endpoint, home.path(), &[("HF_TOKEN", TOKEN)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let snap = home
        .path()
        .join("hub/models--acme--tiny/snapshots")
        .join(COMMIT);
    assert_eq!(PathBuf::from(v["model"].as_str().unwrap()), snap);
    assert_eq!(v["generated_ids"].as_array().unwrap().len(), 2);

    // the standard layout: refs/main → commit, snapshot entries resolve into blobs/
    let root = home.path().join("hub/models--acme--tiny");
    assert_eq!(
        std::fs::read_to_string(root.join("refs/main"))
            .unwrap()
            .trim(),
        COMMIT
    );
    for e in std::fs::read_dir(tiny()).unwrap() {
        let name = e.unwrap().file_name();
        let got = std::fs::read(snap.join(&name)).unwrap();
        assert_eq!(got, std::fs::read(tiny().join(&name)).unwrap(), "{name:?}");
        let target = std::fs::canonicalize(snap.join(&name)).unwrap();
        assert!(target.starts_with(std::fs::canonicalize(root.join("blobs")).unwrap()));
    }
    assert!(!snap.join("README.md").exists() && !snap.join("onnx").exists());
    let fetched: Vec<String> = log.lock().unwrap().clone();
    assert!(
        fetched
            .iter()
            .all(|p| !p.contains("README") && !p.contains("onnx"))
    );

    // a second run finds everything in the snapshot: only the file list is fetched
    let before = log.lock().unwrap().len();
    let o = run_model(&endpoint, home.path(), &[("HF_TOKEN", TOKEN)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let new: Vec<String> = log.lock().unwrap()[before..].to_vec();
    assert_eq!(new, vec!["/api/models/acme/tiny/revision/main".to_string()]);

    // offline: the same cache, no request at all (the endpoint is a dead port)
    let o = run_model(
        "http://127.0.0.1:9",
        home.path(),
        &[("HF_HUB_OFFLINE", "1")],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn the_token_file_is_used_and_a_missing_token_is_a_clear_error() {
    let (endpoint, _log) = fake_hub();
    let home = tempfile::tempdir().unwrap();
    let o = run_model(&endpoint, home.path(), &[]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("acme/tiny") && e.contains("HF_TOKEN"), "{e}");
    assert!(
        !home
            .path()
            .join("hub/models--acme--tiny/snapshots")
            .exists()
    );

    // `hf auth login` writes $HF_HOME/token
    std::fs::write(home.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let o = run_model(&endpoint, home.path(), &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn an_unreachable_hub_is_a_failure_not_bad_input() {
    let home = tempfile::tempdir().unwrap();
    let o = run_model("http://127.0.0.1:9", home.path(), &[("HF_TOKEN", TOKEN)]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("acme/tiny") && e.contains("downloading"), "{e}");
}
