//! The GPU side of the fused ops (`cuda` feature): launches `kernels.cu`'s kernels for the
//! `cuda_fwd` of [`super::ops`]' causal softmax and row cross-entropy, of [`super::rms_norm`] and
//! of [`super::rope::rotary`], forward and backward, on f32 tensors. The CPU implementations of the same
//! ops are the references (tested against candle's composite ops); the GPU-gated parity test
//! compares a model on the GPU with these kernels against the CPU.
//!
//! **Not yet run on a GPU.** They run only when `WICK_CUDA_KERNELS=1`
//! ([`super::ops::cuda_kernels_on`]); without
//! it a CUDA tensor takes candle's composite ops, as before.

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage, WrapErr};
use candle_core::{Layout, Result};

/// The kernels, compiled to PTX by build.rs (for sm_90 unless `CUDA_COMPUTE_CAP` says otherwise).
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/wick_kernels.ptx"));
const MODULE: &str = "wick_kernels";
/// Threads per block (`BLOCK` in kernels.cu).
const BLOCK: u32 = 256;

/// The elements of a contiguous operand (f32 values, u32 targets); `what` names the op in the
/// error for any other layout.
fn view<'a, T: CudaDType>(s: &'a CudaStorage, l: &Layout, what: &str) -> Result<CudaView<'a, T>> {
    let slice = s.as_cuda_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(slice.slice(a..b)),
        None => candle_core::bail!("{what}: the CUDA kernels expect contiguous input"),
    }
}

fn f32s<'a>(s: &'a CudaStorage, l: &Layout, what: &str) -> Result<CudaView<'a, f32>> {
    view(s, l, what)
}

