//! What the device runtime relies on beyond parity: decode/prefill weight files it can hard-link,
//! the `merged` set as the app's default topology, EAGLE-3 taps and verify logits, and the
//! reference pipeline's op forms.

mod common;

use chunkset::{ChunkSetManifest, SharedWeights};
use common::opts;
use gemma4_export::Variant;
use gemma4_export::build::{Functions, NoProgress, build};
use std::collections::BTreeSet;
use std::path::Path;

const FIXTURES: [&str; 4] = ["tiny-e2b", "tiny-e2b-release", "tiny-gqa", "tiny-pal"];

fn weight_bin(set: &Path, chunk: &str) -> Vec<u8> {
    std::fs::read(set.join(format!(
        "{chunk}.mlpackage/Data/com.apple.CoreML/weights/weight.bin"
    )))
    .unwrap()
}

/// Every blob record of the package's weight file.
fn records(set: &Path, chunk: &str) -> BTreeSet<u64> {
    let r = mlpackage::BlobReader::open(&set.join(format!(
        "{chunk}.mlpackage/Data/com.apple.CoreML/weights/weight.bin"
    )))
    .unwrap();
    r.records().map(|r| r.offset).collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<SharedWeights> {
    v.iter()
        .map(|(d, p)| SharedWeights {
            decode: d.to_string(),
            prefill: p.to_string(),
        })
        .collect()
}

/// Decode and prefill chunks holding the same layers get byte-identical weight files (same blobs,
/// order and offsets), each package referencing every blob of its file (nothing is carried
/// unused); the manifest lists exactly those pairs. Prefill of 24 positions is longer than every
/// fixture's sliding window, so the sliding band of prefill is in the graphs.
#[test]
fn decode_and_prefill_twins_share_byte_identical_weight_files() {
    let four = [
        ("chunk1", "prefill_chunk1"),
        ("chunk2", "prefill_chunk2"),
        ("chunk3", "prefill_chunk3"),
        ("chunk4", "prefill_chunk4"),
    ];
    let mut cases: Vec<(&str, Variant, Vec<SharedWeights>)> = Vec::new();
    for model in FIXTURES {
        cases.push((model, Variant::Swa4, pairs(&four)));
        cases.push((
            model,
            Variant::Merged,
            pairs(&[
                ("chunk1", "prefill_chunk1"),
                ("chunk3_3way", "prefill_chunk4"),
            ]),
        ));
        cases.push((model, Variant::Wfa { fw: 32 }, pairs(&four)));
        cases.push((model, Variant::Flash { block: 16 }, pairs(&four)));
    }
    for v in [Variant::Merged2, Variant::Merged1, Variant::Lite] {
        cases.push(("tiny-e2b", v, Vec::new()));
    }
    let functions: Functions = "decode,verify:2,prefill:24".parse().unwrap();
    for (model, variant, want) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("set");
        let what = format!("{model} {}", variant.name());
        build(
            &opts(model, &out)
                .variant(variant.clone())
                .functions(functions.clone()),
            &NoProgress,
        )
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        let m = ChunkSetManifest::read(&out).unwrap();
        assert_eq!(m.build.shared_weights.as_ref(), Some(&want), "{what}");
        for p in &want {
            assert!(
                weight_bin(&out, &p.decode) == weight_bin(&out, &p.prefill),
                "{what}: {} and {} weight files differ",
                p.decode,
                p.prefill
            );
            let sha = |c: &str| {
                let path = format!("{c}.mlpackage/Data/com.apple.CoreML/weights/weight.bin");
                m.files
                    .iter()
                    .find(|f| f.path == path)
                    .unwrap()
                    .sha256
                    .clone()
            };
            assert_eq!(sha(&p.decode), sha(&p.prefill), "{what}: manifest hashes");
        }
        let refs =
            |c: &str| mlpackage::referenced_blobs(&out.join(format!("{c}.mlpackage"))).unwrap();
        let chunks = m.build.chunks.iter();
        for c in chunks.chain(m.build.prefill_chunks.iter().flatten()) {
            let (mine, all) = (refs(&c.name), records(&out, &c.name));
            match want.iter().find(|p| p.prefill == c.name) {
                // a prefill twin carries its decode chunk's file: the blobs it leaves unused are
                // exactly the decode function's own (the RoPE matrices of `rope=matmul`), nothing
                // else
                Some(p) => {
                    let decode = refs(&p.decode);
                    assert!(mine.is_subset(&decode), "{what}: {}", c.name);
                    let unused: BTreeSet<u64> = all.difference(&mine).copied().collect();
                    let decode_only: BTreeSet<u64> = decode.difference(&mine).copied().collect();
                    assert_eq!(unused, decode_only, "{what}: {} unused blobs", c.name);
                    assert!(unused.len() <= 4, "{what}: {} unused {unused:?}", c.name);
                }
                None => assert_eq!(
                    mine, all,
                    "{what}: {} references exactly the blobs of its weight file",
                    c.name
                ),
            }
        }
    }
}

