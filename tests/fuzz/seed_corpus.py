#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora, tests/fuzz/corpus/<parser>/, from real files and real
writers: safetensors and transformers for checkpoints and config.json, numpy's np.save for .npy
shards, the repository's GPT-2 vocabulary, the HellaSwag fixture, the Python documentation
(Debian's python3-doc), and a trainer_state.json that `gpt2-worker train` writes. Rerun it when a
format changes; the corpora are committed (small files: the fuzzers' -max_len is 64 KiB).

    .venv/bin/python tests/fuzz/seed_corpus.py [--build build]
"""
import argparse
import base64
import json
import pathlib
import re
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fuzz" / "corpus"
PYDOC = pathlib.Path("/usr/share/doc/python3-doc/html/_sources")


def put(parser, name, data):
    d = OUT / parser
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def pydoc_texts(n, size=1500):
    """Paragraphs of the Python documentation (reST sources), `size` bytes each at most."""
    files = sorted(PYDOC.rglob("*.txt"))[:: max(1, len(sorted(PYDOC.rglob("*.txt"))) // n)][:n]
    return [f.read_text(encoding="utf-8", errors="replace")[:size] for f in files]


def safetensors_and_config():
    import torch
    import transformers
    from safetensors.numpy import save as save_np

    with tempfile.TemporaryDirectory() as tmp:
        cfg = transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2, n_positions=16, vocab_size=64)
        torch.manual_seed(0)
        transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp, safe_serialization=True)
        put("safetensors", "tiny_gpt2.safetensors", (pathlib.Path(tmp) / "model.safetensors").read_bytes())
        put("hf_config", "tiny_gpt2.json", (pathlib.Path(tmp) / "config.json").read_bytes())
    for name, (layers, embd, heads) in {"gpt2": (12, 768, 12), "gpt2-medium": (24, 1024, 16),
                                        "gpt2-large": (36, 1280, 20), "gpt2-xl": (48, 1600, 25)}.items():
        c = transformers.GPT2Config(n_layer=layers, n_embd=embd, n_head=heads)
        put("hf_config", f"{name}.json", c.to_json_string())
    arrays = {
        "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "f16": np.ones(4, dtype=np.float16),
        "i64": np.array([1, -2], dtype=np.int64),
        "u8": np.zeros((0,), dtype=np.uint8),
        "b": np.array([True, False]),
        "scalar": np.array(3.5, dtype=np.float64),
    }
    put("safetensors", "dtypes.safetensors", save_np(arrays, metadata={"format": "np"}))
    put("safetensors", "empty.safetensors", save_np({}))


def vocabularies():
    lines = (ROOT / "assets" / "gpt2.tiktoken").read_text().splitlines()
    put("tiktoken_vocab", "gpt2_first_400.tiktoken", "\n".join(lines[:400]) + "\n")
    put("tiktoken_vocab", "gpt2_bytes.tiktoken", "\n".join(lines[:256]) + "\n")
    ranks = {base64.b64decode(l.split()[0]): int(l.split()[1]) for l in lines[:400]}
    # encoder.json + vocab.bpe of the same 400 tokens (OpenAI's form), merges recovered by BPE
    # over the lower ranks, as tiktoken's data_gym loader expects them.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    stand = dict(zip(bs, map(chr, cs)))
    text = lambda t: "".join(stand[b] for b in t)

    def split(token):
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            best = min(range(len(parts) - 1), key=lambda i: ranks.get(parts[i] + parts[i + 1], 1 << 30))
            parts[best:best + 2] = [parts[best] + parts[best + 1]]
        return parts

    by_rank = sorted(ranks, key=ranks.get)
    encoder = {text(t): r for t, r in ranks.items()}
    merges = ["#version: 0.2"] + [" ".join(text(p) for p in split(t)) for t in by_rank[256:]]
    put("encoder_json", "gpt2_first_400", json.dumps(encoder).encode() + b"\0" + ("\n".join(merges) + "\n").encode())
    enc_eot = dict(encoder, **{"<|endoftext|>": len(encoder)})
    put("encoder_json", "with_eot", json.dumps(enc_eot).encode() + b"\0" + ("\n".join(merges[:50]) + "\n").encode())


def texts():
    for i, t in enumerate(pydoc_texts(12)):
        put("tokenizer_encode", f"pydoc_{i:02d}.txt", t)
    samples = {
        "multilingual.txt": "Grüße, 世界! Привет мир. مرحبا 🙂👍🏽 naïve café\r\n\t  spaces   ",
        "special.txt": "<|endoftext|>The end.<|endoftext|><|endo",
        "invalid_utf8.bin": b"ok \xff\xfe bad \xe2\x82 cut \xf0\x9f\x98 and \xed\xa0\x80 surrogate",
        "numbers.txt": "123456789 3.14159 0x1F 1e-8 '''s 've 're",
    }
    for name, t in samples.items():
        put("tokenizer_encode", name, t)


def shards():
    tokens = np.array([50256, 464, 3290, 318, 257, 1332, 13, 0, 65535], dtype=np.uint16)
    for version, ntok in ((1, len(tokens)), (1, 0)):
        header = np.zeros(256, dtype=np.int32)
        header[:3] = (20240520, version, ntok)
        put("shard", f"llmc_v{version}_{ntok}.bin", header.tobytes() + tokens[:ntok].tobytes())
    import io
    for v in ((1, 0), (2, 0), (3, 0)):
        buf = io.BytesIO()
        np.lib.format.write_array(buf, tokens, version=v)
        put("shard", f"np_save_v{v[0]}.npy", buf.getvalue())
    buf = io.BytesIO()
    np.save(buf, np.zeros(0, dtype=np.uint16))
    put("shard", "np_save_empty.npy", buf.getvalue())


def train_specs():
    sys.path.insert(0, str(ROOT / "tests" / "cluster"))
    from clusterlib import small_spec
    import yaml

    spec = small_spec("/data/shards")
    put("train_spec", "small.json", json.dumps(spec))
    put("train_spec", "small.yaml", yaml.safe_dump(spec))
    put("train_spec", "gpt2_124m.yaml", "name: gpt2-124m\nmodel: {preset: gpt2}\ndata: {dir: /data/fineweb10B}\n"
        "batch: {total_tokens: 524288, micro_batch: 16, seq_len: 1024}\n"
        "optimizer: {max_lr: 6.0e-4, warmup_steps: 715, max_steps: 19073, weight_decay: 0.1}\n"
        "checkpoint: {every: 5000, keep_last: 3}\nworld_size: 8\n")
    return spec


def jsonl():
    src = (ROOT / "tests" / "data" / "hellaswag_sample.jsonl").read_text().splitlines()
    put("hellaswag", "sample.jsonl", "\n".join(src) + "\n")
    put("hellaswag", "one.jsonl", src[0] + "\n\n")
    docs = [json.dumps({"text": t, "id": i}) for i, t in enumerate(pydoc_texts(6, 400))]
    put("prep_jsonl", "pydoc.jsonl", "\n".join(docs) + "\n")
    put("prep_jsonl", "mixed.jsonl", '{"text": "a"}\n\n   \n{"text": "\\u00e9\\ud83d\\ude00"}\n{"meta": 1, "text": ""}\n')


def trainer_state(build, spec):
    """A real trainer_state.json: a 2-step job of `gpt2-worker train` on random tokens."""
    worker = pathlib.Path(build) / "worker" / "gpt2-worker"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        data = tmp / "data"
        data.mkdir()
        rng = np.random.default_rng(0)
        for split in ("train", "val"):
            header = np.zeros(256, dtype=np.int32)
            header[:3] = (20240520, 1, 4096)
            toks = rng.integers(0, 50257, 4096, dtype=np.uint16)
            (data / f"tiny_{split}_000000.bin").write_bytes(header.tobytes() + toks.tobytes())
        spec = dict(spec, world_size=1, data={"dir": str(data)},
                    batch={"total_tokens": 128, "micro_batch": 4, "seq_len": 32},
                    optimizer={"max_lr": 1e-3, "warmup_steps": 1, "max_steps": 2},
                    eval={"val_every": 2, "val_batches": 1, "hellaswag_every": 0, "sample_every": 0},
                    checkpoint={"every": 2, "keep_last": 1, "dir": str(tmp / "ckpt")})
        (tmp / "spec.json").write_text(json.dumps(spec))
        subprocess.run([str(worker), "train", "--spec", str(tmp / "spec.json")], check=True,
                       stdout=subprocess.DEVNULL)
        state = next((tmp / "ckpt").rglob("trainer_state.json"))
        put("trainer_state", "gpt2_worker_train.json", state.read_bytes())
        s = json.loads(state.read_text())
        s.update(world_size=2, loader_positions=[{"shard": 0, "offset": 0}, {"shard": 3, "offset": 12345}],
                 val_loss=None)
        s["rng"]["cuda"] = [s["rng"]["cpu"][:64]]
        put("trainer_state", "two_ranks.json", json.dumps(s, indent=2))


def openai_bodies():
    bodies = {
        "simple.json": {"model": "gpt2", "prompt": "Hello", "max_tokens": 8},
        "stream.json": {"prompt": ["a", "b"], "stream": True, "stream_options": {"include_usage": True}, "n": 2,
                        "seed": 1, "temperature": 0.7, "top_p": 0.9, "stop": ["\n", "."]},
        "tokens.json": {"prompt": [[50256, 464, 3290], [1, 2]], "logprobs": 5, "echo": True, "max_tokens": 0},
        "vllm.json": {"prompt": [464, 3290], "top_k": 40, "ignore_eos": True, "min_tokens": 2,
                      "stop_token_ids": [13], "user": "u", "presence_penalty": 0, "logit_bias": {}},
    }
    for name, b in bodies.items():
        put("openai_request", name, json.dumps(b))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(ROOT / "build"))
    args = ap.parse_args()
    if OUT.exists():
        shutil.rmtree(OUT)
    safetensors_and_config()
    vocabularies()
    texts()
    shards()
    spec = train_specs()
    jsonl()
    trainer_state(args.build, spec)
    openai_bodies()
    for d in sorted(OUT.iterdir()):
        print(d.name, len(list(d.iterdir())), sum(f.stat().st_size for f in d.iterdir()))


if __name__ == "__main__":
    main()
