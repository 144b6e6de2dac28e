//! `gemma-convert bench --estimate DEVICE`: a calibrated memory roofline of a chunk set's decode step
//! on Apple devices, so variants, context lengths and bit widths can be compared before owning one.
//!
//! Per decode step, chunk `i` must move `B_i` bytes: the weights its `decode_q1` function reads
//! (palettized LUT indices and tables, dense fp16 / fp32 — what is stored, so bit widths count)
//! plus every input it reads and output it writes (the KV caches in and out dominate: a shift
//! register or a ctx-long cache is read and rewritten whole every step, so ctx counts). The
//! estimate is
//!
//! ```text
//! t_chunk = c + B_i / (η · BW_device)        t_token = Σ_i t_chunk + h
//! ```
//!
//! with `c` (the part of a chunk call that does not scale with bytes: dispatch, synchronisation,
//! compute latency) and `η · BW` (the effective bandwidth) fitted by least squares on the seven
//! published per-chunk decode times of E2B INT4 g32 at ctx 2048 on an iPhone 17 Pro (4-chunk: 5.8 /
//! 6.8 / 8.2 / 10.3 ms, 31.6 tok/s; 3-chunk Topology II: 5.6 / 12.2 / 10.9 ms, 34.2 tok/s;
//! spec/coreml-llm-pipeline.md §8, CoreML-LLM `docs/THREE_CHUNK_MAC_BENCH.md`,
//! `docs/TOPOLOGY_I_IPHONE_BENCH.md`). The bytes of those sets are the published `weight.bin` sizes
//! (§6.1; `chunk2_3way` = chunk2 + chunk3) plus the I/O our planner gives for the same contract.
//! `h`, the host time between chunk calls, is the mean of (published tok/s)⁻¹ − Σ published chunk
//! times of the two sets. Other devices keep `c`, `η` and `h` and change only the bandwidth — an
//! assumption, printed with the result. Not modelled: attention compute over long contexts (at ctx
//! 8192 the published 4-chunk figure is 14.9 tok/s; the estimate is printed next to it), thermal
//! throttling, ANE generation differences other than memory bandwidth.

use std::path::Path;

use anyhow::{Context, Result, bail};
use gemma4_export::{ChunkPlan, IoDType, ModelLayout, PlanOptions, Variant};
use serde_json::json;

/// A named Apple device and the peak memory bandwidth of its chip.
#[derive(Debug, Clone, Copy)]
pub struct Device {
    /// Name on the command line.
    pub key: &'static str,
    /// Device and chip.
    pub name: &'static str,
    /// Peak DRAM bandwidth, GB/s (10⁹ bytes per second).
    pub bandwidth_gbs: f64,
    /// Where the figure comes from.
    pub source: &'static str,
}

/// The devices `--estimate` knows. iPhone figures are not published by Apple; they are the LPDDR
/// data rate × the 64-bit bus as reported by the sources named.
pub const DEVICES: &[Device] = &[
    Device {
        key: "iphone15pro",
        name: "iPhone 15 Pro (A17 Pro)",
        bandwidth_gbs: 51.2,
        source: "LPDDR5-6400 × 64 bit (6 GB LPDDR5: gadgets360.com, 2023-08-10)",
    },
    Device {
        key: "iphone16pro",
        name: "iPhone 16 Pro (A18 Pro)",
        bandwidth_gbs: 59.9,
        source: "A17 Pro × 1.17 (Apple: \"17 percent increase in total system memory bandwidth\", gadgets360.com, 2024-09-10)",
    },
    Device {
        key: "iphone17",
        name: "iPhone 17 (A19)",
        bandwidth_gbs: 68.26,
        source: "LPDDR5X-8533 (partofstyle.com, A19 Pro vs A19 breakdown)",
    },
    Device {
        key: "iphone17pro",
        name: "iPhone 17 Pro (A19 Pro)",
        bandwidth_gbs: 75.8,
        source: "12 GB LPDDR5X-9600 (partofstyle.com, A19 Pro vs A19 breakdown)",
    },
    Device {
        key: "m2",
        name: "Mac / iPad with M2",
        bandwidth_gbs: 102.4,
        source: "Apple (M2: 100 GB/s; 102.4 exact LPDDR5-6400 × 128 bit)",
    },
    Device {
        key: "m3",
        name: "Mac with M3",
        bandwidth_gbs: 102.4,
        source: "Apple (M3: 100 GB/s; 102.4 exact)",
    },
    Device {
        key: "m4",
        name: "Mac / iPad Pro with M4",
        bandwidth_gbs: 120.0,
        source: "Apple newsroom, 2024-10-30 (M4: 120GB/s)",
    },
    Device {
        key: "m4pro",
        name: "Mac with M4 Pro",
        bandwidth_gbs: 273.0,
        source: "Apple newsroom, 2024-10-30 (M4 Pro: 273GB/s)",
    },
    Device {
        key: "m4max",
        name: "Mac with M4 Max (40-core GPU)",
        bandwidth_gbs: 546.0,
        source: "Apple newsroom, 2024-10-30 (M4 Max: up to 546GB/s)",
    },
];

