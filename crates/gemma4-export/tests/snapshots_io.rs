//! Snapshots (insta) of every chunk's I/O table and op counts for each fixture, swa4 fp16 INT4 at
//! ctx 64 — a change to the emitted graphs shows up here as a reviewed diff.

use gemma4_export::build::{BuildOptions, Functions, NoProgress, build};
use gemma4_export::{Quant, Variant};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

fn table(model: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("set");
    let opts = BuildOptions {
        model_dir: root.join("fixtures/models").join(model),
        model_source: model.into(),
        variant: Variant::Swa4,
        ctx: 64,
        fp32: false,
        quant: Quant {
            nbits: 4,
            group_size: 32,
        },
        functions: Functions::parse("decode").unwrap(),
        only: None,
        threads: None,
        zip: false,
        force: false,
        out: out.clone(),
        model_name: None,
        dump_after: None,
    };
    let report = build(&opts, &NoProgress).unwrap();
    let mut s = String::new();
    for p in &report.packages {
        let pkg = mlpackage::read_package(&out.join(format!("{}.mlpackage", p.name))).unwrap();
        for (fname, f) in &pkg.program.functions {
            writeln!(s, "{} [{}..{}] {fname}", p.name, p.layers[0], p.layers[1]).unwrap();
            for i in &f.inputs {
                writeln!(s, "  in  {:<24} {}", i.name, i.ty).unwrap();
            }
            for o in &f.block.outputs {
                let ty = f
                    .find_value(o)
                    .map(|v| v.ty.to_string())
                    .unwrap_or_default();
                writeln!(s, "  out {o:<24} {ty}").unwrap();
            }
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for op in &f.block.operations {
                *counts.entry(op.op_type.as_str()).or_default() += 1;
            }
            let c: Vec<String> = counts.iter().map(|(k, n)| format!("{k}:{n}")).collect();
            writeln!(s, "  ops {} = {}", f.block.operations.len(), c.join(" ")).unwrap();
        }
    }
    s
}

#[test]
fn chunk_io_and_op_counts() {
    for model in ["tiny-e2b", "tiny-e2b-release", "tiny-gqa", "tiny-pal"] {
        insta::assert_snapshot!(format!("swa4_int4_{model}"), table(model));
    }
}
