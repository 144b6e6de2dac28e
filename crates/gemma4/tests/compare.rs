//! The comparison helper itself: it must report differences, disagreeing argmaxes and NaN.

use gemma4::{Tolerance, compare_rows};

#[test]
fn reports_max_mean_and_top1() {
    let want = [0.0, 1.0, 0.5, /* row 2 */ 3.0, 0.0, 0.0];
    let got = [0.0, 1.0, 0.5, /* argmax moves */ 0.0, 0.0, 3.5];
    let c = compare_rows(&got, &want, 3).unwrap();
    assert_eq!(c.rows, 2);
    assert_eq!(c.max_abs, 3.5);
    assert_eq!(c.worst_row, 1);
    assert_eq!(c.top1_agreement, 0.5);
    assert!((c.mean_abs - 6.5 / 6.0).abs() < 1e-12);
    let e = c.check("toy", Tolerance::FP32).unwrap_err();
    assert!(e.to_string().contains("toy"));
    assert!(
        compare_rows(&want, &want, 3)
            .unwrap()
            .check("same", Tolerance::FP32)
            .is_ok()
    );
}

#[test]
fn nan_never_passes_and_shapes_must_match() {
    let c = compare_rows(&[f32::NAN, 0.0], &[0.0, 0.0], 2).unwrap();
    assert_eq!(c.max_abs, f32::INFINITY);
    assert_eq!(c.top1_agreement, 0.0);
    assert!(
        c.check(
            "nan",
            Tolerance {
                max_abs: 1e9,
                min_top1: 0.0
            }
        )
        .is_err()
    );
    assert!(compare_rows(&[0.0; 3], &[0.0; 4], 2).is_err());
    assert!(compare_rows(&[0.0; 4], &[0.0; 4], 0).is_err());
}
