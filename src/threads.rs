//! Thread settings for the `wick` process, applied before any thread starts.
//!
//! candle 0.11 runs its elementwise CPU ops on a pool of its own (`candle-bp-*` threads) beside
//! the rayon pool that runs the matrix products and Wick's fused ops. After every op it is given,
//! a pool thread spins (25,000 `pause`s) before it sleeps, and on a machine with few cores that
//! spinning takes a core from the rayon threads doing the products of the next op: a fifth of a
//! training step's samples in `perf` on 2 cores (`docs/benchmarks.md`). With one candle thread
//! the pool has no workers and candle's elementwise ops run on the calling thread; matmuls
//! (through `gemm`, sized by `RAYON_NUM_THREADS`) and the fused ops stay parallel.

/// The variable candle sizes its elementwise pool by.
pub const CANDLE_THREADS_ENV: &str = "CANDLE_NUM_THREADS";

/// Gives candle's elementwise pool one thread (no spinning workers) unless the user chose a size
/// with `CANDLE_NUM_THREADS`.
///
/// # Safety
/// Call it before the process starts any other thread (it sets an environment variable, which
/// another thread reading the environment at the same time could see torn).
pub unsafe fn one_candle_thread() {
    if std::env::var_os(CANDLE_THREADS_ENV).is_none() {
        // SAFETY: no other thread exists yet (the caller's promise).
        unsafe { std::env::set_var(CANDLE_THREADS_ENV, "1") };
    }
}