fn e2b_layout() -> gemma4_export::ModelLayout {
    let p = common::root().join("fixtures/configs/gemma-4-e2b.json");
    let cfg = gemma4::config::Gemma4Config::from_file(&p).unwrap();
    gemma4_export::ModelLayout::from_config(&cfg)
}

/// The taps of the E2B config as CoreML-LLM reads them: `hidden_at_L8` from chunk2, `hidden_at_L17`
/// from chunk3, `hidden_at_L34` from chunk4 (pre-final-norm), each `[1, 1, 1536]` fp16, from the
/// decode function only, after the chunk's other outputs (`conversion/build_eagle3_chunks.py`,
/// `ChunkedEngine.predictStep`); `logits_fp16` `[1, K, 262144]` fp16 from chunk4's verify function
/// (`ChunkedEngine.verifyCandidatesWithLogits`). `merged` carries L8 and L17 in chunk2_3way.
#[test]
fn e2b_taps_have_the_runtime_names_shapes_and_places() {
    use gemma4_export::{FunctionKind, IoDType, Taps};
    let layout = e2b_layout();
    let taps = Taps {
        eagle3: true,
        verify_logits: true,
    };
    let outs = |variant: Variant, chunk: &str, kind: FunctionKind| {
        let mut plan = common::plan_of(&layout, variant, 2048);
        plan.taps = taps;
        let c = plan.chunk(chunk).unwrap().clone();
        plan.io(&c, kind).1
    };
    let tap = |l: usize| {
        (
            format!("hidden_at_L{l}"),
            vec![1, 1, 1536],
            IoDType::Float16,
        )
    };
    let tail = |v: &[gemma4_export::IoTensor], n: usize| -> Vec<(String, Vec<usize>, IoDType)> {
        v[v.len() - n..]
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone(), t.dtype))
            .collect()
    };
    let d = FunctionKind::Decode;
    assert!(
        outs(Variant::Swa4, "chunk1", d)
            .iter()
            .all(|t| !t.name.starts_with("hidden_at"))
    );
    assert_eq!(tail(&outs(Variant::Swa4, "chunk2", d), 1), vec![tap(8)]);
    assert_eq!(tail(&outs(Variant::Swa4, "chunk3", d), 1), vec![tap(17)]);
    assert_eq!(tail(&outs(Variant::Swa4, "chunk4", d), 1), vec![tap(34)]);
    assert_eq!(
        tail(&outs(Variant::Merged, "chunk2_3way", d), 2),
        vec![tap(8), tap(17)]
    );
    assert_eq!(
        tail(&outs(Variant::Merged, "chunk3_3way", d), 1),
        vec![tap(34)]
    );
    let verify = FunctionKind::Verify { k: 3 };
    let v4 = outs(Variant::Swa4, "chunk4", verify);
    assert_eq!(
        tail(&v4, 1),
        vec![(
            "logits_fp16".to_string(),
            vec![1, 3, 262144],
            IoDType::Float16
        )]
    );
    assert!(v4.iter().all(|t| !t.name.starts_with("hidden_at")));
    assert!(
        outs(Variant::Swa4, "chunk3", verify)
            .iter()
            .all(|t| t.name != "logits_fp16")
    );
    // prefill has no taps
    let mut plan = common::plan_of(&layout, Variant::Swa4, 2048);
    plan.taps = taps;
    for p in plan.prefill_chunks(1024).unwrap() {
        let (_, o) = plan.io(&p, FunctionKind::Prefill { n: 1024 });
        assert!(
            o.iter()
                .all(|t| !t.name.starts_with("hidden_at") && t.name != "logits_fp16")
        );
    }
}

/// A set built with `--precision fp32 --nbits 0`, the given forms and taps and functions.
fn fp32_set(
    model: &str,
    variant: Variant,
    forms: gemma4_export::GraphForms,
    taps: gemma4_export::Taps,
    functions: &str,
    out: &Path,
) {
    build(
        &opts(model, out)
            .variant(variant)
            .precision(gemma4_export::Precision::Fp32)
            .compression(gemma4_export::Compression::Dense)
            .functions(functions.parse().unwrap())
            .forms(forms)
            .taps(taps),
        &NoProgress,
    )
    .unwrap_or_else(|e| panic!("{model}: {e}"));
}

