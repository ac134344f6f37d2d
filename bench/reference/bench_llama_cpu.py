#!/usr/bin/env python3
"""Time full training steps of a tiny random Llama on CPU (PyTorch reference).

One step = forward + causal-LM loss + backward + AdamW step + zero_grad.
Prints ONE JSON line on stdout (tokens_per_s, params, step_ms_median, ...; "noisy": true means
some timed step took >1.5x the fastest or other processes used >5% of the CPUs during the run
(other_cpu_frac): rerun, e.g. with --wait-idle 600).

  python3 bench/reference/bench_llama_cpu.py --config A --steps 10
  python3 bench/reference/bench_llama_cpu.py --config B --steps 10 --dtype bf16
  python3 bench/reference/bench_llama_cpu.py --config B --steps 10 --grad-ckpt

Configs:
  A: vocab 4096, hidden 256, 4 layers, 8 heads, 4 kv heads, inter 688,  seq 256, batch 8
  B: vocab 8192, hidden 512, 8 layers, 8 heads, 8 kv heads, inter 1376, seq 512, batch 4
Both: max positions 512, rms_norm_eps 1e-5, untied embeddings, rope_theta 10000.
"""
import argparse, json, os, statistics, sys, time

CONFIGS = {
    "A": dict(vocab_size=4096, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
              num_key_value_heads=4, intermediate_size=688, seq=256, batch=8),
    "B": dict(vocab_size=8192, hidden_size=512, num_hidden_layers=8, num_attention_heads=8,
              num_key_value_heads=8, intermediate_size=1376, seq=512, batch=4),
}


def make_config(name):
    from transformers import LlamaConfig
    c = dict(CONFIGS[name])
    c.pop("seq"), c.pop("batch")
    return LlamaConfig(max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=False,
                       rope_theta=10000.0, hidden_act="silu", attention_bias=False, mlp_bias=False,
                       bos_token_id=1, eos_token_id=2, pad_token_id=0, **c)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", choices=sorted(CONFIGS), default="A")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                   help="bf16 = torch.autocast('cpu', bfloat16) around forward+loss; fp32 master weights")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--seq", type=int, default=None)
    p.add_argument("--attn", default="sdpa", help="attn_implementation: sdpa | eager")
    p.add_argument("--grad-ckpt", action="store_true",
                   help="model.gradient_checkpointing_enable() (activation recompute per layer)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wait-idle", type=float, default=0,
                   help="first wait up to this many seconds until no other process is busy")
    p.add_argument("--peak-gflops", type=float, default=212.0,
                   help="matmul peak for the fraction (torch f32 2048^2, 2 threads, this machine)")
    args = p.parse_args()

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import hostload
    waited = hostload.wait_idle(args.wait_idle) if args.wait_idle > 0 else 0.0
    import torch
    from transformers import LlamaForCausalLM
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    cfg = make_config(args.config)
    cfg._attn_implementation = args.attn
    B = args.batch or CONFIGS[args.config]["batch"]
    T = args.seq or CONFIGS[args.config]["seq"]
    model = LlamaForCausalLM(cfg).float().train()
    if args.grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    n_params = sum(p.numel() for p in model.parameters())
    n_embed = model.model.embed_tokens.weight.numel()
    n_matmul = n_params - n_embed  # lm_head is a matmul, the input embedding is a gather
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)

    g = torch.Generator().manual_seed(args.seed + 1)
    ids = torch.randint(3, cfg.vocab_size, (B, T), generator=g)
    ac = (torch.autocast("cpu", dtype=torch.bfloat16) if args.dtype == "bf16"
          else torch.autocast("cpu", enabled=False))

    def step():
        t0 = time.perf_counter()
        with ac:
            out = model(input_ids=ids, labels=ids)  # HF shifts labels internally
        loss = out.loss
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        return loss.item(), t1 - t0, t2 - t1, t3 - t2, t3 - t0

    import resource
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    meter = hostload.Meter()
    losses, fw, bw, op, tot, all_steps = [], [], [], [], [], []
    for i in range(args.warmup + args.steps):
        l, a, b, c, t = step()
        losses.append(l)
        all_steps.append(round(t * 1e3, 1))
        if i >= args.warmup:
            fw.append(a); bw.append(b); op.append(c); tot.append(t)

    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    load = meter.report()
    med = statistics.median(tot)
    tokens = B * T
    tps = tokens / med
    L, d = cfg.num_hidden_layers, cfg.hidden_size
    attn_flops_per_tok = 12 * L * T * d  # fwd+bwd QK^T and AV, full (unmasked) T x T
    res = dict(
        config=args.config, dtype=args.dtype, attn=args.attn, grad_ckpt=args.grad_ckpt, threads=args.threads, batch=B, seq=T,
        params=n_params, params_matmul=n_matmul, tokens_per_step=tokens,
        step_ms_median=round(med * 1e3, 1), step_ms_min=round(min(tot) * 1e3, 1),
        fwd_ms=round(statistics.median(fw) * 1e3, 1), bwd_ms=round(statistics.median(bw) * 1e3, 1),
        opt_ms=round(statistics.median(op) * 1e3, 1),
        tokens_per_s=round(tps, 1),
        gflops_6N=round(6 * n_params * tps / 1e9, 2),
        gflops_6Nmatmul_plus_attn=round((6 * n_matmul + attn_flops_per_tok) * tps / 1e9, 2),
        peak_gflops=args.peak_gflops,
        frac_of_peak_6N=round(6 * n_params * tps / 1e9 / args.peak_gflops, 3),
        loss_first=round(losses[0], 4), loss_last=round(losses[-1], 4),
        steps=args.steps, warmup=args.warmup,
        torch=torch.__version__,
        cpu=cpu_info(),
        # diagnostics: this is a Firecracker VM whose speed sometimes drops several-fold
        step_ms_all=all_steps,
        cpu_user_s=round(ru1.ru_utime - ru0.ru_utime, 2), cpu_sys_s=round(ru1.ru_stime - ru0.ru_stime, 2),
        minflt=ru1.ru_minflt - ru0.ru_minflt, majflt=ru1.ru_majflt - ru0.ru_majflt,
        max_rss_mb=round(ru1.ru_maxrss / 1024, 1),
        # True when some timed step took >1.5x the fastest one: rerun, the host was busy
        noisy=max(tot) > 1.5 * min(tot) or load["contended"],
        waited_idle_s=waited, **load,
    )
    print(json.dumps(res), flush=True)


def cpu_info():
    """The processor and the SIMD features that decide f32 and bf16 speed (machines differ)."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return {}
    model = next((l.split(":", 1)[1].strip() for l in text.splitlines() if l.startswith("model name")), "?")
    flags = set(next((l.split(":", 1)[1].split() for l in text.splitlines() if l.startswith("flags")), []))
    return {"model": model, "avx2": "avx2" in flags, "avx512f": "avx512f" in flags,
            "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags}


if __name__ == "__main__":
    main()
