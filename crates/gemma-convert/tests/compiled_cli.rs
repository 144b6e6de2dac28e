//! `--format mlmodelc|both` end to end: sets of compiled bundles give the package sets' logits bit
//! for bit (parity reports and the raw logits of every step), `both` writes the same packages and
//! bundles side by side, `rebuild` reproduces a bundle set, and `compile` (Core ML's compiler)
//! refuses to run off macOS.

use mil_runtime::backend::BackendKind;
use mil_runtime::chunkset::{ChunkSet, SideFileEmbedder};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gemma-convert"))
        .args(args)
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .expect("binary runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn build(model: &str, out: &Path, extra: &[&str]) {
    let m = fixtures().join("models").join(model);
    let mut a = vec!["--model", s(&m), "--ctx", "64", "--out", s(out), "--quiet"];
    a.extend_from_slice(extra);
    let o = run(&a);
    assert!(o.status.success(), "{model} {extra:?}: {}", text(&o));
}

fn parity(model: &str, set: &Path, extra: &[&str]) -> serde_json::Value {
    let m = fixtures().join("models").join(model);
    let g = fixtures()
        .join("goldens")
        .join(format!("{model}.safetensors"));
    let mut a = vec!["parity", "--model", s(&m), "--chunks", s(set), "--json"];
    // `--reference-weights graph` compares with the reference forward on the set's own weights
    if !extra.contains(&"graph") {
        a.extend(["--golden", s(&g)]);
    }
    a.extend_from_slice(extra);
    let o = run(&a);
    assert!(o.status.success(), "{model} parity {extra:?}: {}", text(&o));
    let mut v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // wall times, and the verify report of the set (its files and path), are the only fields
    // that may differ between two runs
    if let Some(m) = v.as_object_mut() {
        m.remove("verify");
    }
    fn drop_times(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.retain(|k, _| !k.ends_with("_ms"));
                m.values_mut().for_each(drop_times);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(drop_times),
            _ => {}
        }
    }
    drop_times(&mut v);
    v
}

fn entries(dir: &Path, ext: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(ext))
        .collect();
    v.sort();
    v
}

/// Feed the same tokens through both sets and require identical logits bits at every step.
fn same_logits(a: &Path, b: &Path, steps: u32) {
    let mut sa = ChunkSet::open(a, BackendKind::Cpu).unwrap();
    let mut sb = ChunkSet::open(b, BackendKind::Cpu).unwrap();
    let ea = SideFileEmbedder::open(a, sa.config()).unwrap();
    let eb = SideFileEmbedder::open(b, sb.config()).unwrap();
    let (mut xa, mut xb) = (sa.session(), sb.session());
    let mut token = 2u32;
    for step in 0..steps {
        let oa = xa.step(token, &ea, true).unwrap();
        let ob = xb.step(token, &eb, true).unwrap();
        let bits = |v: &Option<Vec<f32>>| {
            v.as_ref()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&oa.logits), bits(&ob.logits), "step {step}");
        assert_eq!(oa.token_id, ob.token_id);
        token = oa.token_id;
    }
}

#[test]
fn mlmodelc_sets_give_the_package_sets_logits_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    for model in ["tiny-e2b", "tiny-e2b-release", "tiny-gqa", "tiny-pal"] {
        let (p, c) = (
            tmp.path().join(format!("{model}-p")),
            tmp.path().join(format!("{model}-c")),
        );
        let dense = ["--nbits", "0", "--precision", "fp32"];
        build(model, &p, &dense);
        build(model, &c, &[&dense[..], &["--format", "mlmodelc"]].concat());
        assert_eq!(
            entries(&c, ".mlmodelc"),
            [
                "chunk1.mlmodelc",
                "chunk2.mlmodelc",
                "chunk3.mlmodelc",
                "chunk4.mlmodelc"
            ]
        );
        assert!(
            entries(&c, ".mlpackage").is_empty(),
            "{model}: packages left"
        );
        for f in [
            "model.mil",
            "weights/weight.bin",
            "coremldata.bin",
            "metadata.json",
        ] {
            assert!(c.join("chunk1.mlmodelc").join(f).is_file(), "{model}: {f}");
        }
        let (rp, rc) = (
            parity(model, &p, &["--tolerance", "fp32"]),
            parity(model, &c, &["--tolerance", "fp32"]),
        );
        assert_eq!(rp["pass"], true, "{model}: {rp}");
        assert_eq!(rc, rp, "{model}: parity of the bundle set differs");
        same_logits(&p, &c, 20);
    }
}

