//! The I/O contracts of `verify_qK` and prefill, and the packages that carry them:
//!
//! * `verify_qK` of the tiny-pal fixture at ctx 64, K = 3 equals the reference pipeline's
//!   (`fixtures/reference-io/chunk{1..4}.json`) name by name, shape by shape, dtype by dtype — in the
//!   plan, in the emitted function and in the written package's description;
//! * the E2B-shaped contracts of §2.6 / §2.7 of the pipeline spec;
//! * multi-function packages: `decode_q1` (default) + `verify_qK` share one weight blob set, and the
//!   decode function is the one a decode-only build writes; prefill packages nest in the decode
//!   chunks' parts; coremltools 9.0 accepts every package; bad `--functions` values are refused.

mod common;

use chunkset::compare_sets;
use common::{Table, e2b_like, fixture, io_table, plan_of, reference, table_of, weights};
use gemma4_export::build::{BuildOptions, NoProgress, SIDE_PART, assemble, build};
use gemma4_export::emit::{VERIFY_FN, emit_function};
use gemma4_export::{
    ChunkPlan, Compression, FunctionKind, IoTensor, ModelLayout, NBits, Precision, Variant,
};
use std::path::Path;

fn dtype_name(d: mil::DType) -> String {
    match d {
        mil::DType::F16 => "float16",
        mil::DType::F32 => "float32",
        mil::DType::I32 => "int32",
        other => panic!("unexpected I/O dtype {other}"),
    }
    .to_string()
}

fn opts(model: &str, out: &Path, fp32: bool, int4: bool, functions: &str) -> BuildOptions {
    common::opts(model, out)
        .precision(Precision::from_fp32(fp32))
        .compression(if int4 {
            Compression::int(NBits::B4)
        } else {
            Compression::Dense
        })
        .functions(functions.parse().unwrap())
        .threads(1)
}

fn tiny_pal_plan() -> (gemma4::Checkpoint, ChunkPlan) {
    let ckpt = gemma4::Checkpoint::open(fixture("tiny-pal")).unwrap();
    let layout = ModelLayout::from_config(ckpt.config());
    let plan = plan_of(&layout, Variant::Swa4, 64);
    (ckpt, plan)
}

#[test]
fn tiny_pal_verify_io_matches_reference_in_plan_and_emitted_function() {
    let (ckpt, plan) = tiny_pal_plan();
    assert_eq!(plan.chunks.len(), 4);
    for chunk in &plan.chunks {
        let r = reference(&chunk.name);
        let f = &r["functions"][VERIFY_FN];
        let (ins, outs) = plan.verify_io(chunk, 3);
        assert_eq!(
            table_of(&ins),
            io_table(&f["inputs"]),
            "{} inputs",
            chunk.name
        );
        assert_eq!(
            table_of(&outs),
            io_table(&f["outputs"]),
            "{} outputs",
            chunk.name
        );

        let mut w = weights(&ckpt, false, Compression::Dense);
        let func = emit_function(&plan, chunk, FunctionKind::Verify { k: 3 }, &mut w).unwrap();
        mil::validate::validate_function(VERIFY_FN, &func).unwrap();
        let sig = mil_runtime::signature_of(&func);
        let table = |v: &[mil_runtime::IoSpec]| -> Table {
            v.iter()
                .map(|s| {
                    let t = s.ty.as_ref().unwrap();
                    (
                        s.name.clone(),
                        t.static_shape().unwrap(),
                        dtype_name(t.dtype),
                    )
                })
                .collect()
        };
        assert_eq!(table(&sig.inputs), io_table(&f["inputs"]), "{}", chunk.name);
        assert_eq!(
            table(&sig.outputs),
            io_table(&f["outputs"]),
            "{}",
            chunk.name
        );
    }
}