/// The calibration device.
const CALIBRATION_DEVICE: &str = "iphone17pro";

/// Published `weight.bin` sizes of the reference pipeline's E2B INT4 g32 decode chunks
/// (spec/coreml-llm-pipeline.md §6.1).
const E2B_INT4_WEIGHTS: [u64; 4] = [155_436_864, 133_963_968, 325_282_880, 526_874_880];

/// Published per-chunk decode times (ms) and tok/s, iPhone 17 Pro, E2B INT4 g32, ctx 2048.
const SWA4_CHUNK_MS: [f64; 4] = [5.8, 6.8, 8.2, 10.3];
const SWA4_TOK_S: f64 = 31.6;
const MERGED_CHUNK_MS: [f64; 3] = [5.6, 12.2, 10.9];
const MERGED_TOK_S: f64 = 34.2;
/// ctx 8192, 4-chunk (validation only, not fitted).
const SWA4_8K_TOK_S: f64 = 14.9;

/// Bytes one chunk's decode step moves.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkBytes {
    /// Chunk name.
    pub name: String,
    /// Weights the decode function reads (as stored).
    pub weights: u64,
    /// KV caches and shared-KV tensors read and written.
    pub kv: u64,
    /// Every other input and output.
    pub other_io: u64,
}

impl ChunkBytes {
    /// All bytes of the step.
    pub fn total(&self) -> u64 {
        self.weights + self.kv + self.other_io
    }
}

/// KV tensors among a chunk's I/O: the caches and the shared-KV producers' tensors.
fn is_kv(name: &str) -> bool {
    name.starts_with("K_") || name.starts_with("V_") || name.starts_with("kv1")
}

/// The fitted roofline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// Per-chunk time that does not scale with bytes, ms.
    pub chunk_overhead_ms: f64,
    /// Effective bandwidth on the calibration device, GB/s.
    pub effective_gbs: f64,
    /// Host time per token outside the chunk calls, ms.
    pub host_ms: f64,
    /// Peak bandwidth of the calibration device, GB/s.
    pub device_gbs: f64,
}

impl Calibration {
    /// η: effective / peak bandwidth.
    pub fn efficiency(&self) -> f64 {
        self.effective_gbs / self.device_gbs
    }

    /// Estimated ms of one chunk call moving `bytes` on a device of `device_gbs`.
    pub fn chunk_ms(&self, bytes: u64, device_gbs: f64) -> f64 {
        self.chunk_overhead_ms + bytes as f64 / (self.efficiency() * device_gbs * 1e6)
    }

    /// Estimated ms per token of a set on a device.
    pub fn token_ms(&self, chunks: &[ChunkBytes], device_gbs: f64) -> f64 {
        self.host_ms
            + chunks
                .iter()
                .map(|c| self.chunk_ms(c.total(), device_gbs))
                .sum::<f64>()
    }
}

/// Least-squares line `t = c + k·x` through `(x, t)` points: `(c, k)`.
pub fn fit_line(points: &[(f64, f64)]) -> Result<(f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 2 {
        bail!("a line needs at least two points");
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mt = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxt: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - mt)).sum();
    if sxx == 0.0 {
        bail!("all points have the same x");
    }
    let k = sxt / sxx;
    Ok((mt - k * mx, k))
}

/// Bytes of an I/O list.
fn io_bytes(list: &[gemma4_export::IoTensor]) -> (u64, u64) {
    let (mut kv, mut other) = (0u64, 0u64);
    for t in list {
        let el: u64 = match t.dtype {
            IoDType::Float16 => 2,
            IoDType::Float32 | IoDType::Int32 => 4,
        };
        let b = t.shape.iter().product::<usize>() as u64 * el;
        if is_kv(&t.name) {
            kv += b;
        } else {
            other += b;
        }
    }
    (kv, other)
}

