//! The `model.mil` parser on hostile input: truncations, byte flips and deep nesting of the texts
//! Apple's compiler wrote (`fixtures/compiled/`) give errors naming a line, never a panic or a
//! stack overflow.

use mil::text::{Dialect, TextError, parse_literal, parse_program};
use mil::{TensorType, TensorValue};
use std::path::Path;

fn no_blobs(_: &TensorType, p: &str, o: u64) -> Result<TensorValue, String> {
    Err(format!("no weight file for {p}@{o}"))
}

fn apple_texts() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/compiled");
    let mut v =
        vec![std::fs::read_to_string(root.join("apple/add_model.mlmodelc/model.mil")).unwrap()];
    for e in std::fs::read_dir(root.join("mlmodelc-export")).unwrap() {
        let p = e.unwrap().path().join("expected-macos.mlmodelc/model.mil");
        if p.is_file() {
            v.push(std::fs::read_to_string(p).unwrap());
        }
    }
    assert_eq!(v.len(), 8);
    v
}

#[test]
fn apple_texts_parse_and_damaged_ones_fail_cleanly() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for text in apple_texts() {
        // blobs are resolved by the caller; without a weight file those texts fail on BLOBFILE
        match parse_program(&text, &mut no_blobs) {
            Ok(p) => assert!(!p.program.functions.is_empty()),
            Err(TextError::Blob { .. }) => assert!(text.contains("BLOBFILE")),
            Err(e) => panic!("{e}\n{text}"),
        }
        let bytes = text.as_bytes();
        for _ in 0..400 {
            let mut b = bytes.to_vec();
            match next() % 3 {
                0 => b.truncate((next() as usize) % b.len()),
                1 => {
                    let i = (next() as usize) % b.len();
                    b[i] = b"()[]{}<>,=;\"?-x0 a"[(next() % 18) as usize];
                }
                _ => {
                    let i = (next() as usize) % b.len();
                    b.insert(i, b"[(<{\""[(next() % 5) as usize]);
                }
            }
            let Ok(s) = String::from_utf8(b) else {
                continue;
            };
            if let Err(TextError::Parse { line, .. }) = parse_program(&s, &mut no_blobs) {
                assert!(line >= 1);
            }
        }
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for text in [
        format!(
            "tensor<int32, [1]>({}1{})",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
        format!("{}int32{}", "list<".repeat(100_000), ", 1>".repeat(100_000)),
        "tensor<fp16, [2]>(BLOBFILE(path = ".repeat(50_000),
    ] {
        let e = parse_literal(&text, &mut no_blobs).unwrap_err();
        assert!(matches!(e, TextError::Parse { .. }), "{e}");
    }
    assert_eq!(Dialect::for_spec_version(8), None);
}