#[test]
fn e2b_verify_and_prefill_io_match_the_pipeline_spec() {
    let layout = e2b_like(35, 20, 1536, 8, (256, 512), 512, 256, 6144);
    let plan = plan_of(&layout, Variant::Swa4, 2048);
    let get = |v: &[IoTensor], n: &str| -> Vec<usize> {
        v.iter()
            .find(|t| t.name == n)
            .unwrap_or_else(|| panic!("no {n}"))
            .shape
            .clone()
    };
    let names = |v: &[IoTensor]| v.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    // §2.6, K = 3
    let (i1, o1) = plan.verify_io(&plan.chunks[0], 3);
    assert_eq!(get(&i1, "update_indicator"), vec![1, 1, 2048, 3]);
    assert_eq!(get(&i1, "causal_mask_sliding"), vec![1, 1, 3, 512]);
    assert_eq!(get(&i1, "per_layer_raw"), vec![1, 3, 8960]);
    assert_eq!(get(&i1, "K_sliding_in"), vec![7, 1, 512, 512]);
    assert_eq!(get(&o1, "new_K_sliding"), vec![7, 1, 3, 256]);
    assert_eq!(get(&o1, "new_V_full"), vec![1, 1, 3, 512]);
    let (_, o2) = plan.verify_io(&plan.chunks[1], 3);
    assert_eq!(get(&o2, "new_K_sliding"), vec![5, 1, 3, 256]);
    assert_eq!(get(&o2, "new_K_full"), vec![2, 1, 3, 512]);
    assert_eq!(get(&o2, "kv14_k"), vec![1, 1, 2048, 512]);
    let (i3, _) = plan.verify_io(&plan.chunks[2], 3);
    assert!(!names(&i3).contains(&"update_indicator".to_string()));
    let (_, o4) = plan.verify_io(&plan.chunks[3], 3);
    assert_eq!(
        table_of(&o4)[0],
        ("token_ids".into(), vec![1, 3], "int32".into())
    );
    assert_eq!(names(&o4), vec!["token_ids", "hidden_states_out"]);

    // §2.7, N = 1024
    let n = 1024;
    let pre = plan.prefill_chunks(n).unwrap();
    let pnames: Vec<_> = pre
        .iter()
        .map(|c| (c.name.clone(), c.layers.clone()))
        .collect();
    assert_eq!(
        pnames,
        vec![
            ("prefill_chunk1".into(), 0..8),
            ("prefill_chunk2".into(), 8..15),
            ("prefill_chunk3".into(), 15..25),
            ("prefill_chunk4".into(), 25..35)
        ]
    );
    let (i1, o1) = plan.prefill_io(&pre[0], n);
    assert_eq!(
        names(&i1),
        vec![
            "hidden_states",
            "causal_mask",
            "per_layer_raw",
            "cos_s",
            "sin_s",
            "cos_f",
            "sin_f"
        ]
    );
    assert_eq!(get(&i1, "causal_mask"), vec![1, 1, n, n]);
    let mut want = vec![
        "hidden_states_out".to_string(),
        "per_layer_combined_out".into(),
    ];
    for j in 0..8 {
        want.push(format!("K{j}"));
        want.push(format!("V{j}"));
    }
    assert_eq!(names(&o1), want);
    assert_eq!(get(&o1, "K4"), vec![1, 1, n, 512]);
    assert_eq!(get(&o1, "V7"), vec![1, 1, n, 256]);
    assert_eq!(get(&o1, "per_layer_combined_out"), vec![1, n, 8960]);
    let (_, o2) = plan.prefill_io(&pre[1], n);
    let mut want = vec!["hidden_states_out".to_string()];
    for j in 0..5 {
        want.push(format!("K{j}"));
        want.push(format!("V{j}"));
    }
    want.extend(["kv13_k", "kv13_v", "kv14_k", "kv14_v"].map(String::from));
    assert_eq!(names(&o2), want);
    assert_eq!(get(&o2, "K1"), vec![1, 1, n, 512], "K1 = L9 (full)");
    assert_eq!(get(&o2, "kv13_k"), vec![1, 1, n, 256]);
    assert_eq!(get(&o2, "kv14_v"), vec![1, 1, n, 512]);
    let kv2 = plan.prefill_kv_outputs(&pre[1]);
    let layers: Vec<_> = kv2.iter().map(|k| (k.layer, k.k.clone())).collect();
    assert_eq!(
        layers,
        vec![
            (8, "K0".into()),
            (9, "K1".into()),
            (10, "K2".into()),
            (11, "K3".into()),
            (12, "K4".into()),
            (13, "kv13_k".into()),
            (14, "kv14_k".into())
        ]
    );
    let (i3, o3) = plan.prefill_io(&pre[2], n);
    assert_eq!(get(&i3, "kv14_k"), vec![1, 1, n, 512]);
    assert_eq!(names(&o3), vec!["hidden_states_out"]);
    let (i4, o4) = plan.prefill_io(&pre[3], n);
    assert_eq!(get(&i4, "last_position_mask"), vec![1, n, 1]);
    assert_eq!(names(&o4), vec!["token_id", "token_logit"]);
    // the prefill cut nests in every variant's decode chunks
    for v in [
        Variant::Merged,
        Variant::Merged2,
        Variant::Merged1,
        Variant::Lite,
    ] {
        let p = plan_of(&layout, v.clone(), 2048);
        for c in &pre {
            assert!(p.containing_chunk(c).is_some(), "{v:?}: {}", c.name);
        }
    }
    assert!(plan.check_verify(513).is_err());
    assert!(plan.prefill_chunks(2049).is_err());
}

