"""The checks of scripts/gpu-check.sh (docs/gpu.md): the CUDA path against the CPU path and against
PyTorch/transformers on the same GPU. One line per check (PASS/FAIL and figures) and a JSON report.

  python scripts/gpu_check.py --build build-gpu --device cuda --report runs/gpu-check.json
  .venv/bin/python scripts/gpu_check.py --build build --device cpu --small   # the dry run (tests)

Needs torch and transformers (no grpcio, no tiktoken: the replica is reached over its OpenAI API
with urllib, and text is decoded by gpt2-worker itself). --small shrinks every shape so that the
dry run takes a minute on two cores; the bounds are the same.
"""
import argparse
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request

import numpy as np
import torch
import yaml
from transformers import GPT2Config, GPT2LMHeadModel

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]
import train as bench_train  # noqa: E402  (bench/train.py: flops_per_token, the PyTorch peer)
from shards import random_shards  # noqa: E402
VOCAB = ROOT / "assets" / "gpt2.tiktoken"
# Bounds (docs/gpu.md): fp32 on any device within 1e-4 of the CPU relative to the largest logit;
# bf16 autocast within 3e-2 of fp32; 20 bf16 training steps within 0.05 of fp32 CPU in loss.
FP32_REL, BF16_REL, TRAIN_BF16_LOSS = 1e-4, 3e-2, 0.05
H200_BF16_DENSE = 989e12  # FLOP/s, NVIDIA's dense bf16 figure (the trainer's CUDA default)

results = []


