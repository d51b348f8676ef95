"""Training throughput on this machine: gpt2-worker against PyTorch eager and torch.compile doing the
same step (same model shape, B, T, AdamW fused, clipping), in one run. Not a test.

  .venv/bin/python bench/train.py                      # small config and GPT-2 124M
  .venv/bin/python bench/train.py --configs small --no-compile

Prints tokens/s and MFU for each, and ours / theirs ratios. MFU is against the measured fp32 matmul
peak of this CPU (the best of a few large matmuls), since CPUs publish no single peak number.
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import yaml
from transformers import GPT2Config, GPT2LMHeadModel

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUILD = pathlib.Path(os.environ.get("GPT2_BUILD_DIR", ROOT / "build"))
CONFIGS = {
    "small": dict(n_layer=4, n_head=4, n_embd=256, B=8, T=256),
    "124M": dict(n_layer=12, n_head=12, n_embd=768, B=4, T=256),
}


def flops_per_token(c):
    n = 50304 * c["n_embd"] + c["n_layer"] * (12 * c["n_embd"] ** 2 + 13 * c["n_embd"]) + 2 * c["n_embd"]
    return 6 * n + 12 * c["n_layer"] * c["n_embd"] * c["T"]


def measured_peak():
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        best = max(best, 4 * 2 * 2048**3 / (time.perf_counter() - t))
    return best


def ours(c, steps, tmp):
    rng = np.random.default_rng(0)
    header = np.zeros(256, dtype=np.int32)
    n = c["B"] * c["T"] * (steps + 2) + 1
    header[:3] = [20240520, 1, n]
    for split in ("val", "train"):
        with open(tmp / f"shard_{split}_000000.bin", "wb") as f:
            f.write(header.tobytes() + rng.integers(0, 50257, n).astype(np.uint16).tobytes())
    spec = tmp / "job.yaml"
    spec.write_text(yaml.safe_dump({
        "model": {"n_layer": c["n_layer"], "n_head": c["n_head"], "n_embd": c["n_embd"], "n_positions": c["T"]},
        "data": {"dir": str(tmp)}, "batch": {"total_tokens": c["B"] * c["T"], "micro_batch": c["B"], "seq_len": c["T"]},
        "optimizer": {"max_steps": steps, "warmup_steps": 1},
        "eval": {"val_every": 0, "sample_every": 0, "hellaswag_every": 0}, "device": "cpu"}))
    subprocess.run([str(BUILD / "worker/gpt2-worker"), "train", "--spec", str(spec), "--metrics-jsonl", str(tmp / "m.jsonl")],
                   check=True, capture_output=True)
    dts = [json.loads(l)["step_seconds"] for l in (tmp / "m.jsonl").read_text().splitlines() if '"step"' in l]
    return c["B"] * c["T"] / statistics.median(dts[2:])


def pytorch(c, steps, compile_, device="cpu"):
    """tokens/s of the same step in PyTorch; on cuda under bf16 autocast with TF32 matmuls, as ours
    (scripts/gpu_check.py uses it too)."""
    cuda = device.startswith("cuda")
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = cuda
    model = GPT2LMHeadModel(GPT2Config(n_layer=c["n_layer"], n_head=c["n_head"], n_embd=c["n_embd"], n_positions=c["T"],
                                       vocab_size=50304, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)).to(device).train()
    params = list(model.parameters())
    opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
                             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                            lr=6e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    fwd = torch.compile(model) if compile_ else model
    x = torch.randint(0, 50257, (c["B"], c["T"]), device=device)
    dts = []
    for _ in range(steps):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=cuda):
            logits = fwd(x).logits
        loss = torch.nn.functional.cross_entropy(logits[..., :50257].float().reshape(-1, 50257), x.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        dts.append(time.perf_counter() - t)
    return c["B"] * c["T"] / statistics.median(dts[2:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="small,124M")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--no-compile", action="store_true")
    a = ap.parse_args()
    peak = measured_peak()
    print(f"CPU: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"measured fp32 matmul peak {peak / 1e9:.1f} GFLOP/s")
    for name in a.configs.split(","):
        c = CONFIGS[name]
        with tempfile.TemporaryDirectory() as tmp:
            rows = {"gpt2-worker": ours(c, a.steps, pathlib.Path(tmp))}
        rows["pytorch eager"] = pytorch(c, a.steps, False)
        if not a.no_compile:
            rows["torch.compile"] = pytorch(c, a.steps, True)
        print(f"\n{name}: {c['n_layer']} layers, {c['n_embd']} channels, B={c['B']} T={c['T']}")
        for k, tps in rows.items():
            mfu = tps * flops_per_token(c) / peak
            ratio = rows["gpt2-worker"] / tps
            print(f"  {k:14s} {tps:9.0f} tokens/s  MFU {mfu * 100:5.1f}%  ours/this {ratio:5.2f}x")


if __name__ == "__main__":
    sys.exit(main())
