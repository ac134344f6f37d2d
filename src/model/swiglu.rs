//! Fused SwiGLU activation with its backward pass, for the CPU: `silu(gate) · up` in one parallel
//! pass, where candle's composite makes three single-threaded passes forward (sigmoid, multiply,
//! multiply) and keeps the sigmoid and the SiLU output for backward. Backward recomputes the
//! sigmoid from the inputs, the only tensors it keeps:
//!
//! - `d gate = g · up · σ(gate) · (1 + gate · (1 − σ(gate)))`,
//! - `d up = g · gate · σ(gate)`.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::ops::{Real, contiguous};

/// Elements per rayon task.
const CHUNK: usize = 16 * 1024;

/// `silu(gate) · up` for two tensors of the same shape, differentiable in both.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.shape() != up.shape() {
        candle_core::bail!(
            "swiglu: gate {:?} and up {:?} differ",
            gate.dims(),
            up.dims()
        );
    }
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

fn sigmoid<R: Real>(x: R) -> R {
    R::ONE.div(R::ONE.add((R::ZERO - x).exp()))
}

fn forward<R: Real>(gate: &[R], up: &[R]) -> Vec<R> {
    let mut out = vec![R::ZERO; gate.len()];
    out.par_chunks_mut(CHUNK)
        .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
        .for_each(|(o, (g, u))| {
            for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                *o = g * sigmoid(g) * u;
            }
        });
    out
}

/// `d gate` for every element, then `d up`: 2·N values.
fn backward<R: Real>(gate: &[R], up: &[R], grad: &[R]) -> Vec<R> {
    let n = gate.len();
    let mut out = vec![R::ZERO; 2 * n];
    let (dg, du) = out.split_at_mut(n);
    dg.par_chunks_mut(CHUNK)
        .zip(du.par_chunks_mut(CHUNK))
        .zip(
            gate.par_chunks(CHUNK)
                .zip(up.par_chunks(CHUNK).zip(grad.par_chunks(CHUNK))),
        )
        .for_each(|((dg, du), (g, (u, gr)))| {
            for i in 0..g.len() {
                let s = sigmoid(g[i]);
                let silu = g[i] * s;
                du[i] = gr[i] * silu;
                dg[i] = gr[i] * u[i] * s * R::ONE.add(g[i] * (R::ONE - s));
            }
        });
    out
}

struct SwiGlu;

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match (s1, s2) {
            (CpuStorage::F32(g), CpuStorage::F32(u)) => {
                CpuStorage::F32(forward(contiguous(g, l1)?, contiguous(u, l2)?))
            }
            (CpuStorage::F64(g), CpuStorage::F64(u)) => {
                CpuStorage::F64(forward(contiguous(g, l1)?, contiguous(u, l2)?))
            }
            _ => candle_core::bail!("swiglu supports f32 and f64 on CPU, gate and up alike"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let n = gate.elem_count();
        let both = gate.apply_op3_no_bwd(up, &grad_res.contiguous()?, &SwiGluGrad)?; // (2N)
        let dg = both.narrow(0, 0, n)?.reshape(gate.shape())?;
        let du = both.narrow(0, n, n)?.reshape(up.shape())?;
        Ok((Some(dg), Some(du)))
    }
}

struct SwiGluGrad;

impl CustomOp3 for SwiGluGrad {
    fn name(&self) -> &'static str {
        "swiglu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(g), CpuStorage::F32(u), CpuStorage::F32(d)) => CpuStorage::F32(
                backward(contiguous(g, l1)?, contiguous(u, l2)?, contiguous(d, l3)?),
            ),
            (CpuStorage::F64(g), CpuStorage::F64(u), CpuStorage::F64(d)) => CpuStorage::F64(
                backward(contiguous(g, l1)?, contiguous(u, l2)?, contiguous(d, l3)?),
            ),
            _ => candle_core::bail!("swiglu backward supports f32 and f64 on CPU"),
        };
        Ok((out, Shape::from(2 * l1.shape().elem_count())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::max_abs_diff;
    use candle_core::{Device, Var};

    #[test]
    fn matches_the_composite_forward_and_backward() {
        let dev = Device::Cpu;
        // More elements than one task, the last task partial.
        let shape = (3, 7, 1000);
        let g = Var::from_tensor(&Tensor::randn(0f64, 2.0, shape, &dev).unwrap()).unwrap();
        let u = Var::from_tensor(&Tensor::randn(0f64, 1.0, shape, &dev).unwrap()).unwrap();
        let probe = Tensor::randn(0f64, 1.0, shape, &dev).unwrap();
        let fused = swiglu(g.as_tensor(), u.as_tensor()).unwrap();
        let reference = (g.as_tensor().silu().unwrap() * u.as_tensor()).unwrap();
        let d = max_abs_diff(&fused, &reference);
        assert!(d < 1e-14, "forward differs by {d}");
        let g1 = crate::testing::probe_grads(&fused, &probe);
        let g2 = crate::testing::probe_grads(&reference, &probe);
        let of = [("gate", g.as_tensor()), ("up", u.as_tensor())];
        crate::testing::assert_same_grads(&g1, &g2, &of, 1e-13);
        assert!(swiglu(g.as_tensor(), &u.as_tensor().narrow(2, 0, 10).unwrap()).is_err());
    }
}
