//! Statistics of the fp16 fidelity benchmark (`gemma-convert fidelity`): many sequences, each
//! compared at every position with an fp64 reference, and paired with a baseline (HF transformers'
//! own fp16 forward) on the same sequences.
//!
//! A sequence is the unit of sampling: its figures are the means over its positions of the
//! [`crate::parity::Comparator`] metrics (KL(P_fp64 ‖ Q) in nats, mean |Δlogit| over the
//! vocabulary, top-1 agreement). Across sequences:
//!
//! * [`Estimate`]: mean with a two-sided 95 % Student-t interval (`mean ± t₀.₉₇₅,ₙ₋₁·s/√n`).
//! * [`RatioEstimate::of_means`]: the paired ratio of means `R = Σ oursᵢ / Σ baseᵢ`, interval by
//!   the delta method on the paired differences `dᵢ = oursᵢ − R·baseᵢ`
//!   (`se = sd(d)/(√n·mean(base))`) — the figure the CI gate bounds.
//! * [`RatioEstimate::geometric`]: the sequence-by-sequence ratio, `exp(mean log(oursᵢ/baseᵢ))`
//!   with the t interval of the log-ratios (insensitive to a few sequences with large KL).
//!
//! Everything is computed in f64 in a fixed order, so the figures are deterministic.

use serde::Serialize;

use crate::parity::Metrics;

/// Per-sequence figures (means over the sequence's positions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct SequenceFigures {
    /// Mean KL(reference ‖ candidate), nats.
    pub kl: f64,
    /// Mean |Δlogit| over positions and vocabulary.
    pub mean_abs: f64,
    /// Fraction of positions whose argmax agrees with the reference's.
    pub top1: f64,
}

impl SequenceFigures {
    /// The figures of one sequence's comparator.
    pub fn of(m: &Metrics) -> SequenceFigures {
        SequenceFigures {
            kl: m.mean_kl,
            mean_abs: m.mean_abs_logit_diff,
            top1: m.top1_agreement,
        }
    }
}

/// A mean with its 95 % interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Estimate {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Estimate {
    /// Mean and two-sided 95 % t interval of `x` (a single value has an infinite interval; an
    /// empty slice gives NaN).
    pub fn of(x: &[f64]) -> Estimate {
        let n = x.len();
        if n == 0 {
            return Estimate {
                mean: f64::NAN,
                lo: f64::NAN,
                hi: f64::NAN,
            };
        }
        let mean = x.iter().sum::<f64>() / n as f64;
        let half = if n < 2 {
            f64::INFINITY
        } else {
            let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64;
            t975(n - 1) * (var / n as f64).sqrt()
        };
        Estimate {
            mean,
            lo: mean - half,
            hi: mean + half,
        }
    }

    /// Half-width of the interval.
    pub fn half_width(&self) -> f64 {
        (self.hi - self.lo) / 2.0
    }
}

/// A paired ratio (candidate / baseline) with its 95 % interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RatioEstimate {
    pub ratio: f64,
    pub lo: f64,
    pub hi: f64,
}

impl RatioEstimate {
    /// `Σ ours / Σ base` with a delta-method interval on the paired differences. `None` when the
    /// slices differ in length, are empty, or the baseline sums to zero.
    pub fn of_means(ours: &[f64], base: &[f64]) -> Option<RatioEstimate> {
        let n = ours.len();
        if n == 0 || n != base.len() {
            return None;
        }
        let (so, sb) = (ours.iter().sum::<f64>(), base.iter().sum::<f64>());
        if sb <= 0.0 || !sb.is_finite() || !so.is_finite() {
            return None;
        }
        let r = so / sb;
        let half = if n < 2 {
            f64::INFINITY
        } else {
            let d: Vec<f64> = ours.iter().zip(base).map(|(o, b)| o - r * b).collect();
            let dm = d.iter().sum::<f64>() / n as f64;
            let var = d.iter().map(|v| (v - dm) * (v - dm)).sum::<f64>() / (n - 1) as f64;
            t975(n - 1) * (var / n as f64).sqrt() / (sb / n as f64)
        };
        Some(RatioEstimate {
            ratio: r,
            lo: r - half,
            hi: r + half,
        })
    }

