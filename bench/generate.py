"""Generation on this machine, side by side in one run on the same weights and prompts: a
gpt2-worker serving replica (KV cache, continuous batching, streamed over gRPC; one per
--weights format) against what a user would pick instead, transformers' `generate` (batched,
with its KV cache) and CTranslate2 (fp32 and int8, installed into the venv if missing), at
1, 8, 32 and 64 concurrent streams. Not a test.

  .venv/bin/python bench/generate.py                       # GPT-2 124M shape, random weights
  .venv/bin/python bench/generate.py --model DIR --streams 1,8 --max-tokens 64 --weights fp32,int8
  .venv/bin/python bench/generate.py --mixed               # staggered arrivals, mixed lengths

Ours: each stream is a separate Generate call arriving at once; TTFT and inter-token latency are
measured by the client per token. Theirs: the streams are one batch of equal-length prompts (how
one serves with a library without continuous batching); TTFT is a generate of one token,
inter-token latency the rest of the time per further token. Throughput = completion tokens of all
streams / wall time. Greedy, EOS ignored. The replica serves the model's whole context unless
--max-context says otherwise (each request attends over its own positions only, so the serving
context sizes slots, not steps: docs/serving.md).
"""
import argparse
import os
import pathlib
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUILD = pathlib.Path(os.environ.get("GPT2_BUILD_DIR", ROOT / "build"))
WORKER = BUILD / "worker" / "gpt2-worker"
CT2_VERSION = "4.8.5"


def stubs():
    out = pathlib.Path(tempfile.mkdtemp(prefix="gpt2d-stubs-"))
    from grpc_tools import protoc
    import grpc_tools
    include = str(pathlib.Path(grpc_tools.__file__).parent / "_proto")
    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto/gpt2d/v1").glob("*.proto"))
    assert protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"-I{include}", f"--python_out={out}",
                        f"--grpc_python_out={out}", *protos]) == 0
    sys.path.insert(0, str(out))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


class Replica:
    """A `gpt2-worker serve` process on loopback, serving `model_dir` with `weights`."""

    def __init__(self, model_dir, weights, slots, max_context):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [str(WORKER), "serve", "--model", model_dir, "--listen", f"127.0.0.1:{self.port}",
             "--http-listen", "", "--max-slots", str(slots), "--kv-cache-mb", str(max(1024, 128 * slots)),
             "--max-context", str(max_context), "--weights", weights],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.address = f"127.0.0.1:{self.port}"
        try:
            grpc.channel_ready_future(grpc.insecure_channel(self.address)).result(timeout=300)
        except grpc.FutureTimeoutError:
            self.proc.kill()
            raise SystemExit(f"gpt2-worker serve --weights {weights} did not start: {self.proc.stderr.read()}")
        from gpt2d.v1 import generate_pb2_grpc
        self.stub = generate_pb2_grpc.GenerateServiceStub(grpc.insecure_channel(self.address))
        self.run([(0.0, [464] * 4, 4)])  # warm up

    def run(self, requests):
        """requests: (arrival offset s, prompt, max_tokens). Returns (wall, tokens, ttft, itl)."""
        from gpt2d.v1 import generate_pb2
        ttft, itl, tokens = [], [], [0]
        lock = threading.Lock()
        t_start = time.perf_counter()

        def one(at, prompt, max_tokens):
            time.sleep(max(0.0, t_start + at - time.perf_counter()))
            req = generate_pb2.GenerateRequest(prompt_tokens=prompt, sampling=generate_pb2.SamplingParams(
                temperature=0, max_tokens=max_tokens, ignore_eos=True))
            t0 = time.perf_counter()
            last, first, n, gaps = None, None, 0, []
            for m in self.stub.Generate(req, timeout=3600):
                now = time.perf_counter()
                for _ in m.token_ids:
                    if first is None:
                        first = now - t0
                    else:
                        gaps.append((now - last) / len(m.token_ids))
                    n += 1
                if m.token_ids:
                    last = now
            with lock:
                ttft.append(first)
                itl.extend(gaps)
                tokens[0] += n
        threads = [threading.Thread(target=one, args=r) for r in requests]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - t_start, tokens[0], ttft, itl

    def close(self):
        self.proc.terminate()
        self.proc.wait(30)


