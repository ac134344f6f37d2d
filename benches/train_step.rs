//! Training-step throughput on CPU in f32 (issue 3's benchmark): configs A and B, median of 10
//! steps after 3 warm-ups, with the step split into forward (+ loss), backward and optimiser,
//! the peak resident memory, and the achieved GFLOP/s (6·N·tokens/s) against this machine's f32
//! matmul peak measured in the same run.
//!
//! `RAYON_NUM_THREADS=2 cargo bench --bench train_step` (figures in docs/benchmarks.md).
//! Pass `A` or `B` after `--` to run one config; `--composite` also measures each config with
//! candle's composite ops instead of the fused ones, for comparison. `--torch PYTHON` runs
//! `bench/reference/bench_llama_cpu.py --config A|B` with that Python (one with torch and
//! transformers) right after each config's own steps, and prints the ratio and both peak RSS.
//! `--recompute` turns on activation recompute (`gradient_checkpointing`) for every row, and
//! PyTorch's `gradient_checkpointing_enable()` for its runs; run one config per process for its
//! peak memory (freed memory stays with the process). `--bf16` runs the mixed-precision mode
//! (bf16 products, f32 master weights) where the processor has AVX512-BF16, beside PyTorch's
//! `--dtype bf16` (CPU autocast).

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use wick::model::llama::{Llama, sequential_positions};
use wick::model::{ModelConfig, init_varmap, named_vars};
use wick::train::estimate::measure_matmul_gflops;
use wick::train::loss::shifted_cross_entropy;
use wick::train::optim::{AdamW, AdamWConfig, clip_factor, global_grad_norm};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Config {
    name: &'static str,
    cfg: ModelConfig,
    batch: usize,
    seq: usize,
}

fn configs() -> Vec<Config> {
    let untied = |mut c: ModelConfig| {
        c.tie_word_embeddings = false;
        c
    };
    vec![
        Config {
            name: "A",
            cfg: untied(ModelConfig::llama(4096, 256, 688, 4, 8, 4, 1024)),
            batch: 8,
            seq: 256,
        },
        Config {
            name: "B",
            cfg: untied(ModelConfig::llama(8192, 512, 1376, 8, 8, 8, 1024)),
            batch: 4,
            seq: 512,
        },
    ]
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        0.5 * (xs[n / 2 - 1] + xs[n / 2])
    }
}

/// Peak resident memory of this process so far, in MiB.
fn peak_rss_mib() -> f64 {
    wick::machine::peak_rss_bytes().map_or(f64::NAN, |b| b as f64 / 1048576.0)
}

/// PyTorch's tokens/s and peak RSS (MiB) for `config`, from the reference script.
fn torch_reference(python: &str, config: &str, recompute: bool, bf16: bool) -> Option<(f64, f64)> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/bench/reference/bench_llama_cpu.py"
    );
    let mut cmd = std::process::Command::new(python);
    cmd.args([script, "--config", config, "--steps", "10"]);
    if recompute {
        cmd.arg("--grad-ckpt");
    }
    if bf16 {
        cmd.args(["--dtype", "bf16"]);
    }
    let out = cmd.output().ok()?;
    if !out.status.success() {
        eprintln!(
            "reference run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.lines().last()?).ok()?;
    if v["noisy"].as_bool() == Some(true) {
        eprintln!("note: the reference run of {config} flagged itself as noisy");
    }
    Some((v["tokens_per_s"].as_f64()?, v["max_rss_mb"].as_f64()?))
}

/// Best of 5 bf16 products of n×n matrices with [`wick::model::bf16_gemm`], in GFLOP/s, and
/// candle's f32 matmul of the same operands for comparison.
fn bf16_matmul_gflops(n: usize) -> (f64, f64) {
    use wick::model::bf16_gemm::{Mat, matmul};
    let a: Vec<f32> = (0..n * n)
        .map(|i| ((i % 97) as f32 - 48.0) / 97.0)
        .collect();
    let b: Vec<f32> = (0..n * n)
        .map(|i| ((i % 89) as f32 - 44.0) / 89.0)
        .collect();
    let best = |f: &dyn Fn()| {
        f();
        (0..5)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min)
    };
    let bf16 = best(&|| {
        let c = matmul(
            Mat {
                data: &a,
                rs: n,
                cs: 1,
            },
            Mat {
                data: &b,
                rs: n,
                cs: 1,
            },
            n,
            n,
            n,
        );
        std::hint::black_box(c);
    });
    let ta = Tensor::from_slice(&a, (n, n), &Device::Cpu).unwrap();
    let tb = Tensor::from_slice(&b, (n, n), &Device::Cpu).unwrap();
    let f32_t = best(&|| {
        std::hint::black_box(ta.matmul(&tb).unwrap());
    });
    let flops = 2.0 * (n as f64).powi(3) / 1e9;
    (flops / bf16, flops / f32_t)
}