/// The golden prompt followed by its greedy continuation.
fn golden_ids(model: &str) -> (gemma4::golden::Golden, Vec<u32>) {
    let g = gemma4::golden::Golden::load(
        common::root().join(format!("fixtures/goldens/{model}.safetensors")),
    )
    .unwrap();
    let ids = g
        .input_ids
        .iter()
        .chain(&g.decode_input_ids)
        .copied()
        .collect();
    (g, ids)
}

/// EAGLE-3 taps read from the packages on disk, step by step, equal the reference forward's output
/// of the same layer at the same position (`gemma4::Taps`, fp32), on every fixture, for swa4 and
/// merged; and `logits_fp16` of verify equals the verify function's logits rounded to fp16.
#[test]
fn taps_equal_the_reference_forwards_layer_outputs() {
    use gemma4_export::{GraphForms, Taps};
    let taps = Taps {
        eagle3: true,
        verify_logits: true,
    };
    for (model, variant) in FIXTURES
        .iter()
        .map(|m| (*m, Variant::Swa4))
        .chain([("tiny-e2b", Variant::Merged)])
    {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("set");
        fp32_set(
            model,
            variant.clone(),
            GraphForms::default(),
            taps,
            "decode,verify:3",
            &out,
        );
        let m = common::Model::open(model);
        let mut plan = m.plan(variant.clone(), 64, true);
        plan.taps = taps;
        let layers = chunkset::eagle3_layers(m.layout.num_layers());
        let mut host = common::Host::open(&m, plan.clone(), &out);
        let reference = gemma4::Reference::load(&m.ckpt, gemma4::DType::F32).unwrap();
        let mut state = reference.new_state();
        let (_, ids) = golden_ids(model);
        let mut kv = common::Kv::new();
        let mut worst = 0f32;
        for (p, &t) in ids.iter().enumerate() {
            let step = host.decode(&mut kv, p, t);
            let mut rt = gemma4::Taps::default();
            reference.forward(&[t], &mut state, Some(&mut rt)).unwrap();
            for &l in &layers {
                let ci = plan
                    .chunks
                    .iter()
                    .position(|c| c.layers.contains(&l))
                    .unwrap();
                let got = common::values(&step.outputs[ci][&format!("hidden_at_L{l}")]);
                let want: Vec<f32> = rt.layer_outputs[l]
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let scale = want.iter().fold(1f32, |a, x| a.max(x.abs()));
                let d = common::max_diff(&got, &want) / scale;
                worst = worst.max(d);
                assert!(
                    d <= 1e-4,
                    "{model} {variant:?} L{l} at {p}: relative {d:.2e}"
                );
            }
        }
        // verify at the start of the window: logits_fp16 is the verify logits in fp16
        let mut kv = common::Kv::new();
        for (p, &t) in ids[..2].iter().enumerate() {
            host.decode(&mut kv, p, t);
        }
        let ver = host.verify(&kv, 2, &ids[2..5]);
        let head = ver.outputs.last().unwrap();
        let lf = &head["logits_fp16"];
        assert_eq!(lf.dtype(), mil::DType::F16, "{model}: logits_fp16 dtype");
        assert_eq!(lf.shape(), &[1, 3, m.layout.vocab]);
        let rounded: Vec<f32> = ver
            .logits
            .iter()
            .map(|&x| half::f16::from_f32(x).to_f32())
            .collect();
        assert_eq!(common::values(lf), rounded, "{model}: logits_fp16");
        eprintln!("{model} {variant:?}: taps {layers:?} max relative diff {worst:.2e}");
    }
}

/// Op census of one function of a package on disk.
fn ops(set: &Path, chunk: &str, function: &str) -> std::collections::BTreeMap<String, usize> {
    let pkg = mlpackage::read_package(&set.join(format!("{chunk}.mlpackage"))).unwrap();
    let mut m = std::collections::BTreeMap::new();
    for op in &pkg.program.functions[function].block.operations {
        *m.entry(op.op_type.clone()).or_default() += 1;
    }
    m
}

