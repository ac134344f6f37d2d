#!/usr/bin/env python3
"""PyTorch + PEFT LoRA training steps on CPU on a Hugging Face model folder: the reference for
`benches/qlora.rs` (issue 14). f32 base, LoRA r 16 / alpha 32 on all seven projections, one row
of `--seq` random tokens per step, AdamW on the adapters. Prints one JSON line: median tokens/s
after the first step, peak RSS (ru_maxrss) in MiB.

  python3 bench/reference/bench_lora_cpu.py DIR/base --seq 1024 --steps 4
"""
import argparse, json, resource, statistics, time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    model.train()
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)
    vocab = model.config.vocab_size
    ids = torch.randint(0, min(vocab, 2000), (1, args.seq))
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    tps = [args.seq / s for s in times[1:]]
    print(json.dumps({
        "torch": torch.__version__, "seq": args.seq, "steps": args.steps,
        "tokens_per_s": statistics.median(tps),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "first_loss": None,
    }))


if __name__ == "__main__":
    main()
