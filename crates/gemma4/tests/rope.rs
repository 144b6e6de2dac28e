//! RoPE tables against HF's own inverse frequencies (stored in the goldens) and the cos/sin
//! layout.

mod common;

use common::{MODELS, fixtures, model_dir};
use gemma4::st::StFile;
use gemma4::{Checkpoint, LayerType, RopeTable, rope};

#[test]
fn inv_freq_matches_hf_bit_for_bit_or_within_one_ulp() {
    for name in MODELS {
        let ck = Checkpoint::open(model_dir(name)).unwrap();
        let g = StFile::open(
            &fixtures()
                .join("goldens")
                .join(format!("{name}.safetensors")),
        )
        .unwrap();
        let tables = rope::tables(ck.config()).unwrap();
        assert_eq!(tables.len(), 2);
        for (t, table) in &tables {
            let (shape, hf) = g
                .read_f32(&format!("rope_inv_freq.{}", t.as_str()))
                .unwrap();
            assert_eq!(shape, [table.head_dim / 2]);
            for (j, (a, b)) in table.inv_freq.iter().zip(&hf).enumerate() {
                let ulp = (a.to_bits() as i64 - b.to_bits() as i64).abs();
                assert!(ulp <= 1, "{name} {t} inv_freq[{j}]: ours {a:e}, HF {b:e}");
            }
        }
    }
}

#[test]
fn proportional_rope_rotates_only_the_first_pairs() {
    let ck = Checkpoint::open(model_dir("tiny-e2b")).unwrap();
    let full = RopeTable::new(ck.config(), LayerType::Full).unwrap();
    assert_eq!(full.head_dim, 32);
    // partial_rotary_factor 0.25 of D = 32: 4 of 16 pairs rotate, exponent over the full 32
    for (j, f) in full.inv_freq.iter().enumerate() {
        if j < 4 {
            let want = 1.0 / 1e6f64.powf(2.0 * j as f64 / 32.0);
            assert!((f64::from(*f) - want).abs() <= want * 1e-6, "pair {j}");
        } else {
            assert_eq!(*f, 0.0, "pair {j} must not rotate");
        }
    }
    let sliding = RopeTable::new(ck.config(), LayerType::Sliding).unwrap();
    assert_eq!(sliding.inv_freq.len(), 8);
    assert!(sliding.inv_freq.iter().all(|f| *f > 0.0));
}

#[test]
fn cos_sin_tables_use_the_rotate_half_layout() {
    let ck = Checkpoint::open(model_dir("tiny-e2b")).unwrap();
    let t = RopeTable::new(ck.config(), LayerType::Full).unwrap();
    let d = t.head_dim;
    let (cos, sin) = t.cos_sin(5, 3);
    assert_eq!(cos.len(), 3 * d);
    for r in 0..3 {
        let pos = (5 + r) as f32;
        for j in 0..d / 2 {
            let a = pos * t.inv_freq[j];
            assert_eq!(cos[r * d + j], a.cos());
            assert_eq!(cos[r * d + j + d / 2], a.cos(), "dim j pairs with j + D/2");
            assert_eq!(sin[r * d + j + d / 2], a.sin());
        }
        // non-rotating pairs: cos 1, sin 0
        assert_eq!((cos[r * d + 10], sin[r * d + 10]), (1.0, 0.0));
    }
    let (c0, s0) = t.cos_sin(0, 1);
    assert!(c0.iter().all(|c| *c == 1.0) && s0.iter().all(|s| *s == 0.0));
}