/// Every op form, the reference pipeline's and the lean one, computes what HF computes: decode at
/// every golden position, verify (K = 3 at positions 2..5) and prefill (the golden prompt, longer
/// than the window) through the CPU interpreter at fp32, on a single-KV-head and a GQA fixture
/// (and flash decoding with the repeated K/V); the chosen forms are what the graphs contain.
#[test]
fn every_op_form_matches_golden_through_the_interpreter() {
    use gemma4_export::GraphForms;
    let mixed: GraphForms = "softmax=native,gqa=repeat".parse().unwrap();
    for (model, variant, forms) in [
        ("tiny-e2b", Variant::Swa4, GraphForms::reference()),
        ("tiny-e2b", Variant::Swa4, GraphForms::lean()),
        ("tiny-gqa", Variant::Swa4, GraphForms::reference()),
        ("tiny-gqa", Variant::Swa4, GraphForms::lean()),
        ("tiny-gqa", Variant::Swa4, mixed),
        (
            "tiny-gqa",
            Variant::Flash { block: 16 },
            GraphForms::reference(),
        ),
    ] {
        let what = format!("{model} {} {forms}", variant.name());
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("set");
        fp32_set(
            model,
            variant.clone(),
            forms,
            gemma4_export::Taps::none(),
            "decode,verify:3,prefill:16",
            &out,
        );
        // the graphs carry the chosen forms
        let census = ops(&out, "chunk1", "decode_q1");
        let has = |op: &str| census.get(op).copied().unwrap_or(0) > 0;
        use chunkset::{GqaForm, LayoutForm, SoftmaxForm};
        assert_eq!(
            has("softmax"),
            forms.softmax == SoftmaxForm::Native,
            "{what}: {census:?}"
        );
        assert_eq!(
            has("reduce_max"),
            forms.softmax == SoftmaxForm::Decomposed,
            "{what}"
        );
        assert_eq!(
            has("tile"),
            forms.gqa == GqaForm::Repeat,
            "{what}: {census:?}"
        );
        assert_eq!(
            has("transpose"),
            forms.layout == LayoutForm::Transpose,
            "{what}"
        );

        let (golden, ids) = golden_ids(model);
        let v = golden.vocab;
        let mut want: Vec<&[f32]> = golden.logits.chunks(v).collect();
        want.extend(golden.decode_logits.chunks(v));
        let m = common::Model::open(model);
        let exact = common::Exact(&m);
        // decode
        let mut set =
            mil_runtime::chunkset::ChunkSet::open(&out, mil_runtime::BackendKind::Cpu).unwrap();
        let mut s = set.session();
        for (p, &t) in ids.iter().enumerate() {
            let got = s.step(t, &exact, true).unwrap().logits.unwrap();
            let d = common::max_diff(&got, want[p]);
            assert!(d <= 2e-3, "{what}: decode at {p}: {d}");
            assert_eq!(common::argmax(&got), common::argmax(want[p]), "{what}: {p}");
        }
        // prefill
        assert_eq!(set.load_prefill().unwrap(), 16);
        let mut s = set.session();
        let prompt = &golden.input_ids;
        let got = s.prefill(prompt, &exact, true).unwrap().logits.unwrap();
        let d = common::max_diff(&got, want[prompt.len() - 1]);
        assert!(d <= 2e-3, "{what}: prefill {d}");
        // verify
        let mut plan = m.plan(variant.clone(), 64, true);
        plan.forms = forms;
        let mut host = common::Host::open(&m, plan, &out);
        let mut kv = common::Kv::new();
        for (p, &t) in ids[..2].iter().enumerate() {
            host.decode(&mut kv, p, t);
        }
        let ver = host.verify(&kv, 2, &ids[2..5]);
        for j in 0..3 {
            let row = &ver.logits[j * v..(j + 1) * v];
            let d = common::max_diff(row, want[2 + j]);
            assert!(d <= 2e-3, "{what}: verify row {j}: {d}");
            assert_eq!(
                ver.tokens[j] as usize,
                common::argmax(want[2 + j]),
                "{what}"
            );
        }
    }
}

