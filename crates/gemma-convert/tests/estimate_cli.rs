//! `bench --estimate DEVICE` on a small set: the bytes it counts per chunk are the decode function's
//! stored weights (as `inspect` reports them) plus its I/O tensors (KV caches read and written), and
//! the times are the calibrated roofline's arithmetic on those bytes; wider caches (ctx) and wider
//! weights (bit width) cost more, faster memory less; unknown devices are a usage error.

mod setkit;

use setkit::{model, run};
use std::path::{Path, PathBuf};
use std::process::Output;

fn json(o: &Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("JSON")
}

fn build(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let m = model("tiny-e2b");
    let mut a = vec![
        "--model",
        m.as_str(),
        "--variant",
        "swa4",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ];
    a.extend_from_slice(extra);
    assert!(run(&a).status.success());
    out
}

fn estimate(set: &Path, device: &str) -> serde_json::Value {
    json(&run(&[
        "bench",
        "--chunks",
        set.to_str().unwrap(),
        "--estimate",
        device,
        "--json",
    ]))
}

fn dim_bytes(ty: &str) -> u64 {
    // "tensor<fp16, [1, 1, 64]>" as `inspect --json` prints it
    let (dt, dims) = ty.split_once(", [").unwrap();
    let n: u64 = dims
        .trim_end_matches("]>")
        .split(',')
        .map(|d| d.trim().parse::<u64>().unwrap())
        .product();
    n * if dt.contains("16") { 2 } else { 4 }
}

#[test]
fn estimate_counts_weights_and_io_and_applies_the_roofline() {
    let tmp = tempfile::tempdir().unwrap();
    let set = build(tmp.path(), "int4", &["--nbits", "4", "--ctx", "64"]);
    let e = estimate(&set, "iphone17pro");
    let cal = &e["calibration"];
    let (c, eff_gbs, host) = (
        cal["chunk_overhead_ms"].as_f64().unwrap(),
        cal["effective_gbs"].as_f64().unwrap(),
        cal["host_ms"].as_f64().unwrap(),
    );
    let chunks = e["chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), 4);
    let mut total_ms = host;
    for ch in chunks {
        let name = ch["name"].as_str().unwrap();
        let insp = json(&run(&[
            "inspect",
            set.join(format!("{name}.mlpackage")).to_str().unwrap(),
            "--json",
        ]));
        let f = insp["packages"][0]["functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "decode_q1")
            .unwrap();
        let weights: u64 = f["weight_bytes_by_storage"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(ch["weight_bytes"].as_u64(), Some(weights), "{name}");
        let (mut kv, mut other) = (0u64, 0u64);
        for t in f["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .chain(f["outputs"].as_array().unwrap())
        {
            let n = t["name"].as_str().unwrap();
            let b = dim_bytes(t["type"].as_str().unwrap());
            if n.starts_with("K_") || n.starts_with("V_") || n.starts_with("kv1") {
                kv += b;
            } else {
                other += b;
            }
        }
        assert_eq!(ch["kv_bytes"].as_u64(), Some(kv), "{name}");
        assert_eq!(ch["other_io_bytes"].as_u64(), Some(other), "{name}");
        total_ms += c + (weights + kv + other) as f64 / (eff_gbs * 1e6);
    }
    let est = &e["estimates"][0];
    assert_eq!(est["device"], "iphone17pro");
    let got = est["ms_per_token"].as_f64().unwrap();
    assert!((got - total_ms).abs() < 1e-9, "{got} vs {total_ms}");
    // the calibration reproduces the published 31.6 / 34.2 tok/s within 5 %
    for chk in cal["check"].as_array().unwrap().iter().take(2) {
        let (m, g) = (
            chk["measured_tok_s"].as_f64().unwrap(),
            chk["estimated_tok_s"].as_f64().unwrap(),
        );
        assert!((g / m - 1.0).abs() < 0.05, "{chk}");
    }

    // more context → bigger full-attention caches → more bytes and time; fp16 weights cost more
    // than 4-bit ones; faster memory is faster
    let long = build(tmp.path(), "int4-long", &["--nbits", "4", "--ctx", "256"]);
    let dense = build(tmp.path(), "fp16", &["--nbits", "0", "--ctx", "64"]);
    let ms = |v: &serde_json::Value| v["estimates"][0]["ms_per_token"].as_f64().unwrap();
    let kv_of = |v: &serde_json::Value| -> u64 {
        v["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["kv_bytes"].as_u64().unwrap())
            .sum()
    };
    let e_long = estimate(&long, "iphone17pro");
    assert!(kv_of(&e_long) > kv_of(&e) && ms(&e_long) > ms(&e));
    assert!(ms(&estimate(&dense, "iphone17pro")) > ms(&e));
    let all = estimate(&set, "all");
    let m4 = all["estimates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device"] == "m4max")
        .unwrap();
    assert!(m4["ms_per_token"].as_f64().unwrap() < got);
    assert!(all["estimates"].as_array().unwrap().len() >= 5);
}

#[test]
fn unknown_device_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let set = build(tmp.path(), "s", &["--nbits", "4", "--ctx", "64"]);
    let o = run(&[
        "bench",
        "--chunks",
        set.to_str().unwrap(),
        "--estimate",
        "pixel9",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("pixel9") && err.contains("iphone17pro"),
        "{err}"
    );
}
