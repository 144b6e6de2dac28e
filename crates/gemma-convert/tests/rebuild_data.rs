//! `rebuild` re-runs the build options recorded in `manifest.json` as data: the recorded command
//! line is only shown (a garbled one still rebuilds the same packages), and recorded options that
//! break the contract are refused naming the field.

mod setkit;

use setkit::{edit_json, model, run, text};
use std::path::{Path, PathBuf};
use std::process::Output;

fn rebuild(set: &Path, out: &Path) -> Output {
    run(&[
        "rebuild",
        set.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ])
}

#[test]
fn rebuild_reads_the_options_not_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let set = tmp.path().join("set");
    let m = model("tiny-e2b");
    let o = run(&[
        "--model",
        &m,
        "--ctx",
        "64",
        "--nbits",
        "0",
        "--variant",
        "wfa",
        "--fw",
        "16",
        "--out",
        set.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(set.join("manifest.json")).unwrap()).unwrap();
    let command: Vec<&str> = recorded["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        command,
        [
            "gemma-convert",
            "--model",
            &m,
            "--variant",
            "wfa",
            "--nbits",
            "0",
            "--group-size",
            "32",
            "--ctx",
            "64",
            "--precision",
            "fp16",
            "--functions",
            "decode",
            "--fw",
            "16"
        ],
        "the canonical command, rendered from the options"
    );
    assert_eq!(recorded["build"]["variant"]["fw"], 16);

    // a garbled command line: the packages rebuild from the recorded options all the same
    edit_json(&set.join("manifest.json"), |v| {
        v["command"] = serde_json::json!(["gemma-convert", "--no-such-flag"]);
    });
    let out: PathBuf = tmp.path().join("again");
    let o = rebuild(&set, &out);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        report["differ"],
        serde_json::json!(["manifest.json"]),
        "only the manifest (its command) may differ: {report}"
    );
    assert!(report["same"].as_u64().unwrap() > 10, "{report}");
}

#[test]
fn recorded_options_off_the_contract_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let set = tmp.path().join("set");
    let o = run(&[
        "--model",
        &model("tiny-e2b"),
        "--ctx",
        "64",
        "--nbits",
        "0",
        "--only",
        "side",
        "--out",
        set.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // a part has no manifest: rebuild says so
    let o = rebuild(&set, &tmp.path().join("x"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("manifest.json"), "{}", text(&o));
    // a manifest whose recorded nbits has no MIL index type
    let full = tmp.path().join("full");
    let o = run(&[
        "--model",
        &model("tiny-e2b"),
        "--ctx",
        "64",
        "--nbits",
        "0",
        "--out",
        full.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    edit_json(&full.join("manifest.json"), |v| {
        v["build"]["nbits"] = 5.into()
    });
    let out = tmp.path().join("y");
    let o = rebuild(&full, &out);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("nbits"), "{}", text(&o));
    assert!(!out.exists(), "nothing written");
}
