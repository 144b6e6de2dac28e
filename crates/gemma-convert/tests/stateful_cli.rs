//! Stateful chunk sets from the command line: build, `parity` (with `--prefill` / `--batch`, against
//! a golden or the graph-weights reference), `parity --turns`, `bench` and `inspect`, and the
//! usage errors (exit 2, nothing written).

mod setkit;

use setkit::{fixtures, json, model, run, text};
use std::path::Path;
use std::process::Output;

fn golden(file: &str) -> String {
    fixtures().join("goldens").join(file).display().to_string()
}

fn build(m: &str, out: &Path, extra: &[&str]) -> Output {
    let mut a = vec![
        "--model",
        m,
        "--ctx",
        "64",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ];
    a.extend_from_slice(extra);
    run(&a)
}

#[test]
fn stateful_parity_turns_bench_and_inspect() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("set");
    let set = out.to_str().unwrap();
    let m = model("tiny-e2b");
    let o = build(
        &m,
        &out,
        &[
            "--variant",
            "stateful3",
            "--nbits",
            "0",
            "--precision",
            "fp32",
            "--functions",
            "decode,prefill_b:8,4",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    for name in ["chunk_1", "chunk_2", "chunk_3"] {
        assert!(out.join(format!("{name}.mlpackage")).is_dir());
    }
    assert!(!out.join("chunk_4.mlpackage").exists());
    let g = golden("tiny-e2b.safetensors");
    // the engine's batch (8), then an explicit one (4): every position within fp32
    for (extra, batch) in [(vec!["--prefill"], 8), (vec!["--batch", "4"], 4)] {
        let mut a = vec![
            "parity", "--model", &m, "--chunks", set, "--golden", &g, "--json",
        ];
        a.extend(extra.iter().copied());
        let o = run(&a);
        assert!(o.status.success(), "{}", text(&o));
        let r = json(&o);
        assert_eq!(r["pass"], true, "{r}");
        assert_eq!(r["tolerance"], "fp32");
        assert_eq!(r["positions"], 28);
        assert_eq!(r["batch"], batch);
        assert_eq!(r["chunks"], 3);
        assert_eq!(r["prompt_calls"][0]["t"], batch);
    }
    // two turns
    let turns = golden("tiny-e2b.turns.safetensors");
    let o = run(&[
        "parity", "--model", &m, "--chunks", set, "--turns", &turns, "--batch", "4", "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r = json(&o);
    assert_eq!(r["pass"], true, "{r}");
    let res: Vec<(String, u64)> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["turn"].as_str().unwrap().to_string(),
                x["resumed_at"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        res,
        [
            ("turn1".to_string(), 0),
            ("turn2.extend".to_string(), 28),
            ("turn2.edit_last".to_string(), 27),
            ("turn2.diverge".to_string(), 8)
        ]
    );
    let o = run(&["parity", "--model", &m, "--chunks", set, "--turns", &turns]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("ring snapshot at 8"), "{}", text(&o));
    // bench
    let o = run(&[
        "bench",
        "--chunks",
        set,
        "--tokens",
        "4",
        "--warmup",
        "1",
        "--prefill",
        "--prompt-tokens",
        "24",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r = json(&o);
    assert_eq!(r["prefill"]["batch"], 8);
    assert_eq!(r["prefill"]["calls"], 3);
    assert!(r["decode"]["tokens_per_second"].as_f64().unwrap() > 0.0);
    assert!(r["second_turn"]["speedup"].as_f64().unwrap() > 0.0);
    assert_eq!(r["second_turn"]["resumed_at"], 24 + 1 + 4);
    // the manifest's recorded options rebuild the same bytes
    let again = tmp.path().join("again");
    let o = run(&["rebuild", set, "--out", again.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    // inspect shows the states
    let o = run(&[
        "inspect",
        &out.join("chunk_1.mlpackage").display().to_string(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("state<tensor<fp32"), "{}", text(&o));
}

#[test]
fn int4_stateful_bundles_match_their_own_graph_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("set");
    let m = model("tiny-pal");
    let o = build(
        &m,
        &out,
        &[
            "--variant",
            "stateful",
            "--nbits",
            "4",
            "--precision",
            "fp32",
            "--functions",
            "decode,prefill_b:4",
            "--format",
            "mlmodelc",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    // compiled bundles only: the host loads `chunk_N.mlmodelc` as the engine does
    for name in ["chunk_1", "chunk_2", "chunk_3", "chunk_4"] {
        assert!(
            out.join(format!("{name}.mlmodelc/coremldata.bin"))
                .is_file()
        );
        assert!(!out.join(format!("{name}.mlpackage")).exists());
    }
    let o = run(&[
        "parity",
        "--model",
        &m,
        "--chunks",
        out.to_str().unwrap(),
        "--reference-weights",
        "graph",
        "--tolerance",
        "fp32",
        "--batch",
        "4",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r = json(&o);
    assert_eq!(r["pass"], true, "{r}");
    assert_eq!(r["reference"], "reference-forward(f32, graph weights)");
}

#[test]
fn stateful_usage_errors_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model("tiny-e2b");
    // a batch wider than the window, and prefill_b on a non-stateful variant: nothing written
    for extra in [
        vec![
            "--variant",
            "stateful",
            "--functions",
            "decode,prefill_b:16",
        ],
        vec!["--variant", "swa4", "--functions", "decode,prefill_b:4"],
        vec!["--variant", "stateful", "--functions", "decode,verify:2"],
    ] {
        let out = tmp.path().join("bad");
        let o = build(&m, &out, &extra);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", text(&o));
        assert!(!out.exists());
    }
    let st = tmp.path().join("st");
    assert!(
        build(
            &m,
            &st,
            &[
                "--variant",
                "stateful",
                "--nbits",
                "0",
                "--functions",
                "decode,prefill_b:4"
            ]
        )
        .status
        .success()
    );
    let swa = tmp.path().join("swa");
    assert!(build(&m, &swa, &["--nbits", "0"]).status.success());
    let (st, swa) = (st.to_str().unwrap(), swa.to_str().unwrap());
    let g = golden("tiny-e2b.safetensors");
    let turns = golden("tiny-e2b.turns.safetensors");
    for (args, needle) in [
        (
            vec!["--chunks", st, "--golden", &g, "--batch", "8"],
            "--batch",
        ),
        (
            vec!["--chunks", swa, "--golden", &g, "--batch", "4"],
            "--batch",
        ),
        (
            vec!["--chunks", swa, "--turns", &turns],
            "not a stateful set",
        ),
        (vec!["--chunks", st, "--turns", &g], "--turns"),
    ] {
        let mut a = vec!["parity", "--model", &m];
        a.extend(args);
        let o = run(&a);
        assert_eq!(o.status.code(), Some(2), "{a:?}: {}", text(&o));
        assert!(text(&o).contains(needle), "{a:?}: {}", text(&o));
    }
}
