//! Device parity (issue 11): the tiny Llama's loss and every parameter's gradient, 20 AdamW steps,
//! and bf16 against f32, on another device against the CPU reference
//! ([`wick::train::device_parity`]). Without a GPU the candidate is the CPU with candle's composite
//! ops instead of Wick's fused ones, which tests the harness and the composite path that GPUs
//! run. `WICK_TEST_CUDA=1` runs the same checks on `cuda:0` at the tolerances (the device
//! check, `scripts/gpu-check.sh`, sets it); it fails, not skips, when there is no GPU then.

use std::sync::Mutex;

use candle_core::Device;
use wick::model::ops::{set_cuda_kernels, set_fused_ops};
use wick::train::device_parity::{adamw_parity, bf16_against_f32, gradient_parity, tiny_config};

/// The fused-ops switch is process-wide: one test at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Fused ops back on even when an assertion fails.
struct FusedBackOn;
impl Drop for FusedBackOn {
    fn drop(&mut self) {
        set_fused_ops(true);
    }
}

#[test]
fn composite_ops_match_the_fused_cpu_reference() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _on = FusedBackOn;
    let cfg = tiny_config();
    let g = gradient_parity(&cfg, &Device::Cpu, || set_fused_ops(false)).unwrap();
    eprintln!("{}", serde_json::to_string(&g).unwrap());
    assert_eq!(g.parameters, cfg.parameter_shapes().len());
    assert!(g.zero_gradients.is_empty(), "{:?}", g.zero_gradients);
    assert!(g.loss_relative_error < 1e-6, "{g:?}");
    assert!(g.max_grad_relative_error < 1e-4, "{g:?}");
    // The measure is not blind: a gradient off by one part in a thousand reads as such.
    let v = 1e-3;
    let t = candle_core::Tensor::randn(0f32, 1.0, (8, 8), &Device::Cpu).unwrap();
    let off = wick::train::device_parity::relative_error(&(&t * (1.0 + v)).unwrap(), &t).unwrap();
    assert!((off - v).abs() < 1e-5, "{off}");
    set_fused_ops(true);
    let s = adamw_parity(&cfg, &Device::Cpu, 5, || set_fused_ops(false)).unwrap();
    eprintln!("{}", serde_json::to_string(&s).unwrap());
    assert!(s.max_loss_relative_error < 1e-5, "{s:?}");
    // AdamW's update is about ±lr wherever a gradient is tiny, so a rounding difference in such
    // a gradient's sign moves a weight by up to 2·lr: weights track to 1e-3 of their scale.
    assert!(s.max_weight_relative_error < 1e-3, "{s:?}");
}

#[test]
fn cuda_matches_the_cpu() {
    if std::env::var("WICK_TEST_CUDA").as_deref() != Ok("1") {
        eprintln!("skipped: set WICK_TEST_CUDA=1 on a machine with a GPU and the cuda build");
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dev = Device::new_cuda(0).expect("WICK_TEST_CUDA=1 needs cuda:0");
    let cfg = tiny_config();
    // candle's composite ops on the GPU, then Wick's CUDA kernels.
    for kernels in [false, true] {
        let g = gradient_parity(&cfg, &dev, || set_cuda_kernels(kernels)).unwrap();
        eprintln!("kernels {kernels}: {}", serde_json::to_string(&g).unwrap());
        assert!(g.zero_gradients.is_empty(), "{:?}", g.zero_gradients);
        assert!(g.loss_relative_error < 1e-5, "kernels {kernels}: {g:?}");
        assert!(g.max_grad_relative_error < 1e-5, "kernels {kernels}: {g:?}");
    }
    set_cuda_kernels(false);
    let s = adamw_parity(&cfg, &dev, 20, || {}).unwrap();
    eprintln!("{}", serde_json::to_string(&s).unwrap());
    assert!(s.max_loss_relative_error < 1e-4, "{s:?}");
    let p = bf16_against_f32(&cfg, &dev, 200).unwrap();
    eprintln!(
        "bf16 {} f32 {} ({:.3}%)",
        p.final_bf16,
        p.final_f32,
        100.0 * p.final_relative_difference
    );
    assert!(p.bf16_active);
    assert!(p.final_relative_difference < 0.01, "{p:?}");
}