fn weight_bin(pkg: &Path) -> Vec<u8> {
    std::fs::read(pkg.join("Data/com.apple.CoreML/weights/weight.bin")).unwrap()
}

#[test]
fn verify_joins_the_chunk_packages_sharing_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let dec = tmp.path().join("decode");
    let both = tmp.path().join("both");
    build(&opts("tiny-pal", &dec, false, true, "decode"), &NoProgress).unwrap();
    let report = build(
        &opts("tiny-pal", &both, false, true, "decode,verify:3"),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(report.packages.len(), 4);
    for p in &report.packages {
        assert_eq!(p.functions, vec!["decode_q1", "verify_qK"], "{}", p.name);
        let a = dec.join(format!("{}.mlpackage", p.name));
        let b = both.join(format!("{}.mlpackage", p.name));
        // weights: the verify function reuses every blob of decode
        let (wa, wb) = (weight_bin(&a), weight_bin(&b));
        assert!(
            wa == wb,
            "{}: weight.bin differs ({} vs {} bytes)",
            p.name,
            wa.len(),
            wb.len()
        );
        let pa = mlpackage::read_package(&a).unwrap();
        let pb = mlpackage::read_package(&b).unwrap();
        assert_eq!(pb.description.default_function_name(), "decode_q1");
        let text = |p: &mlpackage::Package| {
            mil::printer::print_program(&mil::Program::single(
                "decode_q1",
                p.program.functions["decode_q1"].clone(),
            ))
        };
        assert_eq!(text(&pa), text(&pb), "{}: decode_q1 changed", p.name);
        // the written description of verify_qK is the reference's
        let r = reference(&p.name);
        let iface = pb.description.interface("verify_qK").unwrap();
        let table = |f: &[mlpackage::Feature]| -> Table {
            f.iter()
                .map(|x| {
                    let a = x.array_type().unwrap();
                    (
                        x.name.clone(),
                        a.shape.iter().map(|&d| d as usize).collect(),
                        dtype_name(a.dtype),
                    )
                })
                .collect()
        };
        assert_eq!(
            table(iface.inputs),
            io_table(&r["functions"]["verify_qK"]["inputs"])
        );
        assert_eq!(
            table(iface.outputs),
            io_table(&r["functions"]["verify_qK"]["outputs"])
        );
    }
    let mc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(both.join("model_config.json")).unwrap())
            .unwrap();
    assert_eq!(mc["verify_k"], 3);
    assert_eq!(mc["verify_function"], "verify_qK");
    assert!(mc.get("prefill_chunks").is_none());
    let plain: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dec.join("model_config.json")).unwrap())
            .unwrap();
    assert!(
        plain.get("verify_k").is_none(),
        "decode-only sets are unchanged"
    );
}