/// Bytes per chunk of a planned E2B set (our I/O contract) with the given weights per chunk.
fn planned(variant: Variant, ctx: usize, weights: &[u64]) -> Result<Vec<ChunkBytes>> {
    // compiled in: the binary may run away from the source tree
    let cfg = gemma4::Gemma4Config::from_value(serde_json::from_str(include_str!(
        "../../../fixtures/configs/gemma-4-e2b.json"
    ))?)?;
    let plan = ChunkPlan::new(
        &ModelLayout::from_config(&cfg),
        &PlanOptions {
            variant,
            ctx,
            fp32: false,
        },
    )?;
    if plan.chunks.len() != weights.len() {
        bail!("calibration set has {} chunks", plan.chunks.len());
    }
    Ok(plan
        .chunks
        .iter()
        .zip(weights)
        .map(|(c, &w)| {
            let (i, o) = plan.decode_io(c);
            let (ki, oi) = io_bytes(&i);
            let (ko, oo) = io_bytes(&o);
            ChunkBytes {
                name: c.name.clone(),
                weights: w,
                kv: ki + ko,
                other_io: oi + oo,
            }
        })
        .collect())
}

/// The published reference sets: (4-chunk ctx 2048, 3-chunk ctx 2048, 4-chunk ctx 8192).
fn reference_sets() -> Result<[Vec<ChunkBytes>; 3]> {
    let w = E2B_INT4_WEIGHTS;
    let merged = [w[0], w[1] + w[2], w[3]];
    Ok([
        planned(Variant::Swa4, 2048, &w)?,
        planned(Variant::Merged, 2048, &merged)?,
        planned(Variant::Swa4, 8192, &w)?,
    ])
}

fn device(key: &str) -> Result<&'static Device> {
    DEVICES.iter().find(|d| d.key == key).with_context(|| {
        format!(
            "unknown device `{key}` (known: {})",
            DEVICES.iter().map(|d| d.key).collect::<Vec<_>>().join(", ")
        )
    })
}

/// Fit the roofline on the published iPhone 17 Pro figures.
pub fn calibrate() -> Result<Calibration> {
    let [swa4, merged, _] = reference_sets()?;
    let mut points = Vec::new();
    for (set, ms) in [(&swa4, &SWA4_CHUNK_MS[..]), (&merged, &MERGED_CHUNK_MS[..])] {
        for (c, &t) in set.iter().zip(ms) {
            points.push((c.total() as f64 / 1e6, t));
        }
    }
    let (c, k) = fit_line(&points)?;
    let host = ((1e3 / SWA4_TOK_S - SWA4_CHUNK_MS.iter().sum::<f64>())
        + (1e3 / MERGED_TOK_S - MERGED_CHUNK_MS.iter().sum::<f64>()))
        / 2.0;
    Ok(Calibration {
        chunk_overhead_ms: c,
        // k is ms per MB: MB/ms = GB/s
        effective_gbs: 1.0 / k,
        host_ms: host,
        device_gbs: device(CALIBRATION_DEVICE)?.bandwidth_gbs,
    })
}