    /// Geometric mean of the per-sequence ratios with the t interval of their logarithms. `None`
    /// when the slices differ in length, are empty, or some value is not positive.
    pub fn geometric(ours: &[f64], base: &[f64]) -> Option<RatioEstimate> {
        if ours.is_empty() || ours.len() != base.len() {
            return None;
        }
        let logs: Option<Vec<f64>> = ours
            .iter()
            .zip(base)
            .map(|(&o, &b)| (o > 0.0 && b > 0.0 && (o / b).is_finite()).then(|| (o / b).ln()))
            .collect();
        let e = Estimate::of(&logs?);
        Some(RatioEstimate {
            ratio: e.mean.exp(),
            lo: e.lo.exp(),
            hi: e.hi.exp(),
        })
    }
}

/// Summary of one candidate over the sequences.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub kl: Estimate,
    pub mean_abs: Estimate,
    pub top1: Estimate,
}

impl Summary {
    /// Summarise per-sequence figures.
    pub fn of(seqs: &[SequenceFigures]) -> Summary {
        let col = |f: fn(&SequenceFigures) -> f64| seqs.iter().map(f).collect::<Vec<f64>>();
        Summary {
            kl: Estimate::of(&col(|s| s.kl)),
            mean_abs: Estimate::of(&col(|s| s.mean_abs)),
            top1: Estimate::of(&col(|s| s.top1)),
        }
    }
}

/// The paired comparison of a candidate with a baseline on the same sequences.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Paired {
    pub sequences: usize,
    pub ours: Summary,
    pub baseline: Summary,
    /// Ratio of mean KL (ours / baseline), paired.
    pub kl_ratio: Option<RatioEstimate>,
    /// Geometric mean of the per-sequence KL ratios.
    pub kl_ratio_per_sequence: Option<RatioEstimate>,
    /// Ratio of mean |Δlogit| (ours / baseline), paired.
    pub mean_abs_ratio: Option<RatioEstimate>,
}

impl Paired {
    /// Pair per-sequence figures (same sequences, same order).
    pub fn of(ours: &[SequenceFigures], baseline: &[SequenceFigures]) -> Paired {
        let kl = |s: &[SequenceFigures]| s.iter().map(|x| x.kl).collect::<Vec<f64>>();
        let ma = |s: &[SequenceFigures]| s.iter().map(|x| x.mean_abs).collect::<Vec<f64>>();
        Paired {
            sequences: ours.len().min(baseline.len()),
            ours: Summary::of(ours),
            baseline: Summary::of(baseline),
            kl_ratio: RatioEstimate::of_means(&kl(ours), &kl(baseline)),
            kl_ratio_per_sequence: RatioEstimate::geometric(&kl(ours), &kl(baseline)),
            mean_abs_ratio: RatioEstimate::of_means(&ma(ours), &ma(baseline)),
        }
    }

    /// The gate: `Ok` when mean KL(ours) ≤ `max_ratio` × mean KL(baseline); `Err` says by how much
    /// it failed (or that the ratio is undefined).
    pub fn gate(&self, max_ratio: f64) -> Result<(), String> {
        match self.kl_ratio {
            Some(r) if r.ratio <= max_ratio => Ok(()),
            Some(r) => Err(format!(
                "mean KL {:.5} is ×{:.3} [{:.3}, {:.3}] the baseline's {:.5}, above the bound ×{max_ratio}",
                self.ours.kl.mean, r.ratio, r.lo, r.hi, self.baseline.kl.mean
            )),
            None => Err(format!(
                "the KL ratio is undefined (ours {:.5}, baseline {:.5}, {} sequences)",
                self.ours.kl.mean, self.baseline.kl.mean, self.sequences
            )),
        }
    }
}