def hf_engine(model_dir):
    from transformers import GPT2LMHeadModel
    model = GPT2LMHeadModel.from_pretrained(model_dir).eval()

    def generate(prompts, max_tokens):
        ids = torch.tensor(prompts)
        with torch.no_grad():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens, do_sample=False,
                           eos_token_id=None, pad_token_id=0, use_cache=True)
    return generate


def ct2_model(model_dir, work):
    """CTranslate2's conversion of the checkpoint (fp32 and int8 load from it). The converter wants a
    tokenizer only for its vocabulary; the benchmark passes token ids, so a word-level tokenizer
    whose token i is "<i>" (and <|endoftext|> as 50256) stands in for GPT-2's."""
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"ctranslate2=={CT2_VERSION}"], check=True)
    import ctranslate2.converters
    import json
    import tokenizers
    import transformers
    src = pathlib.Path(work) / "hf"
    src.mkdir()
    for name in ("config.json", "model.safetensors"):
        (src / name).symlink_to(pathlib.Path(model_dir).resolve() / name)
    n_vocab = json.loads((src / "config.json").read_text())["vocab_size"]
    vocab = {f"<{i}>": i for i in range(n_vocab)}
    vocab["<|endoftext|>"] = vocab.pop(f"<{n_vocab - 1}>")
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<|endoftext|>")),
        bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    tok.save_pretrained(src)
    out = pathlib.Path(work) / "ct2"
    ctranslate2.converters.TransformersConverter(str(src)).convert(str(out), quantization="float32")
    return str(out), n_vocab


def ct2_engine(path, n_vocab, compute_type, threads):
    import ctranslate2
    gen = ctranslate2.Generator(path, device="cpu", compute_type=compute_type, inter_threads=1,
                                intra_threads=threads)
    name = lambda i: "<|endoftext|>" if i == n_vocab - 1 else f"<{i}>"  # noqa: E731

    def generate(prompts, max_tokens):
        gen.generate_batch([[name(i) for i in p] for p in prompts], max_length=max_tokens, min_length=max_tokens,
                           sampling_topk=1, include_prompt_in_result=False, max_batch_size=len(prompts))
    return generate


def batch_run(generate, prompts, max_tokens):
    """(tok/s, TTFT, ITL) of a library serving the streams as one batch."""
    t0 = time.perf_counter()
    generate(prompts, 1)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    generate(prompts, max_tokens)
    wall = time.perf_counter() - t0
    return len(prompts) * max_tokens / wall, first, (wall - first) / max(1, max_tokens - 1)


