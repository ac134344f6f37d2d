//! Rebuilds when a migration is added: `sqlx::migrate!` embeds the migrations folder at compile
//! time, and cargo would not otherwise notice a new file in it. With the `cuda` feature, compiles
//! `src/model/kernels.cu` to PTX with nvcc (`$NVCC`, else `nvcc` on the PATH) for
//! `CUDA_COMPUTE_CAP` (default 90: H100/H200), which `src/model/cuda_ops.rs` embeds.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        compile_kernels();
    }
}

fn compile_kernels() {
    let src = "src/model/kernels.cu";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("wick_kernels.ptx");
    let status = Command::new(&nvcc)
        .args(["--ptx", "-std=c++17", "-O3"])
        .arg(format!("-gencode=arch=compute_{cap},code=compute_{cap}"))
        .arg(src)
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| {
            panic!("running {nvcc} (the cuda feature needs nvcc: scripts/cuda-build.sh): {e}")
        });
    assert!(status.success(), "{nvcc} failed on {src}");
}