#[test]
fn int4_multifunction_and_prefill_bundles_match_their_packages() {
    let tmp = tempfile::tempdir().unwrap();
    let model = "tiny-pal";
    let (p, c) = (tmp.path().join("p"), tmp.path().join("c"));
    let flags = [
        "--nbits",
        "4",
        "--precision",
        "fp32",
        "--functions",
        "decode,verify:2,prefill:4",
    ];
    build(model, &p, &flags);
    build(model, &c, &[&flags[..], &["--format", "mlmodelc"]].concat());
    let mil = std::fs::read_to_string(c.join("chunk1.mlmodelc/model.mil")).unwrap();
    assert!(mil.starts_with("program(1.3)\n"), "{}", &mil[..200]);
    for needle in [
        "    func decode_q1<ios18>(",
        "    func verify_qK<ios18>(",
        "constexpr_lut_to_dense(indices = tensor<uint4, [",
        "(BLOBFILE(path = string(\"@model_path/weights/weight.bin\"), offset = uint64(",
    ] {
        assert!(mil.contains(needle), "chunk1 model.mil lacks `{needle}`");
    }
    let pre = std::fs::read_to_string(c.join("prefill_chunk1.mlmodelc/model.mil")).unwrap();
    assert!(pre.contains("    func main<ios18>("));
    let meta = std::fs::read_to_string(c.join("chunk1.mlmodelc/metadata.json")).unwrap();
    assert!(
        meta.contains("\"defaultFunctionName\" : \"decode_q1\""),
        "{meta}"
    );
    assert!(meta.contains("\"Ios18.constexprLutToDense\""), "{meta}");
    let extra = [
        "--prefill",
        "--reference-weights",
        "graph",
        "--tolerance",
        "fp32",
    ];
    let (rp, rc) = (parity(model, &p, &extra), parity(model, &c, &extra));
    assert_eq!(rp["pass"], true, "{rp}");
    assert_eq!(rc, rp);
    same_logits(&p, &c, 12);
}

#[test]
fn both_writes_the_same_packages_and_bundles_and_rebuild_reproduces_bundles() {
    let tmp = tempfile::tempdir().unwrap();
    let model = "tiny-e2b";
    let (p, c, both) = (
        tmp.path().join("p"),
        tmp.path().join("c"),
        tmp.path().join("both"),
    );
    build(model, &p, &[]);
    build(model, &c, &["--format", "mlmodelc"]);
    build(model, &both, &["--format", "both"]);
    for chunk in ["chunk1", "chunk4"] {
        for (from, ext) in [(&p, "mlpackage"), (&c, "mlmodelc")] {
            let name = format!("{chunk}.{ext}");
            for f in walk(&from.join(&name)) {
                assert_eq!(
                    std::fs::read(from.join(&name).join(&f)).unwrap(),
                    std::fs::read(both.join(&name).join(&f)).unwrap(),
                    "{name}/{f}"
                );
            }
        }
    }
    // the recorded command carries --format, so rebuild writes the bundles again
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.join("manifest.json")).unwrap()).unwrap();
    let cmd: Vec<&str> = manifest["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        cmd.windows(2).any(|w| w == ["--format", "mlmodelc"]),
        "{cmd:?}"
    );
    let again = tmp.path().join("again");
    let o = run(&["rebuild", s(&c), "--out", s(&again)]);
    assert!(o.status.success(), "{}", text(&o));
    // inspect reads bundles too
    let o = run(&["inspect", s(&c.join("chunk1.mlmodelc")), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["packages"][0]["default_function"], "decode_q1");
    // a bad --format is a usage error naming the flag, nothing written
    let bad = tmp.path().join("bad");
    let m = fixtures().join("models").join(model);
    let o = run(&["--model", s(&m), "--out", s(&bad), "--format", "zip"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--format"), "{}", text(&o));
    assert!(!bad.exists());
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    assert!(!out.is_empty());
    out
}

#[cfg(not(target_vendor = "apple"))]
#[test]
fn compile_needs_macos_and_exits_2_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run(&["compile", s(tmp.path())]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("macOS"), "{}", text(&o));
    assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none());
}