/// The load-time checks of CoreML-LLM's `ChunkedEngine.load` (and the file list of its downloader)
/// on a set directory, as far as they can be checked without Core ML: which decode topology the
/// files select, `causal_mask_full`'s width against `model_config.json`'s `context_length` for every
/// decode chunk, the prefill set complete, and the chunk boundaries the engine derives from
/// `model_config.json` (`ModelConfig.chunkBoundaries`) equal to the packages' layers.
fn swift_engine_accepts(set: &Path) -> Result<&'static str, String> {
    let cfg = chunkset::ModelConfig::read(set).map_err(|e| e.to_string())?;
    let has = |n: &str| set.join(format!("{n}.mlpackage")).exists();
    let (topology, decode): (&str, Vec<&str>) = if has("chunk2_3way") && has("chunk3_3way") {
        ("Topology II", vec!["chunk1", "chunk2_3way", "chunk3_3way"])
    } else {
        ("4-chunk", vec!["chunk1", "chunk2", "chunk3", "chunk4"])
    };
    let io = |n: &str| -> Result<mil::Function, String> {
        let p = mlpackage::read_package(&set.join(format!("{n}.mlpackage")))
            .map_err(|_| format!("{n} not found"))?;
        let f = p.description.default_function_name().to_string();
        p.program
            .functions
            .get(&f)
            .cloned()
            .ok_or_else(|| format!("{n}: no function {f}"))
    };
    for n in &decode {
        let f = io(n)?;
        let mask = f
            .inputs
            .iter()
            .find(|i| i.name == "causal_mask_full")
            .ok_or_else(|| format!("{n}: no causal_mask_full"))?;
        let width = match &mask.ty {
            mil::ValueType::Tensor(t) => t.static_shape().and_then(|s| s.last().copied()),
            _ => None,
        };
        if width != Some(cfg.context_length) {
            return Err(format!(
                "{n}: causal_mask_full expects ctx={width:?} but model_config.json says {}",
                cfg.context_length
            ));
        }
    }
    // ModelConfig.chunkBoundaries: own_end = full producer + 1, c1 = (own_end + 1) / 2,
    // c3 = own_end + (L − own_end) / 2
    let l = cfg.num_layers;
    let shared_from = l - cfg.num_kv_shared_layers;
    let full_producer = (0..shared_from)
        .rev()
        .find(|&i| cfg.layer_types[i] == chunkset::LayerKind::Full)
        .ok_or("no full producer")?;
    let own_end = full_producer + 1;
    let (c1, c3) = (own_end.div_ceil(2), own_end + (l - own_end) / 2);
    let bounds = [[0, c1], [c1, own_end], [own_end, c3], [c3, l]];
    let layers = |n: &str| cfg.chunks.iter().find(|c| c.name == n).map(|c| c.layers);
    let want: Vec<[usize; 2]> = if topology == "Topology II" {
        vec![bounds[0], [c1, c3], bounds[3]]
    } else {
        bounds.to_vec()
    };
    let got: Vec<Option<[usize; 2]>> = decode.iter().map(|n| layers(n)).collect();
    if got != want.iter().map(|b| Some(*b)).collect::<Vec<_>>() {
        return Err(format!(
            "decode chunks {got:?}, the engine expects {want:?}"
        ));
    }
    if has("prefill_chunk1") {
        for (i, b) in bounds.iter().enumerate() {
            let n = format!("prefill_chunk{}", i + 1);
            let p = cfg.prefill_chunks().iter().find(|c| c.name == n);
            if !has(&n) || p.map(|c| c.layers) != Some(*b) {
                return Err(format!("{n}: missing or not layers {b:?}"));
            }
        }
    }
    Ok(topology)
}

