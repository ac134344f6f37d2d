#!/usr/bin/env bash
# Builds Wick's `cuda` feature on a machine without a GPU or a CUDA toolkit (CI, a developer's
# laptop): nvcc and the CUDA 13.0 libraries come from PyPI into a venv, and a stub `libcuda.so`
# (every entry point answers CUDA_ERROR_NO_DEVICE) stands in for the driver at link time. The
# binary it builds runs on a GPU machine with the real driver and that machine's CUDA libraries on
# LD_LIBRARY_PATH (never the stub folder). Measured facts behind the pins: ../shared/notes/gpu-build.md.
#
#   scripts/cuda-build.sh check [cargo args]   # cargo check --features cuda (CI: the GPU code compiles)
#   scripts/cuda-build.sh build [cargo args]   # a release binary for sm_90 (H100/H200), target/cuda/release
#
# The toolkit venv lives in $WICK_CUDA_DIR (default target/cuda-toolkit, ~1.2 GB); `build` writes
# to target/cuda, apart from the CPU build. Run from anywhere in the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-}
case "$mode" in
check | build) shift ;;
*)
    echo "usage: scripts/cuda-build.sh check|build [cargo args]" >&2
    exit 2
    ;;
esac

dir=${WICK_CUDA_DIR:-target/cuda-toolkit}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
[ -x "$dir/venv/bin/pip" ] || python3 -m venv "$dir/venv"
# The versions PyTorch's cu130 wheels carry (the GPU machines run driver 580 = CUDA 13.0): cudarc
# 0.19 refuses an nvcc newer than it knows, and driver 580 cannot load PTX from a newer nvcc.
"$dir/venv/bin/pip" install -q --disable-pip-version-check \
    "nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-crt==13.0.88" "nvidia-nvvm==13.0.88" \
    "nvidia-cuda-cccl==13.0.85" "cuda-toolkit[cudart,cublas,curand,nvrtc]==13.0.2"
cuda=$(echo "$dir"/venv/lib/python3*/site-packages/nvidia/cu13)
[ -x "$cuda/bin/nvcc" ] || {
    echo "no nvcc under $cuda" >&2
    exit 1
}
# The unversioned names the linker looks for (cudarc links -lcublas -lcublasLt -lcudart -lnvrtc
# -lcurand -lcuda).
for lib in cublas cublasLt cudart nvrtc; do ln -sf "lib$lib.so.13" "$cuda/lib/lib$lib.so"; done
ln -sf libcurand.so.10 "$cuda/lib/libcurand.so"

# The driver stub, made from the entry points of the cudarc version Cargo.lock pins. It must exist
# before cudarc's build script first runs: that script only adds folders that exist to the link path.
if [ ! -f "$cuda/lib/stubs/libcuda.so" ]; then
    cargo fetch --locked -q
    version=$(awk '/^name = "cudarc"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
    sys=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$version"/src/driver/sys | head -n 1)
    mkdir -p "$cuda/lib/stubs"
    grep -ohE 'pub unsafe fn cu[A-Za-z0-9_]+' "$sys/mod.rs" |
        awk '{ print "int " $4 "(void) { return 100; }" }' | sort -u >"$dir/libcuda_stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$cuda/lib/stubs/libcuda.so" "$dir/libcuda_stub.c"
fi

# sm_90: the H100 and H200 the device checks run on.
export PATH="$cuda/bin:$PATH" CUDA_HOME="$cuda" CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
case "$mode" in
# Into the CPU build's own target folder: a check writes no binaries, and the build scripts and
# proc macros it shares with the CPU build are compiled once (12 min cold here instead of 17).
# The kernels go through nvcc's front end only (scripts/nvcc-check.sh says why).
check) WICK_REAL_NVCC="$cuda/bin/nvcc" NVCC="$PWD/scripts/nvcc-check.sh" \
    cargo check --locked --features cuda --lib --bins "$@" ;;
# Apart, so that the CUDA binary does not replace the CPU one at target/release/wick.
build) CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda} cargo build --locked --release --features cuda "$@" ;;
esac
