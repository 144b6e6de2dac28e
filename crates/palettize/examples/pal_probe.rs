use half::f16;
use palettize::{LutConfig, palettize_f16};

fn main() {
    let mut seed = 0x9E3779B97F4A7C15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let (o, i) = (2048usize, 1536usize);
    let w: Vec<f16> = (0..o * i)
        .map(|_| {
            let (u1, u2) = (next().max(1e-300), next());
            f16::from_f64((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * 0.02)
        })
        .collect();
    let iters: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(1);
    let pool = palettize::thread_pool(1).unwrap();
    let mut mse = 0.0;
    for _ in 0..iters {
        let p = palettize_f16("w", &w, &[o, i], &LutConfig::new(4, 32), Some(&pool)).unwrap();
        mse = p.stats.mse();
    }
    println!("mse {mse:.9e}");
}