/// `merged` is the app's default set as one build: chunk1 (the same program and weights as swa4's
/// chunk1), chunk2_3way, chunk3_3way (the I/O of swa4's chunk2 and chunk4) and the 4-chunk prefill
/// (the same packages as swa4's), loadable by the engine's Topology II path; every variant the
/// contract says the Swift runtime loads passes the engine's load checks, and every other fails
/// them.
#[test]
fn merged_is_the_apps_three_chunk_set_and_loaders_match_the_contract() {
    let tmp = tempfile::tempdir().unwrap();
    let functions = "decode,verify:2,prefill:16";
    let built = |v: Variant| {
        let out = tmp.path().join(v.name());
        build(
            &opts("tiny-e2b", &out)
                .variant(v)
                .functions(functions.parse().unwrap()),
            &NoProgress,
        )
        .unwrap();
        out
    };
    let swa4 = built(Variant::Swa4);
    let merged = built(Variant::Merged);
    let mut packages: Vec<String> = std::fs::read_dir(&merged)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".mlpackage"))
        .collect();
    packages.sort();
    assert_eq!(
        packages,
        [
            "chunk1",
            "chunk2_3way",
            "chunk3_3way",
            "prefill_chunk1",
            "prefill_chunk2",
            "prefill_chunk3",
            "prefill_chunk4"
        ]
        .map(|n| format!("{n}.mlpackage"))
    );
    let program = |set: &Path, n: &str| {
        mlpackage::read_package(&set.join(format!("{n}.mlpackage")))
            .unwrap()
            .program
    };
    for (m, s) in [
        ("chunk1", "chunk1"),
        ("prefill_chunk1", "prefill_chunk1"),
        ("prefill_chunk2", "prefill_chunk2"),
        ("prefill_chunk3", "prefill_chunk3"),
        ("prefill_chunk4", "prefill_chunk4"),
    ] {
        // the same program, weight values included
        assert_eq!(program(&merged, m), program(&swa4, s), "{m} vs swa4 {s}");
    }
    // and the same weight files where both sets write the package beside the same decode chunk
    // (swa4's prefill_chunk2 / 3 share chunk2's / chunk3's file, with those decode functions' RoPE
    // matrices in it; merged writes them alone)
    for (m, s) in [
        ("chunk1", "chunk1"),
        ("prefill_chunk1", "prefill_chunk1"),
        ("prefill_chunk4", "prefill_chunk4"),
    ] {
        assert!(
            weight_bin(&merged, m) == weight_bin(&swa4, s),
            "{m}: weights"
        );
    }
    let sig = |set: &Path, n: &str| {
        let f = &program(set, n).functions["decode_q1"];
        let ins: Vec<_> = f
            .inputs
            .iter()
            .map(|i| (i.name.clone(), i.ty.clone()))
            .collect();
        let outs: Vec<_> = f
            .block
            .outputs
            .iter()
            .map(|o| (o.clone(), f.find_value(o).map(|v| v.ty.clone())))
            .collect();
        (ins, outs)
    };
    assert_eq!(sig(&merged, "chunk2_3way"), sig(&swa4, "chunk2"));
    assert_eq!(sig(&merged, "chunk3_3way"), sig(&swa4, "chunk4"));
    assert_eq!(swift_engine_accepts(&merged), Ok("Topology II"));
    assert_eq!(swift_engine_accepts(&swa4), Ok("4-chunk"));
    // built chunk by chunk (CI matrices), the weight twins come out the same
    let mut parts = Vec::new();
    for part in [
        "chunk1",
        "chunk2_3way",
        "chunk3_3way",
        gemma4_export::build::SIDE_PART,
    ] {
        let dir = tmp.path().join(format!("part-{part}"));
        build(
            &opts("tiny-e2b", &dir)
                .variant(Variant::Merged)
                .functions(functions.parse().unwrap())
                .only(part),
            &NoProgress,
        )
        .unwrap();
        parts.push(dir);
    }
    let joined = tmp.path().join("joined");
    gemma4_export::build::assemble(&parts, &joined, false).unwrap();
    let diff = chunkset::compare_sets(&merged, &joined).unwrap();
    assert!(
        diff.is_identical(),
        "assembled merged set differs: {diff:?}"
    );

    for v in [
        Variant::Flash { block: 16 },
        Variant::Wfa { fw: 32 },
        Variant::Merged2,
        Variant::Merged1,
        Variant::Lite,
    ] {
        let set = built(v.clone());
        let accepted = swift_engine_accepts(&set);
        assert_eq!(
            accepted.is_ok(),
            v.runtime().swift.is_some(),
            "{}: the engine's checks say {accepted:?}, the contract says {:?}",
            v.name(),
            v.runtime()
        );
    }
}

/// The compiled bundles the app downloads (`.mlmodelc`, what it hard-links) keep the twins'
/// weight files identical: `weights/weight.bin` of `chunk{i}.mlmodelc` and of
/// `prefill_chunk{i}.mlmodelc`.
#[test]
fn compiled_twins_share_byte_identical_weight_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("set");
    build(
        &opts("tiny-pal", &out)
            .variant(Variant::Merged)
            .functions("decode,verify:2,prefill:24".parse().unwrap())
            .format(chunkset::OutputFormat::Mlmodelc),
        &NoProgress,
    )
    .unwrap();
    let w = |c: &str| std::fs::read(out.join(format!("{c}.mlmodelc/weights/weight.bin"))).unwrap();
    for (d, p) in [
        ("chunk1", "prefill_chunk1"),
        ("chunk3_3way", "prefill_chunk4"),
    ] {
        assert!(w(d) == w(p), "{d}.mlmodelc vs {p}.mlmodelc");
    }
    assert!(w("chunk2_3way") != w("prefill_chunk2"));
    assert!(!out.join("chunk1.mlpackage").exists());
}