/// A grid of `x` × `y` blocks of [`BLOCK`] threads.
fn grid(x: usize, y: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (x as u32, y as u32, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block per row.
fn rows(n: usize) -> LaunchConfig {
    grid(n, 1)
}

fn wrap(slice: CudaSlice<f32>, dev: &CudaDevice) -> CudaStorage {
    CudaStorage::wrap_cuda_slice(slice, dev.clone())
}

/// RMSNorm forward: `x` (N, C) contiguous, `w` (C).
pub fn rms_norm_fwd(
    x: &CudaStorage,
    xl: &Layout,
    w: &CudaStorage,
    wl: &Layout,
    c: usize,
    eps: f64,
) -> Result<CudaStorage> {
    let dev = &x.device;
    let (xv, wv) = (f32s(x, xl, "rms_norm")?, f32s(w, wl, "rms_norm")?);
    let n = xl.shape().elem_count() / c;
    // SAFETY: every element is written by the kernel.
    let y = unsafe { dev.alloc::<f32>(n * c)? };
    let f = dev.get_or_load_custom_func("wick_rms_norm_fwd_f32", MODULE, PTX)?;
    let mut b = f.builder();
    b.arg(&xv);
    b.arg(&wv);
    b.arg(&y);
    candle_core::builder_arg!(b, c as i32, eps as f32);
    // SAFETY: the arguments match the kernel's signature; the grid covers the N rows.
    unsafe { b.launch(rows(n)) }.w()?;
    Ok(wrap(y, dev))
}

/// Row chunks of the deterministic `dw` sum (each a block row of partial column sums).
const DW_CHUNKS: usize = 64;

/// RMSNorm backward: `dx` (N rows) followed by one row of `dw`, (N + 1) × C values, as the CPU op.
pub fn rms_norm_bwd(
    x: (&CudaStorage, &Layout),
    w: (&CudaStorage, &Layout),
    g: (&CudaStorage, &Layout),
    c: usize,
    eps: f64,
) -> Result<CudaStorage> {
    let dev = &x.0.device;
    let xv = f32s(x.0, x.1, "rms_norm backward")?;
    let wv = f32s(w.0, w.1, "rms_norm backward")?;
    let gv = f32s(g.0, g.1, "rms_norm backward")?;
    let n = x.1.shape().elem_count() / c;
    // SAFETY: the kernels below write every element of each buffer before it is read.
    let mut out = unsafe { dev.alloc::<f32>((n + 1) * c)? };
    let rs = unsafe { dev.alloc::<f32>(n)? };
    let chunks = DW_CHUNKS.min(n.max(1));
    let partial = unsafe { dev.alloc::<f32>(chunks * c)? };
    {
        let f = dev.get_or_load_custom_func("wick_rms_norm_bwd_dx_f32", MODULE, PTX)?;
        let mut dx = out.slice_mut(0..n * c);
        let mut b = f.builder();
        b.arg(&xv);
        b.arg(&wv);
        b.arg(&gv);
        b.arg(&mut dx);
        b.arg(&rs);
        candle_core::builder_arg!(b, c as i32, eps as f32);
        // SAFETY: as in the forward.
        unsafe { b.launch(rows(n)) }.w()?;
    }
    let cols = c.div_ceil(BLOCK as usize);
    {
        let f = dev.get_or_load_custom_func("wick_rms_norm_bwd_dw_partial_f32", MODULE, PTX)?;
        let mut b = f.builder();
        b.arg(&xv);
        b.arg(&gv);
        b.arg(&rs);
        b.arg(&partial);
        candle_core::builder_arg!(b, n as i32, c as i32);
        // SAFETY: the grid covers C columns × `chunks` row chunks.
        unsafe { b.launch(grid(cols, chunks)) }.w()?;
    }
    {
        let f = dev.get_or_load_custom_func("wick_column_sums_f32", MODULE, PTX)?;
        let mut dw = out.slice_mut(n * c..(n + 1) * c);
        let mut b = f.builder();
        b.arg(&partial);
        b.arg(&mut dw);
        candle_core::builder_arg!(b, chunks as i32, c as i32);
        // SAFETY: one thread per column.
        unsafe { b.launch(grid(cols, 1)) }.w()?;
    }
    Ok(wrap(out, dev))
}

/// Causal softmax forward of `x` (..., T, T).
pub fn causal_softmax_fwd(
    x: &CudaStorage,
    l: &Layout,
    t: usize,
    scale: f64,
) -> Result<CudaStorage> {
    let dev = &x.device;
    let xv = f32s(x, l, "causal_softmax")?;
    let n = l.shape().elem_count() / t;
    // SAFETY: every element is written (masked ones as 0).
    let y = unsafe { dev.alloc::<f32>(n * t)? };
    let f = dev.get_or_load_custom_func("wick_causal_softmax_fwd_f32", MODULE, PTX)?;
    let mut b = f.builder();
    b.arg(&xv);
    b.arg(&y);
    candle_core::builder_arg!(b, t as i32, scale as f32);
    // SAFETY: one block per row.
    unsafe { b.launch(rows(n)) }.w()?;
    Ok(wrap(y, dev))
}

/// Causal softmax backward from its output `y` and the output's gradient `g`.
pub fn causal_softmax_bwd(
    y: (&CudaStorage, &Layout),
    g: (&CudaStorage, &Layout),
    t: usize,
    scale: f64,
) -> Result<CudaStorage> {
    let dev = &y.0.device;
    let yv = f32s(y.0, y.1, "causal_softmax backward")?;
    let gv = f32s(g.0, g.1, "causal_softmax backward")?;
    let n = y.1.shape().elem_count() / t;
    // SAFETY: every element is written.
    let dx = unsafe { dev.alloc::<f32>(n * t)? };
    let f = dev.get_or_load_custom_func("wick_causal_softmax_bwd_f32", MODULE, PTX)?;
    let mut b = f.builder();
    b.arg(&yv);
    b.arg(&gv);
    b.arg(&dx);
    candle_core::builder_arg!(b, t as i32, scale as f32);
    // SAFETY: one block per row.
    unsafe { b.launch(rows(n)) }.w()?;
    Ok(wrap(dx, dev))
}

/// Per-row cross-entropy of `x` (N, V) against u32 `targets` (N). Targets must be below V (the
/// caller's tensors come from the tokenizer; the CPU op checks them).
pub fn cross_entropy_fwd(
    x: (&CudaStorage, &Layout),
    t: (&CudaStorage, &Layout),
    v: usize,
) -> Result<CudaStorage> {
    let dev = &x.0.device;
    let xv = f32s(x.0, x.1, "cross-entropy")?;
    let tv = view::<u32>(t.0, t.1, "cross-entropy targets")?;
    let n = x.1.shape().elem_count() / v;
    // SAFETY: one value per row, each written.
    let loss = unsafe { dev.alloc::<f32>(n)? };
    let f = dev.get_or_load_custom_func("wick_cross_entropy_fwd_f32", MODULE, PTX)?;
    let mut b = f.builder();
    b.arg(&xv);
    b.arg(&tv);
    b.arg(&loss);
    candle_core::builder_arg!(b, v as i32);
    // SAFETY: one block per row.
    unsafe { b.launch(rows(n)) }.w()?;
    Ok(wrap(loss, dev))
}

/// The cross-entropy's gradient to the logits, `g · (softmax − onehot)`, (N, V).
pub fn cross_entropy_bwd(
    x: (&CudaStorage, &Layout),
    t: (&CudaStorage, &Layout),
    g: (&CudaStorage, &Layout),
    v: usize,
) -> Result<CudaStorage> {
    let dev = &x.0.device;
    let xv = f32s(x.0, x.1, "cross-entropy backward")?;
    let tv = view::<u32>(t.0, t.1, "cross-entropy targets")?;
    let gv = f32s(g.0, g.1, "cross-entropy backward")?;
    let n = x.1.shape().elem_count() / v;
    // SAFETY: every element is written.
    let dx = unsafe { dev.alloc::<f32>(n * v)? };
    let f = dev.get_or_load_custom_func("wick_cross_entropy_bwd_f32", MODULE, PTX)?;
    let mut b = f.builder();
    b.arg(&xv);
    b.arg(&tv);
    b.arg(&gv);
    b.arg(&dx);
    candle_core::builder_arg!(b, v as i32);
    // SAFETY: one block per row.
    unsafe { b.launch(rows(n)) }.w()?;
    Ok(wrap(dx, dev))
}

/// RoPE's rotation of `x` (B, H, T, hd) by `cos`/`sin` (B, 1, T, hd), by −sin when `negate_sin`
/// (the backward pass).
pub fn rotary(
    x: (&CudaStorage, &Layout),
    cos: (&CudaStorage, &Layout),
    sin: (&CudaStorage, &Layout),
    (heads, t, hd): (usize, usize, usize),
    negate_sin: bool,
) -> Result<CudaStorage> {
    let dev = &x.0.device;
    let xv = f32s(x.0, x.1, "rotary")?;
    let cv = f32s(cos.0, cos.1, "rotary")?;
    let sv = f32s(sin.0, sin.1, "rotary")?;
    let n = x.1.shape().elem_count();
    // SAFETY: every element is written.
    let y = unsafe { dev.alloc::<f32>(n)? };
    let f = dev.get_or_load_custom_func("wick_rotary_f32", MODULE, PTX)?;
    let mut b = f.builder();
    b.arg(&xv);
    b.arg(&cv);
    b.arg(&sv);
    b.arg(&y);
    let sign: f32 = if negate_sin { -1.0 } else { 1.0 };
    candle_core::builder_arg!(b, heads as i32, t as i32, hd as i32, sign, n);
    // SAFETY: one thread per element, bounds-checked in the kernel.
    unsafe { b.launch(grid(n.div_ceil(BLOCK as usize), 1)) }.w()?;
    Ok(wrap(y, dev))
}
