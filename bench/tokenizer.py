"""Tokenizer speed: tiktoken against ours, on the same text in the same run.

    .venv/bin/python bench/tokenizer.py [--file FILE] [--iterations N] [--bench-bin PATH]

The text is FILE, or by default the Python documentation sources (Debian's python3-doc)
concatenated. tiktoken encodes it with encode_ordinary on one thread; ours is
bench/tokenizer_bench (from $GPT2_BUILD_DIR, default <repo>/build), also one thread. Each reports
its median of N passes; the last line is the ratio. Not a test: nothing here asserts speed.
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tiktoken
from tiktoken.load import load_tiktoken_bpe

REPO = Path(__file__).resolve().parents[1]
VOCAB = REPO / "assets" / "gpt2.tiktoken"
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
DOCS_GLOB = "/usr/share/doc/python3*/html/_sources/**/*.txt"


def default_text():
    paths = sorted({os.path.realpath(p) for p in glob.glob(DOCS_GLOB, recursive=True)})
    if not paths:
        sys.exit(f"no files match {DOCS_GLOB}: install python3-doc or pass --file")
    return "\n".join(Path(p).read_bytes().decode("utf-8", errors="replace") for p in paths)


def bench_tiktoken(text, iterations):
    enc = tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=load_tiktoken_bpe(str(VOCAB)),
        special_tokens={"<|endoftext|>": 50256},
        explicit_n_vocab=50257,
    )
    seconds, tokens = [], 0
    for _ in range(iterations):
        start = time.perf_counter()
        tokens = len(enc.encode_ordinary(text))
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    size = len(text.encode())
    return {
        "bench": "tokenizer",
        "impl": f"tiktoken {tiktoken.__version__}",
        "bytes": size,
        "tokens": tokens,
        "iterations": iterations,
        "median_s": median,
        "mb_per_s": size / median / 1e6,
        "tokens_per_s": tokens / median,
    }


def bench_ours(binary, path, iterations):
    command = [str(binary), str(path), "--iterations", str(iterations), "--vocab", str(VOCAB)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", help="text to encode (default: the Python docs corpus)")
    parser.add_argument("--iterations", type=int, default=5)
    build = Path(os.environ.get("GPT2_BUILD_DIR", REPO / "build"))
    parser.add_argument("--bench-bin", default=str(build / "bench" / "tokenizer_bench"))
    args = parser.parse_args()
    if not Path(args.bench_bin).exists():
        sys.exit(f"{args.bench_bin} does not exist: build the tokenizer_bench target first")

    if args.file:
        text = Path(args.file).read_bytes().decode("utf-8", errors="replace")
    else:
        text = default_text()
    with tempfile.TemporaryDirectory() as tmp:
        # Both sides encode the same bytes: the text as tiktoken sees it, written out as UTF-8.
        path = Path(tmp) / "corpus.txt"
        path.write_bytes(text.encode())
        theirs = bench_tiktoken(text, args.iterations)
        ours = bench_ours(args.bench_bin, path, args.iterations)
    ours["file"] = args.file or DOCS_GLOB
    print(json.dumps(theirs))
    print(json.dumps(ours))
    print(json.dumps({
        "bench": "tokenizer",
        "same_token_count": ours["tokens"] == theirs["tokens"],
        "speedup_vs_tiktoken": ours["mb_per_s"] / theirs["mb_per_s"],
    }))


if __name__ == "__main__":
    main()
