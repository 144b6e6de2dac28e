//! The two-turn goldens (`fixtures/goldens/<model>.turns.safetensors`): well-formed, turn 1 is the
//! model's golden, each second turn relates to turn 1 as its case says, and our reference forward
//! reproduces every second turn (HF from scratch over the whole sequence) within fp32 tolerance.

mod common;

use common::{MODELS, fixtures, golden, model_dir, run_parity};
use gemma4::golden::Turns;
use gemma4::{DType, Tolerance};

fn history(g: &gemma4::Golden) -> Vec<u32> {
    g.input_ids
        .iter()
        .chain(&g.decode_input_ids)
        .copied()
        .collect()
}

#[test]
fn two_turn_goldens_are_consistent_and_the_reference_reproduces_them() {
    for name in MODELS {
        let t = Turns::load(
            fixtures()
                .join("goldens")
                .join(format!("{name}.turns.safetensors")),
        )
        .expect("turns golden loads");
        let base = golden(name);
        assert_eq!(t.turn1.input_ids, base.input_ids, "{name}: turn 1 prompt");
        assert_eq!(
            t.turn1.logits, base.logits,
            "{name}: turn 1 logits are the golden's"
        );
        assert_eq!(t.turn1.decode_input_ids, base.decode_input_ids);
        let h = history(&t.turn1);
        let (p, s) = (h.len(), base.input_ids.len());
        let cases: Vec<&str> = t.turn2.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(cases, ["extend", "edit_last", "diverge"], "{name}");
        for (case, g) in &t.turn2 {
            let common = h
                .iter()
                .zip(&g.input_ids)
                .take_while(|(a, b)| a == b)
                .count();
            let want = match case.as_str() {
                "extend" => p,
                "edit_last" => p - 1,
                "diverge" => s + 2,
                other => panic!("unknown case {other}"),
            };
            assert_eq!(common, want, "{name} {case}: common prefix with turn 1");
            assert!(
                g.input_ids.len() > common,
                "{name} {case}: new tokens after the prefix"
            );
            let r = run_parity(&model_dir(name), g, DType::F32).expect("reference runs");
            println!(
                "{name} turn 2 {case}: {} + {} tokens, prefill max {:.2e}, decode max {:.2e}",
                g.input_ids.len(),
                g.decode_input_ids.len(),
                r.prefill.max_abs,
                r.decode.max_abs
            );
            r.prefill
                .check(&format!("{name} {case} prefill"), Tolerance::FP32)
                .unwrap();
            r.decode
                .check(&format!("{name} {case} decode"), Tolerance::FP32)
                .unwrap();
        }
    }
}

#[test]
fn a_turns_file_without_its_case_list_is_refused() {
    let p = fixtures().join("goldens/tiny-e2b.safetensors");
    let e = Turns::load(&p).unwrap_err().to_string();
    assert!(e.contains("turn1.input_ids") || e.contains("turns"), "{e}");
}
