//! Small dense matrix products for the fused CPU ops, through the `gemm` crate that candle's own
//! CPU matmul uses (built here with its AVX-512 kernels, picked at run time when the processor
//! has them). The fused ops call it from inside their own rayon tasks, one product per task and
//! single-threaded, on strided views of buffers they already hold, so no operand is copied into
//! a contiguous layout first.

/// A read-only matrix view: element `(r, c)` is at `data[off + r·rs + c·cs]`.
#[derive(Clone, Copy)]
pub struct View<'a, R> {
    pub data: &'a [R],
    pub off: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, R> View<'a, R> {
    /// A row-major matrix with row stride `rs` starting at `off`.
    pub fn rows(data: &'a [R], off: usize, rs: usize) -> Self {
        View {
            data,
            off,
            rs,
            cs: 1,
        }
    }

    /// The transpose of the row-major matrix with row stride `rs` starting at `off`.
    pub fn rows_t(data: &'a [R], off: usize, rs: usize) -> Self {
        View {
            data,
            off,
            rs: 1,
            cs: rs,
        }
    }

    /// Checks that an `m × n` matrix of this view lies inside its slice.
    fn check(&self, m: usize, n: usize) {
        if m > 0 && n > 0 {
            let last = self.off + (m - 1) * self.rs + (n - 1) * self.cs;
            assert!(last < self.data.len(), "gemm view out of bounds");
        }
    }
}

/// A writable destination of a product, by raw pointer so that parallel tasks can write disjoint
/// parts of one output buffer. Element `(r, c)` is at `ptr + r·rs + c·cs`.
#[derive(Clone, Copy)]
pub struct Dst<R> {
    ptr: *mut R,
    len: usize,
    pub off: usize,
    pub rs: usize,
    pub cs: usize,
}

// SAFETY: a `Dst` is only a pointer into a buffer the caller keeps alive for the whole parallel
// section; the callers give each task a disjoint set of elements.
unsafe impl<R: Send> Send for Dst<R> {}
unsafe impl<R: Send> Sync for Dst<R> {}

impl<R> Dst<R> {
    /// The whole of `buf`, row-major with row stride `rs`, starting at `off`.
    pub fn rows(buf: &mut [R], off: usize, rs: usize) -> Self {
        Dst {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            off,
            rs,
            cs: 1,
        }
    }

    /// The same buffer at another offset.
    pub fn at(self, off: usize) -> Self {
        Dst { off, ..self }
    }

    /// Element `i` of the buffer.
    ///
    /// # Safety
    /// No other task may touch element `i` at the same time.
    pub unsafe fn elem(&self, i: usize) -> *mut R {
        assert!(i < self.len, "dst index out of bounds");
        // SAFETY: in bounds by the assertion; exclusivity is the caller's promise.
        unsafe { self.ptr.add(i) }
    }

    fn check(&self, m: usize, n: usize) {
        if m > 0 && n > 0 {
            let last = self.off + (m - 1) * self.rs + (n - 1) * self.cs;
            assert!(last < self.len, "gemm destination out of bounds");
        }
    }
}

/// `dst (m × n) = beta · a (m × k) · b (k × n)`, or `dst += beta · a · b` when `accumulate`.
/// Single-threaded: call it from inside a parallel task.
///
/// # Safety
/// No other thread may access the `m × n` elements of `dst` during the call.
pub(super) unsafe fn matmul<R: Copy + 'static + super::ops::Real>(
    dst: Dst<R>,
    a: View<'_, R>,
    b: View<'_, R>,
    (m, n, k): (usize, usize, usize),
    beta: R,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    a.check(m, k);
    b.check(k, n);
    dst.check(m, n);
    // SAFETY: every view was checked to lie inside its buffer; the destination's exclusivity is
    // the caller's promise.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr.add(dst.off),
            dst.cs as isize,
            dst.rs as isize,
            accumulate,
            a.data.as_ptr().add(a.off),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr().add(b.off),
            b.cs as isize,
            b.rs as isize,
            R::ONE,
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_products_match_the_naive_loop() {
        // a: 3×4 row-major inside a wider buffer (row stride 6, offset 1); b: the transpose of a
        // 5×4 row-major matrix; accumulate onto a non-zero destination.
        let abuf: Vec<f64> = (0..20).map(|i| (i as f64) * 0.5 - 3.0).collect();
        let bbuf: Vec<f64> = (0..20).map(|i| ((i * 7) % 11) as f64 - 5.0).collect();
        let a = View::rows(&abuf, 1, 6);
        let b = View::rows_t(&bbuf, 0, 4);
        let mut out = vec![1.0f64; 3 * 5];
        let expected: Vec<f64> = (0..3)
            .flat_map(|i| {
                let (abuf, bbuf) = (&abuf, &bbuf);
                (0..5).map(move |j| {
                    1.0 + 0.5
                        * (0..4)
                            .map(|p| abuf[1 + i * 6 + p] * bbuf[j * 4 + p])
                            .sum::<f64>()
                })
            })
            .collect();
        unsafe { matmul(Dst::rows(&mut out, 0, 5), a, b, (3, 5, 4), 0.5, true) };
        for (g, e) in out.iter().zip(&expected) {
            assert!((g - e).abs() < 1e-12, "{g} vs {e}");
        }
    }
}
