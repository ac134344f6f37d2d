#!/usr/bin/env bash
# Issue 11's device check: Wick's CUDA build on a GPU machine, beside the machine's own PyTorch.
#
#   scripts/gpu-check.sh build     # here, on a CPU machine: the cuda build of examples/gpu_check.rs
#                                  # and tests/device_parity.rs, stripped and gzipped into
#                                  # target/gpu-check (13 MB each; 13 min cold on a 2-vCPU Zen 4)
#   scripts/gpu-check.sh run OUT   # on the GPU machine (the device tool carries target/gpu-check):
#                                  # writes OUT/gpu-check.json with every figure; its steps' time limits
#                                  # add up to 8.5 min (an H200 should need far less)
#   scripts/gpu-check.sh dry-run   # here, without a GPU: the same steps on the CPU with the tiny
#                                  # model, so the script and the binary are known to work
#
# `run` records nvidia-smi's name, finds the CUDA 13 libraries of the machine's PyTorch
# (site-packages/nvidia/cu13/lib) for the binary, runs it (device info, PTX start-up, CPU-vs-GPU
# parity of the loss and every gradient, 20 AdamW steps, bf16 vs f32 over 200 steps, the ~125M
# Llama's step in f32, bf16-composite and bf16-fused), then bench/reference/bench_llama_gpu.py on
# the same GPU (bf16 autocast + SDPA eager; torch.compile when it compiles within its time limit),
# and merges the JSON. Nothing here needs the network.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
py=${PYTHON:-python3}

case "$mode" in
build)
    scripts/cuda-build.sh build --example gpu_check --test device_parity
    mkdir -p target/gpu-check
    strip -o target/gpu-check/gpu_check target/cuda/release/examples/gpu_check
    test=$(ls -t target/cuda/release/deps/device_parity-* | grep -v '\.d$' | head -n 1)
    strip -o target/gpu-check/device_parity "$test"
    gzip -9 -f target/gpu-check/gpu_check target/gpu-check/device_parity
    ls -l target/gpu-check
    exit 0
    ;;
run)
    out=${2:?usage: scripts/gpu-check.sh run OUT}
    mkdir -p "$out"
    for b in gpu_check device_parity; do
        [ -x "target/gpu-check/$b" ] || { gunzip -c "target/gpu-check/$b.gz" >"target/gpu-check/$b" && chmod +x "target/gpu-check/$b"; }
    done
    bin=target/gpu-check/gpu_check
    lib=$("$py" -c "import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], 'cu13', 'lib'))")
    export LD_LIBRARY_PATH="$lib:${LD_LIBRARY_PATH:-}"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/nvidia-smi.txt"
    # The gated tests (tests/device_parity.rs) at the issue's tolerances, then the figures.
    WICK_TEST_CUDA=1 timeout 90 target/gpu-check/device_parity --test-threads 1 --nocapture >"$out/tests.txt" 2>&1 ||
        echo "device_parity exit $?" >>"$out/tests.txt"
    timeout 240 "$bin" --device cuda:0 >"$out/wick.json" 2>"$out/wick.log" || echo "gpu_check exit $?" >>"$out/wick.log"
    timeout 90 "$py" bench/reference/bench_llama_gpu.py >"$out/torch_eager.json" 2>"$out/torch_eager.log" || true
    timeout 90 "$py" bench/reference/bench_llama_gpu.py --compile >"$out/torch_compile.json" 2>"$out/torch_compile.log" || true
    ;;
dry-run)
    out=${2:-target/gpu-check/dry-run}
    mkdir -p "$out"
    cargo run --locked --example gpu_check -- --device cpu --config tiny --quick >"$out/wick.json"
    if "$py" -c 'import torch, transformers' 2>/dev/null; then
        "$py" bench/reference/bench_llama_gpu.py --device cpu --config tiny --steps 2 >"$out/torch_eager.json"
    else
        echo '{"skipped": "no torch and transformers in this Python"}' >"$out/torch_eager.json"
    fi
    ;;
*)
    echo "usage: scripts/gpu-check.sh build | run OUT | dry-run [OUT]" >&2
    exit 2
    ;;
esac

# One JSON with every figure, and Wick's bf16 tokens/s over PyTorch eager bf16's.
"$py" - "${out:-target/gpu-check}" <<'EOF'
import json, os, sys
out = sys.argv[1]
def load(name):
    try:
        text = open(os.path.join(out, name)).read().strip()
        return json.loads(text.splitlines()[-1] if name.startswith("torch") else text)
    except Exception as e:
        return {"missing": f"{name}: {e}"}
doc = {"wick": load("wick.json")}
for k in ("torch_eager", "torch_compile"):
    if os.path.exists(os.path.join(out, k + ".json")):
        doc[k] = load(k + ".json")
speed = {r.get("run"): r for r in doc["wick"].get("speed", [])} if isinstance(doc["wick"], dict) else {}
eager = doc.get("torch_eager", {}).get("tokens_per_s")
for run in ("bf16-composite", "bf16-fused"):
    if eager and speed.get(run, {}).get("tokens_per_s"):
        doc[f"ratio_{run}_over_torch_eager"] = round(speed[run]["tokens_per_s"] / eager, 3)
json.dump(doc, open(os.path.join(out, "gpu-check.json"), "w"), indent=1)
print(json.dumps({k: v for k, v in doc.items() if k.startswith("ratio")} or {"written": os.path.join(out, "gpu-check.json")}))
EOF
