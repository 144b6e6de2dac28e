//! Pass tests: dead-code elimination, const deduplication, and the pipeline (named pipelines,
//! dump-after hook, stop-after, validation after the last pass).

use half::f16;
use mil::passes::dce::DeadCodeElimination;
use mil::passes::dedup::ConstDeduplication;
use mil::passes::{Pass, PassError, Pipeline};
use mil::{
    Binding, DType, FunctionBuilder, Program, ProgramBuilder, TensorType, TensorValue, validate,
};

fn op_types(p: &Program, f: &str) -> Vec<String> {
    p.functions[f]
        .block
        .operations
        .iter()
        .map(|o| format!("{}:{}", o.op_type, o.name))
        .collect()
}

fn single(b: FunctionBuilder) -> Program {
    let mut pb = ProgramBuilder::new();
    pb.add_function("main", b.finish().unwrap()).unwrap();
    pb.build().unwrap()
}

#[test]
fn dce_removes_unused_ops_and_keeps_inputs_and_side_effects() {
    let mut b = FunctionBuilder::new("main");
    let x = b
        .input("x", TensorType::new(DType::F16, &[1, 4, 8]))
        .unwrap();
    let _unused_input = b
        .input("unused", TensorType::new(DType::F16, &[2]))
        .unwrap();
    let cache = b
        .state_input("cache", TensorType::new(DType::F16, &[1, 4, 8]))
        .unwrap();
    let dead = b.mul("dead", &x, 3.0).unwrap(); // const + mul, both dead
    let _dead2 = b.exp("dead2", &dead).unwrap();
    let upd = b.add("upd", &x, 1.0).unwrap(); // only used by write_state
    b.write_state("wr", &cache, &upd).unwrap();
    let y = b.relu("y", &x).unwrap();
    b.output("y", &y).unwrap();
    let mut p = single(b);
    let changed = DeadCodeElimination.run(&mut p);
    assert_eq!(changed, 3);
    assert_eq!(
        op_types(&p, "main"),
        ["const:upd_y_0", "add:upd", "write_state:wr", "relu:y"]
    );
    assert_eq!(p.functions["main"].inputs.len(), 3);
    assert_eq!(validate(&p), Ok(()));
    // idempotent
    assert_eq!(DeadCodeElimination.run(&mut p), 0);
}

#[test]
fn dedup_merges_equal_literals_within_a_function() {
    let mut b = FunctionBuilder::new("main");
    let x = b.input("x", TensorType::new(DType::F16, &[2, 3])).unwrap();
    let a = b.mul("a", &x, 0.5).unwrap();
    let c = b.mul("c", &a, 0.5).unwrap(); // same fp16 0.5 literal → merged into a_y_0
    let d = b.add("d", &c, 0.5).unwrap(); // same again
    let e = b.add("e", &d, 2.0).unwrap(); // different value: kept
    let x32 = b.input("x32", TensorType::new(DType::F32, &[2])).unwrap();
    let g = b.mul("g", &x32, 0.5).unwrap(); // fp32 0.5: different type, kept
    let w = TensorValue::from_f16(&[4, 3], &[f16::from_f32(0.25); 12]).unwrap();
    let l1 = b.linear("l1", &e, w.clone(), None).unwrap();
    let l2 = b.linear("l2", &e, w.clone(), None).unwrap(); // weight and zero bias merged
    let s = b.add("s", &l1, &l2).unwrap();
    // an exported const is never removed (its name is part of the interface)
    let exported = b
        .constant("exported", TensorValue::scalar_f16(f16::from_f32(0.5)))
        .unwrap();
    b.output("s", &s).unwrap();
    b.output("g", &g).unwrap();
    b.output("exported", &exported).unwrap();
    let mut p = single(b);
    let n_before = p.functions["main"].block.operations.len();
    let changed = ConstDeduplication::default().run(&mut p);
    assert_eq!(changed, 4, "{:#?}", op_types(&p, "main"));
    assert_eq!(p.functions["main"].block.operations.len(), n_before - 4);
    let f = &p.functions["main"];
    let find = |n: &str| f.block.operations.iter().find(|o| o.name == n).unwrap();
    assert_eq!(find("c").input_name("y"), Some("a_y_0"));
    assert_eq!(find("d").input_name("y"), Some("a_y_0"));
    assert_eq!(find("e").input_name("y"), Some("e_y_0"));
    assert_eq!(find("g").input_name("y"), Some("g_y_0"));
    assert_eq!(find("l2").input_name("weight"), Some("l1_weight_0"));
    assert_eq!(find("l2").input_name("bias"), Some("l1_bias_0"));
    assert!(f.block.operations.iter().any(|o| o.name == "exported"));
    assert_eq!(validate(&p), Ok(()));
    assert_eq!(ConstDeduplication::default().run(&mut p), 0);
}

