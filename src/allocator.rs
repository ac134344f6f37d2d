//! Allocator settings for processes that train. A training step allocates and frees hundreds of
//! megabytes of activations and gradients; by default mimalloc hands freed pages back to the
//! kernel after a short delay, so the next step faults them in again and the kernel zeroes every
//! page (a fifth of a step's time on config A, `docs/benchmarks.md`). A training process instead
//! keeps what it freed: its peak memory is what it needs anyway, and it exits when the job ends.

use libmimalloc_sys::{mi_option_set, mi_option_t};

// Option numbers of mimalloc 3's `mi_option_e` (the Rust bindings do not name these two).
/// Milliseconds before freed memory is returned to the OS; −1: never.
const PURGE_DELAY: mi_option_t = 15;
/// How much address space mimalloc reserves per arena, in KiB (1 GiB by default).
const ARENA_RESERVE: mi_option_t = 23;

/// Makes mimalloc keep freed memory for reuse instead of returning it to the kernel, and reserve
/// address space (not memory) 4 GiB at a time so large activations come from one arena. Call it at
/// the start of a process that trains; not in the API server, whose memory should shrink again.
pub fn keep_freed_memory() {
    // SAFETY: plain option setters of the allocator (not thread-safe, so called before a training
    // starts its threads; a racing read only sees the old or the new value).
    unsafe {
        mi_option_set(PURGE_DELAY, -1);
        mi_option_set(ARENA_RESERVE, 4 << 20);
    }
}