/// Two-sided 95 % Student-t quantile `t₀.₉₇₅` with `df` degrees of freedom (exact table to 30,
/// Cornish–Fisher expansion beyond, error < 1e-4).
pub fn t975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => TABLE[df - 1],
        _ => {
            let z = 1.959_963_984_540_054_f64;
            let n = df as f64;
            let (z3, z5, z7) = (z.powi(3), z.powi(5), z.powi(7));
            z + (z3 + z) / (4.0 * n)
                + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * n * n)
                + (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * n * n * n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles_match_tables() {
        // scipy.stats.t.ppf(0.975, df)
        for (df, want) in [
            (1, 12.706),
            (10, 2.228),
            (31, 2.0395),
            (60, 2.0003),
            (199, 1.9720),
            (10_000, 1.9602),
        ] {
            assert!((t975(df) - want).abs() < 1e-3, "df {df}: {}", t975(df));
        }
        assert!(t975(0).is_infinite());
    }

    #[test]
    fn estimate_of_known_sample() {
        let e = Estimate::of(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(e.mean, 2.5);
        // sd = 1.29099, se = 0.645497, t(3) = 3.182
        assert!((e.half_width() - 3.182 * 0.645_497).abs() < 1e-5);
        assert!(Estimate::of(&[5.0]).hi.is_infinite());
        assert!(Estimate::of(&[]).mean.is_nan());
    }

    #[test]
    fn ratio_of_means_is_exact_for_proportional_pairs() {
        let base = [0.01, 0.02, 0.03, 0.05];
        let ours: Vec<f64> = base.iter().map(|b| 1.15 * b).collect();
        let r = RatioEstimate::of_means(&ours, &base).unwrap();
        assert!((r.ratio - 1.15).abs() < 1e-12);
        assert!(
            r.hi - r.lo < 1e-9,
            "no spread when every pair has the same ratio"
        );
        let g = RatioEstimate::geometric(&ours, &base).unwrap();
        assert!((g.ratio - 1.15).abs() < 1e-12);
        assert!(RatioEstimate::of_means(&ours, &base[..3]).is_none());
        assert!(RatioEstimate::of_means(&[1.0], &[0.0]).is_none());
        assert!(RatioEstimate::geometric(&[1.0, 0.0], &[1.0, 1.0]).is_none());
    }

    #[test]
    fn ratio_interval_covers_noisy_pairs() {
        // ours = 0.9·base ± noise: the interval contains 0.9 and excludes 1.0
        let base: Vec<f64> = (0..200)
            .map(|i| 0.01 + 0.0001 * f64::from(i % 17))
            .collect();
        let ours: Vec<f64> = base
            .iter()
            .enumerate()
            .map(|(i, b)| 0.9 * b + if i % 2 == 0 { 0.0005 } else { -0.0005 })
            .collect();
        let r = RatioEstimate::of_means(&ours, &base).unwrap();
        assert!(r.lo < 0.9 && 0.9 < r.hi && r.hi < 1.0, "{r:?}");
    }

    #[test]
    fn gate_compares_the_ratio_of_means() {
        let seq = |kl| SequenceFigures {
            kl,
            mean_abs: 0.1,
            top1: 1.0,
        };
        let base = [seq(0.010), seq(0.020)];
        let p = Paired::of(&[seq(0.011), seq(0.022)], &base);
        assert!((p.kl_ratio.unwrap().ratio - 1.1).abs() < 1e-12);
        assert!(p.gate(1.1).is_ok());
        let why = p.gate(1.05).unwrap_err();
        assert!(why.contains("×1.100") && why.contains("×1.05"), "{why}");
        let undefined = Paired::of(&[seq(0.01)], &[seq(0.0)]);
        assert!(undefined.gate(10.0).unwrap_err().contains("undefined"));
    }
}
