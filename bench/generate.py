"""Generation on this machine: a gpt2-worker serving replica (KV cache, continuous batching,
streamed over gRPC) against transformers' `generate` (batched, with its KV cache) on the same
weights, at 1, 8 and 32 concurrent streams, in one run. Not a test.

  .venv/bin/python bench/generate.py                       # GPT-2 124M shape, random weights
  .venv/bin/python bench/generate.py --model DIR --streams 1,8 --max-tokens 64

Ours: each stream is a separate Generate call arriving at once; TTFT and inter-token latency are
measured by the client per token. Theirs: the streams are one batch of equal-length prompts;
TTFT is a generate of one token, inter-token latency the rest of the time per further token.
Throughput = completion tokens of all streams / wall time. Greedy, EOS ignored. The replica serves
the model's whole context unless --max-context says otherwise (each request attends over its own
positions only, so the serving context sizes slots, not steps: docs/serving.md).
"""
import argparse
import os
import pathlib
import socket
import statistics
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


def ours(address, prompts, max_tokens):
    from gpt2d.v1 import generate_pb2, generate_pb2_grpc
    stub = generate_pb2_grpc.GenerateServiceStub(grpc.insecure_channel(address))
    ttft, itl, tokens = [], [], [0]
    lock = threading.Lock()

    def one(prompt):
        req = generate_pb2.GenerateRequest(prompt_tokens=prompt, sampling=generate_pb2.SamplingParams(
            temperature=0, max_tokens=max_tokens, ignore_eos=True))
        t0 = time.perf_counter()
        last, first, n = None, None, 0
        gaps = []
        for m in stub.Generate(req, timeout=3600):
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
    threads = [threading.Thread(target=one, args=(p,)) for p in prompts]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return tokens[0] / wall, ttft, itl


def theirs(model, prompts, max_tokens):
    ids = torch.tensor(prompts)
    mask = torch.ones_like(ids)
    kw = dict(do_sample=False, eos_token_id=None, pad_token_id=0, attention_mask=mask, use_cache=True)
    with torch.no_grad():
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=1, **kw)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=max_tokens, **kw)
        wall = time.perf_counter() - t0
    return len(prompts) * max_tokens / wall, first, (wall - first) / max(1, max_tokens - 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="a checkpoint directory (default: a random GPT-2 124M)")
    ap.add_argument("--streams", default="1,8,32")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--max-context", type=int, default=0,
                    help="the replica's serving context (default 0: the model's, 1024)")
    args = ap.parse_args()
    stubs()
    streams = [int(s) for s in args.streams.split(",")]
    model_dir = args.model
    if not model_dir:
        model_dir = tempfile.mkdtemp(prefix="bench-generate-") + "/model"
        subprocess.run([str(WORKER), "init", "--config", "gpt2", "--out", model_dir], check=True, capture_output=True)
    port = free_port()
    server = subprocess.Popen([str(WORKER), "serve", "--model", model_dir, "--listen", f"127.0.0.1:{port}",
                               "--http-listen", "", "--max-slots", str(max(streams)),
                               "--kv-cache-mb", "4096",  # room for 32 slots
                               "--max-context", str(args.max_context)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        grpc.channel_ready_future(grpc.insecure_channel(f"127.0.0.1:{port}")).result(timeout=120)
        from transformers import GPT2LMHeadModel
        hf = GPT2LMHeadModel.from_pretrained(model_dir).eval()
        g = torch.Generator().manual_seed(0)
        print(f"model {model_dir}, prompt {args.prompt_tokens} tokens, {args.max_tokens} new tokens, "
              f"{torch.get_num_threads()} threads")
        print(f"{'streams':>7} | {'ours tok/s':>10} | {'hf tok/s':>9} | {'ratio':>5} | "
              f"{'ours TTFT p50/p90 (s)':>21} | {'hf TTFT':>7} | {'ours ITL p50/p90 (ms)':>21} | {'hf ITL':>6}")
        ours(f"127.0.0.1:{port}", [[464] * 4], 4)  # warm up
        for c in streams:
            prompts = torch.randint(0, 50257, (c, args.prompt_tokens), generator=g).tolist()
            o_tps, o_ttft, o_itl = ours(f"127.0.0.1:{port}", prompts, args.max_tokens)
            h_tps, h_ttft, h_itl = theirs(hf, prompts, args.max_tokens)
            print(f"{c:>7} | {o_tps:>10.1f} | {h_tps:>9.1f} | {o_tps / h_tps:>5.2f} | "
                  f"{pct(o_ttft, .5):>10.3f}/{pct(o_ttft, .9):<10.3f} | {h_ttft:>7.3f} | "
                  f"{pct(o_itl, .5) * 1e3:>10.1f}/{pct(o_itl, .9) * 1e3:<10.1f} | {h_itl * 1e3:>6.1f}", flush=True)
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