fn main() -> candle_core::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let only: Option<String> = args.iter().find(|a| *a == "A" || *a == "B").cloned();
    let composite_too = args.iter().any(|a| a == "--composite");
    let recompute = args.iter().any(|a| a == "--recompute");
    let bf16 = args.iter().any(|a| a == "--bf16");
    let torch = args
        .iter()
        .position(|a| a == "--torch")
        .and_then(|i| args.get(i + 1).cloned());
    let variants: &[bool] = if composite_too {
        &[true, false]
    } else {
        &[true]
    };
    wick::allocator::keep_freed_memory();
    // SAFETY: the bench has started no thread yet.
    unsafe { wick::threads::one_candle_thread() };
    let dev = Device::Cpu;
    let threads = candle_core::utils::get_num_threads();
    let peak = measure_matmul_gflops(2048, 5)?;
    let estimate_peak = wick::train::estimate::machine_peak_gflops();
    if wick::model::bf16_gemm::available() {
        let (bf16, f32_same) = bf16_matmul_gflops(2048);
        println!(
            "bf16 matmul (AVX512-BF16, 2048^3, f32 accumulation, best of 5): {bf16:.1} GFLOP/s; candle's f32 matmul of the same operands: {f32_same:.1}"
        );
    }
    println!("{}", wick::machine::cpu_description());
    println!(
        "threads {threads}, f32 matmul peak (2048^3, best of 5): {peak:.1} GFLOP/s; the estimate's (1024^3): {estimate_peak:.1}"
    );
    println!(
        "| config | params | tokens/step | tokens/s | step ms | forward ms | backward ms | optimiser ms | peak RSS MiB | GFLOP/s | % of peak | PyTorch tokens/s | PyTorch peak RSS MiB | Wick / PyTorch | estimate tokens/s | estimate / measured | matmul + attention GFLOP/token | activation values written/token |"
    );
    println!(
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for (c, fused) in configs()
        .iter()
        .flat_map(|c| variants.iter().map(move |&f| (c, f)))
    {
        if only.as_ref().is_some_and(|o| o != c.name) {
            continue;
        }
        wick::model::ops::set_fused_ops(fused);
        // Reset the peak-RSS counter (VmHWM) so each row reports its own peak.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let varmap = init_varmap(&c.cfg, 0, DType::F32, &dev)?;
        let mut model = Llama::load_with_context(
            VarBuilder::from_varmap(&varmap, DType::F32, &dev),
            &c.cfg,
            c.seq,
        )?;
        model.set_gradient_checkpointing(recompute);
        let bf16_on = model.set_bf16(bf16);
        if bf16 && !bf16_on {
            println!(
                "note: no AVX512-BF16 on this processor, {} runs f32",
                c.name
            );
        }
        let named = named_vars(&c.cfg, &varmap).expect("all vars");
        let vars: Vec<_> = named.iter().map(|(_, v, _)| v.clone()).collect();
        let mut opt = AdamW::new(
            named
                .into_iter()
                .map(|(n, v, k)| (n, v, k.decays()))
                .collect(),
            AdamWConfig::default(),
        )?;
        let ids: Vec<u32> = (0..c.batch * c.seq)
            .map(|i| ((i * 2654435761) % c.cfg.vocab_size) as u32)
            .collect();
        let input = Tensor::from_vec(ids, (c.batch, c.seq), &dev)?;
        let pos = sequential_positions(c.batch, c.seq, &dev)?;
        let w = Tensor::ones((c.batch, c.seq), DType::F32, &dev)?;
        let (mut fwd, mut bwd, mut opt_t, mut total) = (vec![], vec![], vec![], vec![]);
        for i in 0..13 {
            let t0 = Instant::now();
            let logits = model.forward(&input, &pos, None)?;
            let s = shifted_cross_entropy(&logits, &input, &w)?;
            let loss = (s.loss_sum / s.tokens)?;
            let _ = loss.to_scalar::<f32>()?;
            let t1 = Instant::now();
            let grads = model.backward(&loss)?;
            let t2 = Instant::now();
            let norm = global_grad_norm(&grads, &vars)?;
            opt.step_scaled(&grads, 1e-4, clip_factor(norm, 1.0))?;
            drop(grads);
            let t3 = Instant::now();
            if i >= 3 {
                fwd.push((t1 - t0).as_secs_f64());
                bwd.push((t2 - t1).as_secs_f64());
                opt_t.push((t3 - t2).as_secs_f64());
                total.push((t3 - t0).as_secs_f64());
            }
        }
        let tokens = (c.batch * c.seq) as f64;
        let step = median(total);
        let tok_s = tokens / step;
        let n = c.cfg.num_parameters() as f64;
        let gflops = 6.0 * n * tok_s / 1e9;
        let reference = match (&torch, fused) {
            (Some(py), true) => torch_reference(py, c.name, recompute, bf16_on),
            _ => None,
        };
        let work = wick::train::estimate::work_per_token(&c.cfg, c.seq as u64, recompute);
        let estimate_tok_s =
            1.0 / wick::train::estimate::seconds_for(work.flop_equivalents(), estimate_peak);
        let (t_tok, t_rss, ratio) = match reference {
            Some((tok, rss)) => (
                format!("{tok:.0}"),
                format!("{rss:.0}"),
                format!("{:.2}×", tok_s / tok),
            ),
            None => ("—".into(), "—".into(), "—".into()),
        };
        println!(
            "| {} | {:.1}M | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0}% | {t_tok} | {t_rss} | {ratio} | {:.0} | {:.2} | {:.4} | {:.0} |",
            {
                let mut tags = vec![];
                if !fused {
                    tags.push("composite ops");
                }
                if recompute {
                    tags.push("recompute");
                }
                if bf16_on {
                    tags.push("bf16");
                }
                if tags.is_empty() {
                    c.name.to_string()
                } else {
                    format!("{} ({})", c.name, tags.join(", "))
                }
            },
            n / 1e6,
            tokens,
            tok_s,
            step * 1e3,
            median(fwd) * 1e3,
            median(bwd) * 1e3,
            median(opt_t) * 1e3,
            peak_rss_mib(),
            gflops,
            100.0 * gflops / peak,
            estimate_tok_s,
            estimate_tok_s / tok_s,
            work.flops / 1e9,
            work.written,
        );
    }
    Ok(())
}