def mixed_workload(n, seed, max_context):
    """n requests arriving over a few seconds (Poisson), prompts 16-512 tokens, outputs 16-256, a
    third of them behind one of two shared 128-token prefixes (a system prompt, few-shot examples)."""
    rng = random.Random(seed)
    prefixes = [[rng.randrange(50257) for _ in range(128)] for _ in range(2)]
    at, reqs = 0.0, []
    for _ in range(n):
        at += rng.expovariate(n / 8.0)
        plen, out = rng.randint(16, 512), rng.randint(16, 256)
        prompt = [rng.randrange(50257) for _ in range(plen)]
        if rng.random() < 1 / 3:
            prompt = rng.choice(prefixes) + prompt[:max(1, plen - 128)]
        out = min(out, max_context - len(prompt))
        reqs.append((at, prompt, out))
    return reqs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="a checkpoint directory (default: a random GPT-2 124M)")
    ap.add_argument("--streams", default="1,8,32,64")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=48)
    ap.add_argument("--weights", default="fp32,bf16,int8", help="our replicas' weight formats")
    ap.add_argument("--peers", default="hf,ct2-fp32,ct2-int8", help="of hf, ct2-fp32, ct2-int8 (empty: none)")
    ap.add_argument("--mixed", type=int, default=0, metavar="N",
                    help="also run a mixed workload of N requests through our replicas")
    ap.add_argument("--max-context", type=int, default=0,
                    help="the replica's serving context (default 0: the model's, 1024)")
    args = ap.parse_args()
    stubs()
    streams = [int(s) for s in args.streams.split(",")]
    weights = [w for w in args.weights.split(",") if w]
    peers = [p for p in args.peers.split(",") if p]
    work = tempfile.mkdtemp(prefix="bench-generate-")
    model_dir = args.model
    if not model_dir:
        model_dir = work + "/model"
        subprocess.run([str(WORKER), "init", "--config", "gpt2", "--out", model_dir], check=True, capture_output=True)
    threads = torch.get_num_threads()
    engines = {}
    if "hf" in peers:
        engines["transformers"] = hf_engine(model_dir)
    if any(p.startswith("ct2") for p in peers):
        path, n_vocab = ct2_model(model_dir, work)
        for p in peers:
            if p.startswith("ct2-"):
                engines[p] = ct2_engine(path, n_vocab, {"ct2-fp32": "float32", "ct2-int8": "int8"}[p], threads)
    print(f"model {model_dir}, prompt {args.prompt_tokens} tokens, {args.max_tokens} new tokens, {threads} threads")
    g = torch.Generator().manual_seed(0)
    workloads = {c: torch.randint(0, 50257, (c, args.prompt_tokens), generator=g).tolist() for c in streams}
    rows = {c: [] for c in streams}  # (engine, tok/s, ttft p50, ttft p90, itl p50, itl p90)
    mixed = []
    for w in weights:
        replica = Replica(model_dir, w, max(streams + [32]), args.max_context)
        try:
            for c in streams:
                wall, n, ttft, itl = replica.run([(0.0, p, args.max_tokens) for p in workloads[c]])
                rows[c].append((f"ours {w}", n / wall, pct(ttft, .5), pct(ttft, .9), pct(itl, .5), pct(itl, .9)))
            if args.mixed:
                reqs = mixed_workload(args.mixed, 0, args.max_context or 1024)
                wall, n, ttft, itl = replica.run(reqs)
                mixed.append((f"ours {w}", n / wall, pct(ttft, .5), pct(ttft, .9), pct(itl, .5), pct(itl, .9)))
        finally:
            replica.close()
    for name, generate in engines.items():
        generate([[464] * 4], 2)  # warm up
        for c in streams:
            tps, first, itl = batch_run(generate, workloads[c], args.max_tokens)
            rows[c].append((name, tps, first, first, itl, itl))
    ref = "ct2-fp32" if "ct2-fp32" in engines else None
    print(f"\n{'streams':>7} | {'engine':<12} | {'tok/s':>7} | {'vs ' + (ref or '-'):>11} | "
          f"{'TTFT p50/p90 (s)':>17} | {'ITL p50/p90 (ms)':>17}")
    for c in streams:
        base = next((r[1] for r in rows[c] if r[0] == ref), None)
        for name, tps, t50, t90, i50, i90 in rows[c]:
            ratio = f"{tps / base:.2f}x" if base else "-"
            print(f"{c:>7} | {name:<12} | {tps:>7.1f} | {ratio:>11} | {t50:>8.3f}/{t90:<8.3f} | "
                  f"{i50 * 1e3:>8.1f}/{i90 * 1e3:<8.1f}")
    if mixed:
        print(f"\nmixed workload: {args.mixed} requests over ~8 s, prompts 16-512, outputs 16-256, a third sharing "
              "a 128-token prefix")
        print(f"{'engine':<12} | {'tok/s':>7} | {'TTFT p50/p90 (s)':>17} | {'ITL p50/p90 (ms)':>17}")
        for name, tps, t50, t90, i50, i90 in mixed:
            print(f"{name:<12} | {tps:>7.1f} | {t50:>8.3f}/{t90:<8.3f} | {i50 * 1e3:>8.1f}/{i90 * 1e3:<8.1f}")


if __name__ == "__main__":
    main()
