#!/usr/bin/env python3
"""Where PyTorch's CPU training step spends its time: torch.profiler over the same tiny Llama
configs and step as bench_llama_cpu.py (forward + loss, backward, AdamW), grouped into the
categories docs/benchmarks.md compares Wick's perf profile with.

  python bench/reference/profile_llama_cpu.py --config A --steps 5 [--dtype bf16]

Prints one JSON line: total self CPU time per category (ms per step, share), and the top ops.
"""
import argparse, collections, json, os, sys

CATEGORIES = [
    ("matmul", ("mm", "bmm", "addmm", "matmul", "linear", "_mkl", "mkldnn", "onednn")),
    ("attention", ("scaled_dot_product", "flash_attention", "_efficient_attention")),
    ("softmax / loss", ("softmax", "log_softmax", "nll_loss", "cross_entropy")),
    ("optimizer", ("adam", "_foreach", "lerp", "addcdiv", "addcmul")),
    ("copies / layout", ("copy_", "contiguous", "clone", "cat", "transpose", "to_copy", "_to_copy",
                         "index_select", "embedding", "gather", "scatter", "index_add", "expand")),
    ("allocation", ("empty", "zeros", "ones", "fill_", "zero_", "resize_")),
    ("elementwise / norms", ("mul", "add", "sub", "div", "silu", "sigmoid", "rsqrt", "pow", "mean",
                             "sum", "neg", "exp", "sqrt", "where", "threshold", "rms")),
]


def category(name):
    n = name.lower()
    for cat, keys in CATEGORIES:
        if any(k in n for k in keys):
            return cat
    return "other"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="A")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    args = p.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_llama_cpu as ref
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import LlamaForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = ref.make_config(args.config)
    cfg._attn_implementation = "sdpa"
    B, T = ref.CONFIGS[args.config]["batch"], ref.CONFIGS[args.config]["seq"]
    model = LlamaForCausalLM(cfg).float().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.01)
    ids = torch.randint(3, cfg.vocab_size, (B, T), generator=torch.Generator().manual_seed(1))
    ac = (torch.autocast("cpu", dtype=torch.bfloat16) if args.dtype == "bf16"
          else torch.autocast("cpu", enabled=False))

    def step():
        with ac:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    by_cat = collections.Counter()
    by_op = collections.Counter()
    for e in prof.key_averages():
        by_cat[category(e.key)] += e.self_cpu_time_total
        by_op[e.key] += e.self_cpu_time_total
    total = sum(by_cat.values())
    # Self times add up over both threads' ops only where an op runs on the calling thread;
    # intra-op parallel work is counted once, in the op that launched it.
    out = dict(
        config=args.config, dtype=args.dtype, threads=args.threads, steps=args.steps,
        torch=torch.__version__, cpu=ref.cpu_info(),
        ms_per_step=round(total / 1e3 / args.steps, 1),
        categories={k: dict(ms_per_step=round(v / 1e3 / args.steps, 1), share=round(v / total, 3))
                    for k, v in by_cat.most_common()},
        top_ops=[dict(op=k, ms_per_step=round(v / 1e3 / args.steps, 1), share=round(v / total, 3))
                 for k, v in by_op.most_common(15)],
    )
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
