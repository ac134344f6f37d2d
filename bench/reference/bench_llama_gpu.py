#!/usr/bin/env python3
"""Time full training steps of a random ~125M Llama on a GPU (PyTorch reference for Wick's GPU figures).

One step = forward + causal-LM loss + backward + global-norm clip 1.0 + AdamW step + zero_grad,
the same work as Wick's training step. Runs with the PyTorch, transformers and CUDA libraries that a
GPU machine carries (nothing to install). Prints ONE JSON line: tokens_per_s, step_ms, MFU against
the given bf16 peak, peak GPU memory, the GPU's name.

  python3 bench/reference/bench_llama_gpu.py                          # bf16 autocast + SDPA, eager
  python3 bench/reference/bench_llama_gpu.py --compile                # the same under torch.compile
  python3 bench/reference/bench_llama_gpu.py --dtype fp32 --tf32      # f32 weights and activations, TF32 matmuls
  python3 bench/reference/bench_llama_gpu.py --device cpu --config tiny --steps 2   # a dry run without a GPU

Config "125m": vocab 32000, hidden 768, 12 layers, 12 heads (12 kv), intermediate 2048, seq 1024,
batch 16, untied embeddings, rope_theta 10000. MFU counts 6·N + 12·L·T·d FLOPs per token (N = all
parameters, the second term the attention products, unmasked) against --peak-tflops (H200 bf16
dense: 989).
"""
import argparse, json, statistics, time

CONFIGS = {
    "125m": dict(vocab_size=32000, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 num_key_value_heads=12, intermediate_size=2048, seq=1024, batch=16),
    "tiny": dict(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=172, seq=64, batch=2),
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", choices=sorted(CONFIGS), default="125m")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--seq", type=int, default=None)
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16",
                   help="bf16 = autocast around forward + loss, f32 master weights and AdamW state")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls for f32")
    p.add_argument("--attn", default="sdpa", help="attn_implementation: sdpa | eager")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--device", default="cuda")
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    c = dict(CONFIGS[args.config])
    T, B = args.seq or c.pop("seq"), args.batch or c.pop("batch")
    c.pop("seq", None), c.pop("batch", None)
    cfg = LlamaConfig(max_position_embeddings=max(T, 1024), rms_norm_eps=1e-5, tie_word_embeddings=False,
                      rope_theta=10000.0, hidden_act="silu", attention_bias=False, mlp_bias=False,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, attn_implementation=args.attn, **c)
    dev = torch.device(args.device)
    model = LlamaForCausalLM(cfg).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    fwd = torch.compile(model) if args.compile else model
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95), eps=1e-8, fused=dev.type == "cuda")
    x = torch.randint(3, cfg.vocab_size, (B, T), device=dev)
    cuda = dev.type == "cuda"

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16"):
            loss = fwd(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    t0 = time.time()
    for _ in range(args.warmup):
        loss = step()
    if cuda:
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    warm_s = time.time() - t0
    times, losses = [], []
    for _ in range(args.steps):
        t = time.perf_counter()
        loss = step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        losses.append(loss.item())
    med = statistics.median(times)
    tps = B * T / med
    L, d = cfg.num_hidden_layers, cfg.hidden_size
    flops_per_token = 6 * n_params + 12 * L * T * d
    print(json.dumps(dict(
        config=args.config, dtype=args.dtype, tf32=args.tf32, attn=args.attn, compile=args.compile,
        batch=B, seq=T, params=n_params, tokens_per_s=round(tps, 1), step_ms_median=round(med * 1e3, 2),
        step_ms_min=round(min(times) * 1e3, 2), mfu=round(flops_per_token * tps / (args.peak_tflops * 1e12), 4),
        peak_tflops=args.peak_tflops, warmup_s=round(warm_s, 1),
        peak_mem_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        gpu=torch.cuda.get_device_name() if cuda else None, torch=torch.__version__,
        loss_first=round(losses[0], 4), loss_last=round(losses[-1], 4))), flush=True)


if __name__ == "__main__":
    main()
