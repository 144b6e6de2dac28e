//! Long contexts (issue 13 item 4) on a fixture: `swa4` and `flash` built at ctx 8192 pass fp32
//! parity with the checkpoint's exact embeddings — against the HF golden, and against the reference forward on a prompt that crosses a
//! flash key block (1024 keys) and reaches far past the sliding window, through a batched prefill,
//! its write-back and decode steps. The full-size ctx 8192 builds are measured by
//! `scripts/bench_ctx8k.sh` (docs/PERFORMANCE.md).

mod setkit;

use setkit::{fixtures, json, text};
use std::process::{Command, Output};

const CTX: usize = 8192;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gemma-convert"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("binary runs")
}

#[test]
fn ctx_8192_swa4_and_flash_pass_fp32_parity_on_a_fixture() {
    let model = fixtures().join("models/tiny-e2b");
    let model = model.to_str().unwrap();
    let golden = fixtures().join("goldens/tiny-e2b.safetensors");
    // a prompt of 1040 tokens: one batched prefill call over positions 0..1023 (past the first
    // 1024-key flash block boundary at the last row), 16 more through decode_q1, then 4 greedy steps
    let ids: Vec<String> = std::iter::once(2u32)
        .chain((0..1039u32).map(|i| 3 + (i * 7919 + 13) % 509))
        .map(|t| t.to_string())
        .collect();
    let ids = ids.join(",");
    let ctx = CTX.to_string();
    for variant in ["swa4", "flash"] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("set");
        let set = out.to_str().unwrap();
        let o = run(&[
            "--model",
            model,
            "--variant",
            variant,
            "--nbits",
            "0",
            "--precision",
            "fp32",
            "--ctx",
            &ctx,
            "--functions",
            "decode,prefill:1024",
            "--out",
            set,
            "--quiet",
        ]);
        assert!(o.status.success(), "{variant}: {}", text(&o));
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("model_config.json")).unwrap()).unwrap();
        assert_eq!(cfg["context_length"], CTX, "{variant}");

        // the full-attention caches are ctx long: the inspected decode I/O carries 8192 slots
        let o = run(&["inspect", set, "--json"]);
        assert!(o.status.success(), "{variant}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("8192"),
            "{variant}: no ctx-long I/O in inspect"
        );

        let o = run(&[
            "parity",
            "--model",
            model,
            "--chunks",
            set,
            "--golden",
            golden.to_str().unwrap(),
            "--embeddings",
            "checkpoint",
            "--tolerance",
            "fp32",
            "--json",
        ]);
        assert!(o.status.success(), "{variant} vs golden: {}", text(&o));
        let r = json(&o);
        assert_eq!(r["pass"], true, "{variant}: {r}");
        assert_eq!(r["top1_agreement"], 1.0, "{variant}: {r}");

        let o = run(&[
            "parity",
            "--model",
            model,
            "--chunks",
            set,
            "--ids",
            &ids,
            "--prefill",
            "--decode-tokens",
            "4",
            "--embeddings",
            "checkpoint",
            "--tolerance",
            "fp32",
            "--json",
        ]);
        assert!(o.status.success(), "{variant} vs reference: {}", text(&o));
        let r = json(&o);
        eprintln!(
            "{variant} ctx {CTX}: {} positions, max |Δlogit| {}, top-1 {}, mean KL {}",
            r["positions"], r["max_abs_logit_diff"], r["top1_agreement"], r["mean_kl"]
        );
        assert_eq!(r["pass"], true, "{variant}: {r}");
        let per = r["per_position"].as_array().expect("per-position figures");
        let positions: Vec<u64> = per.iter().filter_map(|x| x["position"].as_u64()).collect();
        assert!(
            positions.contains(&1023) && positions.contains(&1039) && positions.contains(&1043),
            "{variant}: compared positions {positions:?}"
        );
    }
}
