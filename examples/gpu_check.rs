//! Issue 11's device check, one binary that `scripts/gpu-check.sh` runs on a GPU machine (built
//! there from nothing but this file's `cuda` build): the GPU's name and memory, the first kernel's
//! start-up (the driver compiling candle's PTX), CPU-vs-GPU parity of the tiny Llama's loss and
//! gradients (with candle's composite ops, then with Wick's CUDA kernels), 20 AdamW steps, bf16
//! against f32 over 200 steps, and the ~125M Llama's training step in f32 and bf16, each with
//! candle's composite ops and with Wick's kernels. Prints one JSON document with every figure.
//!
//!   gpu_check --device cuda:0                       # on the GPU machine
//!   gpu_check --device cpu --config tiny --quick    # the dry run (scripts/gpu-check.sh dry-run)

use std::time::Instant;

use candle_core::Tensor;
use serde_json::{Value, json};
use wick::devices::DeviceId;
use wick::model::ops::{set_cuda_kernels, set_fused_ops};
use wick::train::device_parity::{
    adamw_parity, bf16_against_f32, gradient_parity, llama_125m, set_tf32, step_speed, tiny_config,
};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn to_json(v: impl serde::Serialize) -> anyhow::Result<Value> {
    Ok(serde_json::to_value(v)?)
}

/// Puts one check's figures (or its error) under `key`, and a line of them on stderr.
fn record(out: &mut Value, key: &str, v: anyhow::Result<Value>) {
    let v = v.unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
    let line: String = v.to_string().chars().take(400).collect();
    eprintln!("{key}: {line}");
    out[key] = v;
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let id: DeviceId = arg(&args, "--device")
        .unwrap_or_else(|| "cuda:0".into())
        .parse()?;
    let config = arg(&args, "--config").unwrap_or_else(|| "125m".into());
    let quick = args.iter().any(|a| a == "--quick");
    let peak = arg(&args, "--peak-tflops").map_or(Ok(989.0), |p| p.parse())?;
    let (batch, seq) = match config.as_str() {
        "125m" => (16, 1024),
        _ => (2, 64),
    };
    let batch = arg(&args, "--batch").map_or(Ok(batch), |b| b.parse())?;
    let seq = arg(&args, "--seq").map_or(Ok(seq), |s| s.parse())?;
    let cfg = if config == "125m" {
        llama_125m()
    } else {
        tiny_config()
    };
    let mut out = json!({"device": id.to_string(), "config": config, "host_cpu": wick::machine::cpu_description()});
    let info = id.describe()?;
    out["device_info"] = serde_json::to_value(&info)?;

    // The first kernel pays for the driver's PTX compilation (cached afterwards in ~/.nv).
    let t = Instant::now();
    let dev = id.open()?;
    let opened = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let a = Tensor::randn(0f32, 1.0, (256, 256), &dev)?;
    let first = candle_nn::ops::softmax_last_dim(&a.matmul(&a)?)?
        .exp()?
        .sum_all()?
        .to_scalar::<f32>()?;
    out["startup"] =
        json!({"open_s": opened, "first_kernels_s": t.elapsed().as_secs_f64(), "check": first});
    eprintln!("{info:?}: opened in {opened:.2} s");

    let tiny = tiny_config();
    // On the CPU the candidate runs candle's composite ops (what a GPU runs without Wick's
    // kernels); on a GPU, candle's composite ops and then Wick's kernels.
    let on_gpu = !dev.is_cpu();
    let composite = || {
        set_fused_ops(on_gpu);
        set_cuda_kernels(false);
    };
    let reset = || {
        set_fused_ops(true);
        set_cuda_kernels(false);
    };
    record(
        &mut out,
        "gradient_parity",
        gradient_parity(&tiny, &dev, composite)
            .map_err(Into::into)
            .and_then(to_json),
    );
    reset();
    if on_gpu {
        let kernels = || set_cuda_kernels(true);
        let g = gradient_parity(&tiny, &dev, kernels);
        record(
            &mut out,
            "gradient_parity_kernels",
            g.map_err(Into::into).and_then(to_json),
        );
        reset();
    }
    let adam = adamw_parity(&tiny, &dev, if quick { 5 } else { 20 }, composite);
    record(
        &mut out,
        "adamw_parity",
        adam.map_err(Into::into).and_then(to_json).map(|mut v| {
            v.as_object_mut().map(|o| o.remove("losses_cpu"));
            v
        }),
    );
    reset();
    let curves = bf16_against_f32(&tiny, &dev, if quick { 20 } else { 200 });
    record(
        &mut out,
        "bf16_against_f32",
        curves.map_err(Into::into).and_then(to_json).map(|mut v| {
            for k in ["losses_f32", "losses_bf16"] {
                // Every tenth point is plot enough.
                if let Some(Value::Array(l)) = v.get_mut(k) {
                    *l = l.iter().step_by(10).cloned().collect();
                }
            }
            v
        }),
    );

    let (warmup, steps) = if quick { (1, 2) } else { (3, 10) };
    let mut speed = Vec::new();
    // "fused": Wick's fused ops (its CUDA kernels on a GPU); "composite": candle's ops.
    for (mode, bf16, fused, tf32) in [
        ("f32-composite", false, false, false),
        ("f32-fused", false, true, false),
        ("tf32-fused", false, true, true),
        ("bf16-composite", true, false, false),
        ("bf16-fused", true, true, false),
    ] {
        if tf32 && !on_gpu {
            continue;
        }
        set_fused_ops(fused || on_gpu);
        set_cuda_kernels(fused);
        set_tf32(tf32);
        let r = step_speed(&cfg, &dev, batch, seq, bf16, (warmup, steps), peak);
        let mut v = r
            .map_err(Into::into)
            .and_then(to_json)
            .unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
        v["run"] = json!(mode);
        eprintln!("{v}");
        speed.push(v);
    }
    reset();
    set_tf32(false);
    out["speed"] = Value::Array(speed);
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