#[test]
fn prefill_packages_travel_with_their_decode_chunk_parts() {
    let tmp = tempfile::tempdir().unwrap();
    let f = "decode,verify:2,prefill:16";
    let full = tmp.path().join("full");
    let report = build(&opts("tiny-e2b", &full, false, true, f), &NoProgress).unwrap();
    let names: Vec<_> = report.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "chunk1",
            "prefill_chunk1",
            "chunk2",
            "prefill_chunk2",
            "chunk3",
            "prefill_chunk3",
            "chunk4",
            "prefill_chunk4"
        ]
    );
    for p in &report.packages {
        if p.name.starts_with("prefill_") {
            assert_eq!(p.functions, vec!["main"]);
            let pkg = mlpackage::read_package(&full.join(format!("{}.mlpackage", p.name))).unwrap();
            assert!(!pkg.description.is_multifunction(), "{}", p.name);
        }
    }
    let mc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(full.join("model_config.json")).unwrap())
            .unwrap();
    assert_eq!(mc["prefill_length"], 16);
    assert_eq!(mc["verify_k"], 2);
    assert_eq!(
        mc["chunks"].as_array().unwrap().len(),
        4,
        "decode chunks only"
    );
    let pc = mc["prefill_chunks"].as_array().unwrap();
    assert_eq!(pc.len(), 4);
    assert_eq!(pc[0]["name"], "prefill_chunk1");
    assert_eq!(pc[0]["kv"][0]["k"], "K0");
    // tiny-e2b's chunk2 holds exactly the two producers (L3 sliding, L4 full)
    let kv2: Vec<_> = pc[1]["kv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["layer"].as_u64().unwrap(),
                e["k"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(kv2, vec![(3, "kv13_k".into()), (4, "kv14_k".into())]);
    // --only parts assemble into the same bytes
    let mut parts = Vec::new();
    for part in ["chunk1", "chunk2", "chunk3", "chunk4", SIDE_PART] {
        let dir = tmp.path().join(format!("part-{part}"));
        build(
            &opts("tiny-e2b", &dir, false, true, f).only(part),
            &NoProgress,
        )
        .unwrap();
        parts.push(dir);
    }
    let joined = tmp.path().join("joined");
    assemble(&parts, &joined, false).unwrap();
    let diff = compare_sets(&full, &joined).unwrap();
    assert!(diff.is_identical(), "assembled set differs: {diff:?}");
    // thread count does not change a byte
    let two = tmp.path().join("two");
    build(
        &opts("tiny-e2b", &two, false, true, f).threads(2),
        &NoProgress,
    )
    .unwrap();
    assert!(compare_sets(&full, &two).unwrap().is_identical());
}

#[test]
fn bad_function_options_are_refused_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    for (f, what) in [
        ("decode,verify:17", "verify:17"),
        ("decode,prefill:65", "prefill:65"),
    ] {
        let out = tmp.path().join("set");
        let err = build(&opts("tiny-pal", &out, false, false, f), &NoProgress).unwrap_err();
        assert!(err.to_string().contains(what), "{err}");
        assert!(!out.exists());
    }
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

/// Multi-function chunk packages and prefill packages pass coremltools 9.0's checks (proto, pymil
/// rebuild with type inference, blob walk, constexpr materialisation).
#[test]
fn coremltools_accepts_verify_and_prefill_packages() {
    for (model, fp32, int4, f) in [
        ("tiny-pal", false, true, "decode,verify:3,prefill:32"),
        ("tiny-gqa", true, false, "decode,verify:4,prefill:16"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("set");
        let report = build(&opts(model, &out, fp32, int4, f), &NoProgress).unwrap();
        assert_eq!(report.packages.len(), 8);
        // a prefill chunk shares its decode twin's weight file, which also holds the decode
        // function's own constants (the RoPE matrices): accepted as the twin's, nothing else
        let shared = chunkset::ChunkSetManifest::read(&out)
            .unwrap()
            .build
            .shared_weights
            .unwrap();
        assert!(!shared.is_empty());
        for p in &report.packages {
            let pkg = out.join(format!("{}.mlpackage", p.name));
            let twin = shared
                .iter()
                .find(|s| s.prefill == p.name)
                .map(|s| out.join(format!("{}.mlpackage", s.decode)));
            mlpackage::coremltools_check::check_package(
                &pkg,
                &mlpackage::coremltools_check::CheckOptions {
                    materialize: int4,
                    shared_with: twin,
                    ..Default::default()
                },
            )
            .unwrap_or_else(|e| panic!("{model} {f} {}: {e}", p.name));
        }
    }
}