/// Bytes per decode chunk of a set on disk (chunks in `model_config.json` order).
pub fn set_bytes(dir: &Path) -> Result<Vec<ChunkBytes>> {
    let mc_path = dir.join("model_config.json");
    let mc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&mc_path)
            .with_context(|| format!("reading {}", mc_path.display()))?,
    )
    .with_context(|| format!("parsing {}", mc_path.display()))?;
    let names: Vec<String> = mc["chunks"]
        .as_array()
        .with_context(|| format!("{}: no `chunks` list", mc_path.display()))?
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    let mut out = Vec::new();
    for name in names {
        let path = dir.join(format!("{name}.mlpackage"));
        let pkg = mlpackage::read_package(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let fname = pkg.description.default_function_name();
        let f = pkg
            .program
            .functions
            .get(fname)
            .or_else(|| pkg.program.functions.values().next())
            .with_context(|| format!("{}: no function", path.display()))?;
        let weights: u64 = crate::inspect::storage(&f.block.operations).values().sum();
        let ty_bytes = |ty: Option<&mil::ValueType>| -> u64 {
            match ty {
                Some(mil::ValueType::Tensor(t)) | Some(mil::ValueType::State(t)) => {
                    t.num_elements()
                        .and_then(|n| t.dtype.storage_bytes(n))
                        .unwrap_or(0) as u64
                }
                _ => 0,
            }
        };
        let (mut kv, mut other) = (0u64, 0u64);
        let ins = f.inputs.iter().map(|v| (v.name.as_str(), Some(&v.ty)));
        let outs = f
            .block
            .outputs
            .iter()
            .map(|n| (n.as_str(), f.find_value(n).map(|v| &v.ty)));
        for (n, ty) in ins.chain(outs) {
            if is_kv(n) {
                kv += ty_bytes(ty);
            } else {
                other += ty_bytes(ty);
            }
        }
        out.push(ChunkBytes {
            name,
            weights,
            kv,
            other_io: other,
        });
    }
    Ok(out)
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

/// Print (or return as JSON) the estimate of the set at `dir` for `which` (`all` or a device key).
pub fn run(dir: &Path, which: &str, as_json: bool) -> Result<()> {
    let devices: Vec<&Device> = if which == "all" {
        DEVICES.iter().collect()
    } else {
        vec![device(which)?]
    };
    let cal = calibrate()?;
    let chunks = set_bytes(dir)?;
    let [swa4, merged, swa4_8k] = reference_sets()?;
    let iphone = device(CALIBRATION_DEVICE)?;
    let check = [
        ("E2B INT4 4-chunk ctx 2048", SWA4_TOK_S, &swa4),
        ("E2B INT4 3-chunk ctx 2048", MERGED_TOK_S, &merged),
        (
            "E2B INT4 4-chunk ctx 8192 (not fitted)",
            SWA4_8K_TOK_S,
            &swa4_8k,
        ),
    ];
    let per_device: Vec<(&Device, Vec<f64>, f64)> = devices
        .iter()
        .map(|d| {
            let ms: Vec<f64> = chunks
                .iter()
                .map(|c| cal.chunk_ms(c.total(), d.bandwidth_gbs))
                .collect();
            (*d, ms, cal.token_ms(&chunks, d.bandwidth_gbs))
        })
        .collect();
    if as_json {
        let v = json!({
            "chunks_dir": dir,
            "model": "t_chunk = c + bytes / (eta * BW); t_token = sum(t_chunk) + host",
            "calibration": {
                "device": iphone.name,
                "chunk_overhead_ms": cal.chunk_overhead_ms,
                "effective_gbs": cal.effective_gbs,
                "efficiency": cal.efficiency(),
                "host_ms": cal.host_ms,
                "check": check.iter().map(|(n, m, s)| json!({
                    "set": n, "measured_tok_s": m,
                    "estimated_tok_s": 1e3 / cal.token_ms(s, iphone.bandwidth_gbs),
                })).collect::<Vec<_>>(),
            },
            "chunks": chunks.iter().map(|c| json!({
                "name": c.name, "weight_bytes": c.weights, "kv_bytes": c.kv, "other_io_bytes": c.other_io,
            })).collect::<Vec<_>>(),
            "estimates": per_device.iter().map(|(d, ms, t)| json!({
                "device": d.key, "name": d.name, "bandwidth_gbs": d.bandwidth_gbs, "source": d.source,
                "ms_per_chunk": ms, "ms_per_token": t, "tokens_per_second": 1e3 / t,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "estimate for {} — roofline t_chunk = c + bytes / (η·BW), t_token = Σ t_chunk + h (an estimate, not a measurement)",
        dir.display()
    );
    println!(
        "  calibrated on {} ({:.1} GB/s): c = {:.2} ms, η·BW = {:.1} GB/s (η = {:.0} %), h = {:.2} ms",
        iphone.name,
        iphone.bandwidth_gbs,
        cal.chunk_overhead_ms,
        cal.effective_gbs,
        100.0 * cal.efficiency(),
        cal.host_ms
    );
    for (n, m, s) in &check {
        println!(
            "    {n}: published {m:.1} tok/s, estimate {:.1} tok/s",
            1e3 / cal.token_ms(s, iphone.bandwidth_gbs)
        );
    }
    print!(
        "  {:<16} {:>10} {:>10} {:>10}",
        "chunk", "weights MB", "KV MB", "other MB"
    );
    for (d, _, _) in &per_device {
        print!(" {:>12}", d.key);
    }
    println!();
    for (i, c) in chunks.iter().enumerate() {
        print!(
            "  {:<16} {:>10.1} {:>10.1} {:>10.2}",
            c.name,
            mb(c.weights),
            mb(c.kv),
            mb(c.other_io)
        );
        for (_, ms, _) in &per_device {
            print!(" {:>9.2} ms", ms[i]);
        }
        println!();
    }
    print!("  {:<16} {:>32}", "per token", "");
    for (_, _, t) in &per_device {
        print!(" {:>9.2} ms", t);
    }
    println!();
    print!("  {:<16} {:>32}", "tokens/s", "");
    for (_, _, t) in &per_device {
        print!(" {:>12.1}", 1e3 / t);
    }
    println!();
    println!(
        "  bandwidths (peak, GB/s) and sources; other devices keep c, η and h of the calibration:"
    );
    for (d, _, _) in &per_device {
        println!(
            "    {:<12} {:<30} {:>6.1}  {}",
            d.key, d.name, d.bandwidth_gbs, d.source
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_fit_recovers_a_known_line_and_rejects_degenerate_input() {
        let pts: Vec<(f64, f64)> = [10.0, 200.0, 350.0, 500.0]
            .iter()
            .map(|&x| (x, 3.5 + x / 70.0))
            .collect();
        let (c, k) = fit_line(&pts).unwrap();
        assert!(
            (c - 3.5).abs() < 1e-9 && (1.0 / k - 70.0).abs() < 1e-6,
            "{c} {k}"
        );
        assert!(fit_line(&pts[..1]).is_err());
        assert!(fit_line(&[(1.0, 2.0), (1.0, 3.0)]).is_err());
    }

    #[test]
    fn calibration_reproduces_the_published_iphone_figures() {
        let cal = calibrate().unwrap();
        // a positive fixed part per chunk and an effective bandwidth below the peak
        assert!(
            cal.chunk_overhead_ms > 0.0 && cal.chunk_overhead_ms < 6.0,
            "{cal:?}"
        );
        assert!(cal.efficiency() > 0.3 && cal.efficiency() <= 1.0, "{cal:?}");
        assert!(cal.host_ms > 0.0 && cal.host_ms < 1.0, "{cal:?}");
        let [swa4, merged, k8] = reference_sets().unwrap();
        let bw = device(CALIBRATION_DEVICE).unwrap().bandwidth_gbs;
        for (set, want) in [(&swa4, SWA4_TOK_S), (&merged, MERGED_TOK_S)] {
            let got = 1e3 / cal.token_ms(set, bw);
            assert!((got / want - 1.0).abs() < 0.05, "{got} vs {want}");
        }
        // the roofline misses the attention compute of long contexts: it is optimistic at 8K
        assert!(1e3 / cal.token_ms(&k8, bw) > SWA4_8K_TOK_S);
        // the E2B swa4 bytes: published weights + the KV caches in and out
        // (chunk1: 7 sliding slots [7,1,512,512] and 1 full [1,1,2048,512], fp16, read and written)
        let kv1 = 2 * 2 * (7 * 512 * 512 + 2048 * 512) * 2;
        assert_eq!(swa4[0].kv, kv1 as u64);
        assert_eq!(swa4[0].weights, E2B_INT4_WEIGHTS[0]);
    }

    #[test]
    fn faster_memory_is_faster_and_more_bytes_are_slower() {
        let cal = calibrate().unwrap();
        let one = |w: u64| ChunkBytes {
            name: "c".into(),
            weights: w,
            kv: 0,
            other_io: 0,
        };
        let set = vec![one(100_000_000), one(300_000_000)];
        let slow = cal.token_ms(&set, 50.0);
        let fast = cal.token_ms(&set, 500.0);
        assert!(fast < slow);
        // arithmetic: h + 2c + bytes / (η · BW · 1e6) ms
        let want =
            cal.host_ms + 2.0 * cal.chunk_overhead_ms + 400e6 / (cal.efficiency() * 50.0 * 1e6);
        assert!((slow - want).abs() < 1e-9);
        assert!(cal.token_ms(&[one(2_000_000_000)], 50.0) > slow);
    }
}