def check(name):
    def wrap(fn):
        def run(a):
            t = time.perf_counter()
            try:
                ok, figures = fn(a)
            except Exception as e:  # a check that crashes fails; the others still run
                ok, figures = False, {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
            figures["seconds"] = round(time.perf_counter() - t, 1)
            results.append({"check": name, "pass": bool(ok), **figures})
            shown = {k: v for k, v in figures.items() if k != "trace"}
            print(f"{'PASS' if ok else 'FAIL'} {name}: {json.dumps(shown)}", flush=True)
        return run
    return wrap


def sh(cmd, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    p = subprocess.run([str(c) for c in cmd], **kw)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} {cmd[1] if len(cmd) > 1 else ''} exited {p.returncode}: {p.stderr[-3000:]}")
    return p


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shape(a):
    if a.small:
        return dict(n_layer=2, n_head=4, n_embd=128, n_positions=128)
    return dict(n_layer=12, n_head=12, n_embd=768, n_positions=1024)


def random_model(a, d, **over):
    torch.manual_seed(0)
    c = dict(shape(a), **over)
    m = GPT2LMHeadModel(GPT2Config(**c, vocab_size=50257))
    m.save_pretrained(d, safe_serialization=True)
    return m


def rel(x, ref):
    return float((x - ref).abs().max() / ref.abs().max())


def ours_logits(a, model_dir, tokens, device, bf16=False):
    with tempfile.TemporaryDirectory() as t:
        tj, out = pathlib.Path(t) / "tokens.json", pathlib.Path(t) / "logits.safetensors"
        tj.write_text(json.dumps(tokens.tolist()))
        sh([a.build / "tests/tools/gpt2_logits", model_dir, tj, out, device] + (["bf16"] if bf16 else []))
        from safetensors.torch import load_file
        return load_file(str(out))["logits"]


@check("1 logits")
def logits(a):
    d = a.work / "logits-model"
    hf = random_model(a, d)
    T = 128 if a.small else 1024
    tokens = torch.randint(0, 50257, (2, T), generator=torch.Generator().manual_seed(1))
    cpu = ours_logits(a, d, tokens, "cpu")
    dev = ours_logits(a, d, tokens, a.dev)
    bf16 = ours_logits(a, d, tokens, a.dev, bf16=True)
    with torch.no_grad():
        ref = hf.to(a.dev).eval()(tokens.to(a.dev)).logits.float().cpu()
    f = {"device_vs_cpu_rel": rel(dev, cpu), "device_vs_transformers_rel": rel(dev, ref),
         "bf16_vs_fp32_rel": rel(bf16, cpu), "bounds": [FP32_REL, FP32_REL, BF16_REL]}
    return (f["device_vs_cpu_rel"] <= FP32_REL and f["device_vs_transformers_rel"] <= FP32_REL
            and f["bf16_vs_fp32_rel"] <= BF16_REL), f


def train(a, name, device, model, B, T, steps, total=None, autocast="", ckpt_every=0):
    d = a.work / name
    d.mkdir(parents=True, exist_ok=True)
    spec = {"name": name, "model": dict(model, n_positions=T),
            "data": {"dir": str(random_shards(a.work / f"{name}-data", n_train=(total or B * T) * (steps + 4) + 1,
                                              n_val=(total or B * T) * 4 + 1))},
            "batch": {"total_tokens": total or B * T, "micro_batch": B, "seq_len": T},
            "optimizer": {"max_steps": steps, "warmup_steps": 2},
            "eval": {"val_every": 0, "sample_every": 0, "hellaswag_every": 0},
            "checkpoint": {"dir": str(d / "ckpt"), "every": ckpt_every or steps}, "device": device}
    if autocast:
        spec["autocast"] = autocast
    (d / "job.yaml").write_text(yaml.safe_dump(spec))
    p = sh([a.build / "worker/gpt2-worker", "--vocab", VOCAB, "train", "--spec", d / "job.yaml",
            "--metrics-jsonl", d / "m.jsonl"], timeout=900)
    events = [json.loads(l) for l in (d / "m.jsonl").read_text().splitlines()]
    return [e for e in events if e["event"] == "step"], p.stderr, d / "ckpt"


@check("2 training: device vs cpu")
def training(a):
    model = dict(n_layer=2, n_head=4, n_embd=128) if a.small else dict(n_layer=4, n_head=4, n_embd=256)
    B, T = (4, 64) if a.small else (8, 256)
    dev, log, _ = train(a, "train-dev", a.dev, model, B, T, 20)
    cpu, _, _ = train(a, "train-cpu", "cpu", model, B, T, 20, autocast="fp32")
    diff = max(abs(x["loss"] - y["loss"]) for x, y in zip(dev, cpu))
    header = next((l for l in log.splitlines() if "training on" in l), "")
    f = {"steps": len(dev), "max_loss_diff": diff, "bound": TRAIN_BF16_LOSS, "first_loss": dev[0]["loss"],
         "last_loss": dev[-1]["loss"], "log": header}
    ok = len(dev) == len(cpu) == 20 and diff <= TRAIN_BF16_LOSS
    if a.dev.startswith("cuda"):
        ok = ok and "TF32 matmuls" in header and "attention kernel flash" in header and "BFloat16" in header
    return ok, f


@check("3 throughput: 124M training")
def throughput(a):
    model = dict(n_layer=2, n_head=4, n_embd=128) if a.small else dict(n_layer=12, n_head=12, n_embd=768)
    T = 128 if a.small else 1024
    steps = 6 if a.small else 12
    f = {}
    for B in ([4] if a.small else [32, 16]):
        try:
            ev, _, _ = train(a, f"tput-B{B}", a.dev, model, B, T, steps)
            break
        except RuntimeError as e:  # B=32 may not fit; B=16 does on an H200
            f[f"B{B}"] = str(e)[-300:]
    tps = statistics.median(e["tokens_per_second"] for e in ev[3:])
    f.update(B=B, T=T, ours_tokens_per_s=tps, ours_mfu=statistics.median(e["mfu"] for e in ev[3:]))
    flops = bench_train.flops_per_token(dict(model, T=T))
    for name, comp in (("eager", False), ("compile", True)):
        try:
            theirs = bench_train.pytorch(dict(model, B=B, T=T), steps, comp, a.dev)
            f[f"pytorch_{name}_tokens_per_s"] = theirs
            f[f"pytorch_{name}_mfu_h200"] = theirs * flops / H200_BF16_DENSE
            f[f"ours_over_{name}"] = tps / theirs
        except Exception as e:
            f[f"pytorch_{name}"] = f"{type(e).__name__}: {str(e)[-300:]}"
    return tps > 0, f


def run_ranks(argv, world, timeout):
    """Starts argv(rank, port) for every rank of a world on one rendezvous port and waits for all,
    killing what is still running at the deadline. Returns [(returncode, stdout, stderr)]."""
    port = free_port()
    procs = [subprocess.Popen([str(x) for x in argv(r, port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for r in range(world)]
    deadline = time.time() + timeout
    outs = []
    for p in procs:
        try:
            o, e = p.communicate(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            o, e = p.communicate()
            e = f"timed out after {timeout} s: {e}"
        outs.append((p.returncode, o, e))
    return outs


def collective_ranks(a, world):
    """tests/tools/collectives: each collective once through the device's backend, world ranks."""
    # the tool's own collective timeout is 120 s
    outs = run_ranks(lambda r, port: [a.build / "tests/tools/collectives", a.dev, r, world, port], world, 180)
    lines = []
    for rc, o, e in outs:
        try:
            lines.append(json.loads(o.strip().splitlines()[-1]))
        except (IndexError, json.JSONDecodeError):
            lines.append({"ok": False, "error": f"exited {rc}: {e[-400:]}"})
    return lines


# NCCL's refusal of two ranks of one communicator on the same GPU (ncclInvalidUsage).
NCCL_SAME_GPU = ("Duplicate GPU", "invalid usage")


@check("4 collectives")
def collectives(a):
    # (a) A world of one through the device's real backend (NCCL on cuda, Gloo on cpu): it
    # initialises and every collective gives the value it must. The trainer's own world of one
    # skips the backend, so checks 2 and 3 do not prove this.
    one = collective_ranks(a, 1)[0]
    f = {"one_rank": one}
    ok = one.get("ok", False) and one.get("backend") == ("nccl" if a.dev.startswith("cuda") else "gloo")
    # (b) Two ranks on the one device. NCCL refuses two ranks of a communicator on one GPU; that
    # refusal is recorded, not failed (it says nothing of a real two-GPU world).
    two = collective_ranks(a, 2)
    f["two_ranks"] = two
    if not all(r.get("ok") for r in two):
        refused = a.dev.startswith("cuda") and any(m in r.get("error", "") for r in two for m in NCCL_SAME_GPU)
        f["two_ranks_refused_by_nccl"] = refused
        return ok and refused, f
    # (c) With two ranks allowed: the trainer's 2 ranks x 1 micro-step equal 1 rank x 2 micro-steps.
    model = dict(n_layer=2, n_head=4, n_embd=128)
    B, T = 4, 64
    single, _, _ = train(a, "ddp1", a.dev, model, B, T, 5, total=2 * B * T, autocast="fp32")
    d = a.work / "ddp2"
    d.mkdir(exist_ok=True)
    spec = yaml.safe_load((a.work / "ddp1" / "job.yaml").read_text())
    spec["checkpoint"]["dir"] = str(d / "ckpt")
    (d / "job.yaml").write_text(yaml.safe_dump(spec))
    outs = run_ranks(lambda r, port: [a.build / "worker/gpt2-worker", "--vocab", VOCAB, "train", "--spec",
                                      d / "job.yaml", "--rank", r, "--world-size", 2, "--master-port", port,
                                      "--timeout", 120, "--metrics-jsonl", d / "m.jsonl"], 2, 600)
    f["one_rank_losses"] = [e["loss"] for e in single]
    if any(rc for rc, _, _ in outs):
        f["two_ranks_training_error"] = " | ".join(e[-400:] for _, _, e in outs)
        return False, f
    ranked = [e for e in map(json.loads, (d / "m.jsonl").read_text().splitlines()) if e["event"] == "step"]
    f["two_rank_losses"] = [e["loss"] for e in ranked]
    f["max_loss_diff"] = max(abs(x["loss"] - y["loss"]) for x, y in zip(single, ranked))
    return ok and len(ranked) == len(single) == 5 and f["max_loss_diff"] <= 1e-4, f


def complete(port, prompt, max_tokens):
    body = json.dumps({"model": "gpt2", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                       "logprobs": 0}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def decode(a, ids):
    return sh([a.build / "worker/gpt2-worker", "--vocab", VOCAB, "tokenize", "--decode"],
              input=" ".join(map(str, ids))).stdout


@check("5 serving")
def serving(a):
    d = a.work / "serve-model"
    hf = random_model(a, d)
    port, http = free_port(), free_port()
    proc = subprocess.Popen([str(a.build / "worker/gpt2-worker"), "--vocab", str(VOCAB), "serve", "--model", str(d),
                             "--device", a.dev, "--listen", f"127.0.0.1:{free_port()}",
                             "--http-listen", "", "--openai-listen", f"127.0.0.1:{port}",
                             "--max-slots", "128", "--kv-cache-mb", "256" if a.small else "8192"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    f = {}
    try:
        deadline = time.time() + 300
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("the replica did not start: " + proc.stderr.read()[-2000:])
                time.sleep(0.5)
        gen = torch.Generator().manual_seed(2)
        prompts = [torch.randint(0, 50257, (16,), generator=gen).tolist() for _ in range(128)]
        n_new = 16 if a.small else 32
        with torch.no_grad():
            ref = hf.to(a.dev).eval().generate(torch.tensor([prompts[0]], device=a.dev), max_new_tokens=n_new,
                                               do_sample=False, pad_token_id=50256)[0, 16:].tolist()
        alone = complete(port, prompts[0], n_new)["choices"][0]["text"]
        f["greedy_equals_transformers"] = alone == decode(a, ref)
        for streams in (1, 32, 128):
            texts = [None] * streams
            t = time.perf_counter()
            threads = [threading.Thread(target=lambda i=i: texts.__setitem__(
                i, complete(port, prompts[i], n_new)["choices"][0]["text"])) for i in range(streams)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            f[f"tokens_per_s_{streams}_streams"] = streams * n_new / (time.perf_counter() - t)
            if streams > 1:
                f[f"batch_invariant_{streams}"] = texts[0] == alone
        ok = f["greedy_equals_transformers"] and f["batch_invariant_32"] and f["batch_invariant_128"]
        return ok, f
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@check("6 checkpoint: device -> cpu and transformers")
def checkpoint(a):
    model = dict(n_layer=2, n_head=4, n_embd=128)
    _, _, ckpt = train(a, "ckpt-dev", a.dev, model, 4, 64, 4)
    step = sorted(p for p in ckpt.iterdir() if p.name.startswith("step_"))[-1]
    tokens = torch.randint(0, 50257, (1, 64), generator=torch.Generator().manual_seed(3))
    ours = ours_logits(a, step, tokens, "cpu")
    hf = GPT2LMHeadModel.from_pretrained(step).eval()
    with torch.no_grad():
        ref = hf(tokens).logits.float()
    r = rel(ours, ref)
    return r <= FP32_REL, {"checkpoint": str(step), "ours_cpu_vs_transformers_rel": r}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", type=pathlib.Path, default=ROOT / "build")
    ap.add_argument("--device", default="cuda", help="cuda (cuda:0) or cpu (the dry run)")
    ap.add_argument("--small", action="store_true", help="small shapes (the CPU dry run)")
    ap.add_argument("--report", type=pathlib.Path, default=ROOT / "runs" / "gpu-check.json")
    ap.add_argument("--only", default="", help="comma-separated check numbers")
    a = ap.parse_args()
    a.dev = "cuda:0" if a.device == "cuda" else a.device
    if a.dev.startswith("cuda") and not torch.cuda.is_available():
        print("FAIL setup: torch sees no GPU")
        return 1
    # The throughput check (torch.compile included) is the longest: it runs last, so that a lease
    # that runs out still brings back the correctness checks in the report.
    checks = [(1, logits), (2, training), (4, collectives), (6, checkpoint), (5, serving), (3, throughput)]
    env = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0) if a.dev.startswith("cuda") else "cpu",
           "cuda": torch.version.cuda, "cpus": os.cpu_count()}
    print(f"gpu-check: {json.dumps(env)}", flush=True)
    a.report.parent.mkdir(parents=True, exist_ok=True)
    save = lambda: a.report.write_text(json.dumps({"environment": env, "results": results}, indent=1))  # noqa: E731
    save()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as w:
        a.work = pathlib.Path(w)
        for i, c in checks:
            if not a.only or str(i) in a.only.split(","):
                c(a)
                save()  # after every check: a run stopped at its time limit keeps what it finished
    failed = [r["check"] for r in results if not r["pass"]]
    print(f"gpu-check: {len(results) - len(failed)}/{len(results)} passed; report {a.report}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