#[test]
fn dedup_threshold_keeps_small_literals() {
    let mut b = FunctionBuilder::new("main");
    let x = b.input("x", TensorType::new(DType::F16, &[2, 16])).unwrap();
    let a = b.mul("a", &x, 0.5).unwrap();
    let c = b.mul("c", &a, 0.5).unwrap();
    let w = TensorValue::from_f16(&[16], &[f16::ONE; 16]).unwrap();
    let d = b.mul("d", &c, w.clone()).unwrap();
    let e = b.mul("e", &d, w).unwrap();
    b.output("e", &e).unwrap();
    let mut p = single(b);
    let pass = ConstDeduplication { min_elements: 10 };
    assert_eq!(pass.run(&mut p), 1);
    let f = &p.functions["main"];
    let find = |n: &str| f.block.operations.iter().find(|o| o.name == n).unwrap();
    assert_eq!(find("c").input_name("y"), Some("c_y_0"));
    assert_eq!(find("e").input_name("y"), Some("d_y_0"));
    assert_eq!(validate(&p), Ok(()));
}

#[test]
fn dedup_merges_constexpr_ops_and_not_across_functions() {
    let idx =
        TensorValue::from_bytes(TensorType::new(DType::U4, &[8, 4]), vec![0x10u8; 16]).unwrap();
    let lut = TensorValue::from_f16(&[1, 1, 16, 1], &[f16::from_f32(0.1); 16]).unwrap();
    let mut pb = ProgramBuilder::new();
    for fname in ["a", "b"] {
        pb.function(fname, |b| {
            let x = b.input("x", TensorType::new(DType::F16, &[1, 4]))?;
            let w1 = b.lut_to_dense("w1", idx.clone(), lut.clone())?;
            let w2 = b.lut_to_dense("w2", idx.clone(), lut.clone())?;
            let y1 = b.linear("y1", &x, &w1, None)?;
            let y2 = b.linear("y2", &x, &w2, None)?;
            let y = b.add("y", &y1, &y2)?;
            b.output("y", &y)
        })
        .unwrap();
    }
    let mut p = pb.build().unwrap();
    // per function: w2 and y2's zero bias merge into w1 / y1's bias
    assert_eq!(ConstDeduplication::default().run(&mut p), 4);
    for f in ["a", "b"] {
        let ops = op_types(&p, f);
        assert!(!ops.iter().any(|o| o.ends_with(":w2")), "{ops:?}");
        let y2 = p.functions[f]
            .block
            .operations
            .iter()
            .find(|o| o.name == "y2")
            .unwrap();
        assert_eq!(y2.input_name("weight"), Some("w1"));
    }
    assert_eq!(validate(&p), Ok(()));
}

#[test]
fn pipelines() {
    let build = || {
        let mut b = FunctionBuilder::new("main");
        let x = b.input("x", TensorType::new(DType::F32, &[3])).unwrap();
        let _dead = b.mul("dead", &x, 3.0).unwrap();
        let a = b.mul("a", &x, 2.0).unwrap();
        let c = b.mul("c", &a, 2.0).unwrap();
        b.output("c", &c).unwrap();
        single(b)
    };
    let pl = Pipeline::named("default").unwrap();
    assert_eq!(
        pl.pass_names(),
        ["dead_code_elimination", "const_deduplication"]
    );
    let mut p = build();
    let report = pl.run(&mut p).unwrap();
    assert_eq!(
        report.runs.iter().map(|r| r.changed).collect::<Vec<_>>(),
        [2, 1]
    );
    assert!(report.dumps.is_empty());
    assert_eq!(op_types(&p, "main"), ["const:a_y_0", "mul:a", "mul:c"]);
    // dump after a pass, as MIL text
    let mut p = build();
    let report = Pipeline::named("default")
        .unwrap()
        .dump_after("dead_code_elimination")
        .unwrap()
        .run(&mut p)
        .unwrap();
    assert_eq!(report.dumps.len(), 1);
    let (pass, text) = &report.dumps[0];
    assert_eq!(pass, "dead_code_elimination");
    assert!(text.contains("c_y_0") && !text.contains("dead"), "{text}");
    // stop after the first pass (bisecting)
    let mut p = build();
    let mut seen = Vec::new();
    let report = Pipeline::named("default")
        .unwrap()
        .stop_after("dead_code_elimination")
        .unwrap()
        .dump_after("const_deduplication")
        .unwrap()
        .run_with(&mut p, |pass, _| seen.push(pass.to_string()))
        .unwrap();
    assert_eq!(report.runs.len(), 1);
    assert!(seen.is_empty());
    assert!(op_types(&p, "main").contains(&"const:c_y_0".to_string()));
    // errors
    assert!(matches!(
        Pipeline::named("fast"),
        Err(PassError::UnknownPipeline { .. })
    ));
    let e = Pipeline::named("default")
        .unwrap()
        .dump_after("fuse_everything")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "pipeline `default` has no pass `fuse_everything` (passes: dead_code_elimination, const_deduplication)"
    );
    // the pipeline validates after its last pass and names it
    let mut p = build();
    let f = p.functions.get_mut("main").unwrap();
    f.block
        .operations
        .last_mut()
        .unwrap()
        .inputs
        .insert("x".into(), vec![Binding::Name("nope".into())]);
    let e = Pipeline::named("default").unwrap().run(&mut p).unwrap_err();
    assert!(
        e.to_string().starts_with(
            "program invalid after pass `const_deduplication`: function `main`, op mul \"c\""
        ),
        "{e}"
    );
    let mut p2 = build();
    assert!(Pipeline::named("empty").unwrap().run(&mut p2).is_ok());
}
