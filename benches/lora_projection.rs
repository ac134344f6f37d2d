//! One LoRA-adapted projection, forward and backward, two ways in one run: the fused op that
//! holds the frozen base product and the adapter together (`lora_linear`, what training runs)
//! against the frozen product, the adapter op and an add as three graph nodes (the path before
//! it). The shapes are the `sft_demo --speed 512` model's (1,024 rows, hidden 512, MLP 1,376),
//! r 16 with a dropout mask; rounds alternate between the two, median of each.
//!
//! `RAYON_NUM_THREADS=2 cargo bench --bench lora_projection` (figures in docs/benchmarks.md).

use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use wick::model::frozen::frozen_matmul;
use wick::model::lora_delta::{FrozenWeight, lora_delta, lora_linear};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds for forward + backward of `f` on fresh inputs' graph.
fn time(f: &dyn Fn() -> candle_core::Result<Tensor>, probe: &Tensor) -> f64 {
    let t = Instant::now();
    let y = f().unwrap();
    let g = (y * probe).unwrap().sum_all().unwrap().backward().unwrap();
    std::hint::black_box(g);
    t.elapsed().as_secs_f64()
}

fn main() {
    let dev = Device::Cpu;
    let rows = 1024;
    let rounds = 15;
    println!("rows {rows}, r 16, dropout mask; ms per forward + backward (median of {rounds})");
    let mut total = (0.0, 0.0);
    for (name, d_in, out) in [
        ("q/o (512 -> 512)", 512, 512),
        ("gate/up (512 -> 1376)", 512, 1376),
        ("down (1376 -> 512)", 1376, 512),
    ] {
        let var = |shape: (usize, usize), s: f32| {
            Var::from_tensor(&(Tensor::randn(0f32, 1.0, shape, &dev).unwrap() * s as f64).unwrap())
                .unwrap()
        };
        let x = var((rows, d_in), 1.0);
        let (a, b) = (var((16, d_in), 0.05), var((out, 16), 0.05));
        let w = Tensor::randn(0f32, 0.02, (out, d_in), &dev).unwrap();
        let mask: Arc<Vec<f32>> = Arc::new(
            (0..rows * d_in)
                .map(|i| if i % 20 == 7 { 0.0 } else { 1.0 / 0.95 })
                .collect(),
        );
        let probe = Tensor::randn(0f32, 1.0, (rows, out), &dev).unwrap();
        let fused = || lora_linear(&x, FrozenWeight::Dense(&w), &a, &b, 2.0, Some(mask.clone()));
        let separate = || frozen_matmul(&x, &w)? + lora_delta(&x, &a, &b, 2.0, Some(mask.clone()))?;
        let (mut tf, mut ts) = (Vec::new(), Vec::new());
        for round in 0..rounds + 2 {
            let (f, s) = (time(&fused, &probe), time(&separate, &probe));
            if round >= 2 {
                tf.push(f);
                ts.push(s);
            }
        }
        let (f, s) = (median(tf) * 1e3, median(ts) * 1e3);
        total = (total.0 + f, total.1 + s);
        println!(
            "{name}: fused {f:.2} ms, separate {s:.2} ms, separate / fused {:.2}x",
            s / f
        );
    }
    println!(
        "one of each: fused {:.2} ms, separate {:.2} ms, separate / fused {:.2}x",
        total.0,
        total.1,
        total.1 / total.0
    );
}
