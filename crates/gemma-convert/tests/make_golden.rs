//! `scripts/make_golden.py` (torch + transformers, not installed in CI): its output format is
//! checked through `fixtures/goldens/make_golden-tiny-e2b.safetensors`, which it made with the
//! pinned versions from tiny-e2b and the prompt of the fixture golden:
//!
//!     python scripts/make_golden.py --model fixtures/models/tiny-e2b \
//!         --ids 2,343,118,323,16,301,62,182,220,273,424,4 --decode-steps 16 --threads 1 \
//!         --out fixtures/goldens/make_golden-tiny-e2b.safetensors

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_golden_made_by_make_golden_py_has_the_contract_layout_and_passes_parity() {
    let made =
        gemma4::Golden::load(root().join("fixtures/goldens/make_golden-tiny-e2b.safetensors"))
            .expect("loads as a golden");
    let fixture =
        gemma4::Golden::load(root().join("fixtures/goldens/tiny-e2b.safetensors")).unwrap();
    assert_eq!(made.metadata["generator"], "scripts/make_golden.py");
    assert_eq!(made.metadata["dtype"], "float32");
    assert!(made.unknown_keys.is_empty(), "{:?}", made.unknown_keys);
    // made with the pinned versions
    let pins = std::fs::read_to_string(root().join("scripts/requirements-fixtures.txt")).unwrap();
    for lib in [
        "torch",
        "transformers",
        "safetensors",
        "tokenizers",
        "numpy",
    ] {
        let pin = pins
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{lib}==")))
            .unwrap_or_else(|| panic!("{lib} pinned"));
        assert_eq!(made.metadata[lib], pin.trim(), "{lib}");
    }
    // the same model, prompt and greedy continuation as make_fixtures.py's golden (HF on another
    // torch build: logits within the fp32 tolerance)
    assert_eq!(made.input_ids, fixture.input_ids);
    assert_eq!(made.decode_input_ids, fixture.decode_input_ids);
    assert_eq!(made.vocab, fixture.vocab);
    let max = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    assert!(max(&made.logits, &fixture.logits) < 2e-3);
    assert!(max(&made.decode_logits, &fixture.decode_logits) < 2e-3);
    let (h, fh) = made.final_hidden.as_ref().unwrap();
    assert_eq!(*h, 64);
    assert!(max(fh, &fixture.final_hidden.as_ref().unwrap().1) < 1e-3);
    assert_eq!(made.layer_outputs.as_ref().unwrap().0, 10);

    // a conversion of the checkpoint passes parity against it
    let tmp = tempfile::tempdir().unwrap();
    let set = tmp.path().join("set");
    let model = root().join("fixtures/models/tiny-e2b");
    let bin = env!("CARGO_BIN_EXE_gemma-convert");
    let o = Command::new(bin)
        .args([
            "--model",
            model.to_str().unwrap(),
            "--ctx",
            "64",
            "--nbits",
            "0",
        ])
        .args([
            "--precision",
            "fp32",
            "--quiet",
            "--out",
            set.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let golden = root().join("fixtures/goldens/make_golden-tiny-e2b.safetensors");
    let o = Command::new(bin)
        .args([
            "parity",
            "--model",
            model.to_str().unwrap(),
            "--chunks",
            set.to_str().unwrap(),
        ])
        .args([
            "--golden",
            golden.to_str().unwrap(),
            "--tolerance",
            "fp32",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["positions"], 28);
    assert_eq!(r["top1_agreement"], 1.0);
}

#[test]
fn make_golden_py_documents_its_use_and_pins() {
    let s = std::fs::read_to_string(root().join("scripts/make_golden.py")).unwrap();
    for needle in [
        "requirements-fixtures.txt",
        "--prompt",
        "--ids",
        "--dtype fp64",
        "gemma-convert parity --model DIR --chunks OUT --golden",
        "input_ids        i64 [1, S]",
        "decode_logits    f32 [N, V]",
    ] {
        assert!(s.contains(needle), "make_golden.py doc lacks {needle}");
    }
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        readme.contains("scripts/make_golden.py"),
        "README shows make_golden.py"
    );
}
