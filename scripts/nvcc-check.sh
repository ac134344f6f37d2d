#!/usr/bin/env bash
# The nvcc that `scripts/cuda-build.sh check` hands to the kernel build scripts (through $NVCC,
# which cudaforge, candle's kernel builder, and Wick's build.rs both honour): the real nvcc
# ($WICK_REAL_NVCC) with the device code compiled by nvcc's front end but neither optimised nor
# assembled. Each `-gencode=arch=compute_XX,code=sm_XX` becomes `code=compute_XX` (PTX only, no
# ptxas) and `-Xcicc -O0` is added. A source error still stops the check; what it would have
# written is never used, since `cargo check` links nothing. Measured on candle's quantized-matmul
# kernels (one of the 15 files of its static library): 58 s at -O3 with SASS, 10 s like this.
set -euo pipefail
args=()
for a in "$@"; do
    case "$a" in
    -gencode=arch=compute_*,code=sm_*)
        arch=${a#-gencode=arch=}
        arch=${arch%%,*}
        args+=("-gencode=arch=$arch,code=$arch")
        ;;
    *) args+=("$a") ;;
    esac
done
exec "${WICK_REAL_NVCC:?set by scripts/cuda-build.sh}" -Xcicc -O0 "${args[@]}"
