"""worker/data against the references: numpy reads our shards (and we read numpy's), `gpt2-worker
prep` gives the tokens tiktoken gives, and our loader gives build-nanogpt's DataLoaderLite batches.

Runs the built binaries: $GPT2_BUILD_DIR/worker/gpt2-worker (prep) and
$GPT2_BUILD_DIR/tests/tools/loader_dump (GPT2_BUILD_DIR defaults to <repo>/build).

Run: .venv/bin/python -m pytest tests/reference/test_data.py
"""

import json
import random

import numpy as np
import pytest

from conftest import binary, run

EOT = 50256
LLMC_MAGIC, LLMC_VERSION = 20240520, 1




@pytest.fixture(scope="session")
def loader_dump():
    return binary("tests/tools/loader_dump")


# --- references ------------------------------------------------------------------------------


def load_tokens(path):
    """A shard's tokens as numpy reads them: llm.c .bin with offset 1024, .npy with np.load."""
    path = str(path)
    if path.endswith(".npy"):
        tokens = np.load(path)
        assert tokens.dtype == np.dtype("<u2") and tokens.ndim == 1
        return tokens
    header = np.fromfile(path, dtype="<i4", count=256)
    assert header[0] == LLMC_MAGIC and header[1] == LLMC_VERSION
    tokens = np.fromfile(path, dtype="<u2", offset=1024)
    assert len(tokens) == header[2]
    return tokens


def write_llmc(path, tokens):
    header = np.zeros(256, dtype="<i4")
    header[:3] = [LLMC_MAGIC, LLMC_VERSION, len(tokens)]
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype="<u2").tobytes())


class DataLoaderLite:
    """build-nanogpt's DataLoaderLite (train_gpt2.py) with numpy arrays in place of tensors."""

    def __init__(self, shards, B, T, process_rank, num_processes):
        self.B, self.T = B, T
        self.process_rank, self.num_processes = process_rank, num_processes
        self.shards = shards
        self.reset()

    def reset(self):
        self.current_shard = 0
        self.tokens = load_tokens(self.shards[self.current_shard])
        self.current_position = self.B * self.T * self.process_rank

    def next_batch(self):
        B, T = self.B, self.T
        buf = self.tokens[self.current_position : self.current_position + B * T + 1]
        x = buf[:-1].reshape(B, T)
        y = buf[1:].reshape(B, T)
        self.current_position += B * T * self.num_processes
        if self.current_position + (B * T * self.num_processes + 1) > len(self.tokens):
            self.current_shard = (self.current_shard + 1) % len(self.shards)
            self.tokens = load_tokens(self.shards[self.current_shard])
            self.current_position = B * T * self.process_rank
        return x, y


def expected_tokens(enc, documents):
    tokens = []
    for doc in documents:
        tokens.append(EOT)
        tokens.extend(enc.encode_ordinary(doc))
    return tokens


def prep(worker, out_dir, inputs, *options):
    proc = run([worker, "prep", "--out", out_dir, *options, *inputs])
    return json.loads(proc.stdout)


def shard_tokens(summary):
    return np.concatenate([load_tokens(p) for p in summary["shards"]]).tolist()


# --- a corpus ----------------------------------------------------------------------------------

WORDS = ["the", "The", "loader", "shard", "tokens", "don't", "we'll", "I'm", "café", "naïve",
         "Ünïcödé", "日本語", "текст", "🙂", "2024", "3.14", "  ", "\t", "\n\n", "!!", "<|endoftext|>",
         "hello", "world", "x" * 40, "---", "é" * 5]


def make_documents(n, seed):
    rng = random.Random(seed)
    return ["".join(rng.choice(WORDS) + rng.choice([" ", "", "\n", ", "]) for _ in range(rng.randint(0, 40)))
            for _ in range(n)]


def write_text_files(root, documents):
    """Files in a directory tree whose sorted paths give `documents` in order, plus files to skip."""
    exts = [".txt", ".md", ".rst", ".text"]
    paths = []
    for i, doc in enumerate(documents):
        # Mixed depths and a '-' (which sorts before '/') make path order differ from walk order.
        rel = f"d{i % 3}/f{i:04d}{exts[i % 4]}" if i % 2 else f"d{i % 3}-f{i:04d}{exts[i % 4]}"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(doc.encode("utf-8"))
        paths.append(path)
    (root / "skipped.json").write_text('{"text": "not a document"}')
    (root / "d0" / "skipped.jsonl").write_text('{"text": "not a document either"}\n')
    return [p.read_bytes().decode("utf-8") for p in sorted(paths, key=str)]


# --- (a) shard formats against numpy ------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["bin", "npy"])
def test_numpy_reads_our_shards(worker, enc, tmp_path, fmt):
    docs = make_documents(40, seed=1)
    inputs = []
    for i, doc in enumerate(docs):
        inputs.append(tmp_path / f"doc{i}.txt")
        inputs[-1].write_bytes(doc.encode("utf-8"))
    summary = prep(worker, tmp_path / "out", inputs, "--format", fmt, "--shard-tokens", "300",
                   "--val-tokens", "100")
    assert all(p.endswith("." + fmt) for p in summary["shards"])
    assert len(load_tokens(summary["shards"][0])) == 100
    assert all(len(load_tokens(p)) == 300 for p in summary["shards"][1:-1])
    assert shard_tokens(summary) == expected_tokens(enc, docs)


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_we_read_numpy_written_npy(loader_dump, tmp_path, version):
    tokens = np.random.default_rng(0).integers(0, 65536, size=1001, dtype=np.uint16)
    path = tmp_path / "edufineweb_train_000001.npy"
    if version == (1, 0):
        np.save(path, tokens)  # what build-nanogpt's fineweb.py does
    else:
        with open(path, "wb") as f:
            np.lib.format.write_array(f, tokens, version=version)
    proc = run([loader_dump, "--B", "1", "--T", "1000", "--rank", "0", "--world", "1",
                "--steps", "1", path])
    batch = json.loads(proc.stdout)
    assert batch["x"] == tokens[:-1].tolist()
    assert batch["y"] == tokens[1:].tolist()


def test_we_reject_numpy_arrays_of_other_dtypes(loader_dump, tmp_path):
    for name, array in [("i32", np.arange(100, dtype=np.int32)),
                        ("be", np.arange(100, dtype=">u2")),
                        ("2d", np.zeros((10, 10), dtype=np.uint16))]:
        path = tmp_path / f"{name}.npy"
        np.save(path, array)
        proc = run([loader_dump, "--B", "1", "--T", "8", "--steps", "1", path], check=False)
        assert proc.returncode == 2
        assert str(path) in proc.stderr


# --- (b) prep against tiktoken -----------------------------------------------------------------


def run_both_thread_counts(worker, tmp_path, inputs, *options):
    """Runs prep with 1 and 2 threads; checks the files are identical; returns the summary."""
    summaries, contents = [], []
    for threads in (1, 2):
        summary = prep(worker, tmp_path / f"out{threads}", inputs, "--threads", str(threads), *options)
        summaries.append(summary)
        contents.append([open(p, "rb").read() for p in summary["shards"]])
    assert contents[0] == contents[1]
    assert [p.replace("out1", "out2") for p in summaries[0]["shards"]] == summaries[1]["shards"]
    return summaries[0]


def check_summary(summary, tokens, n_docs, val_tokens):
    assert summary["documents"] == n_docs
    assert summary["tokens"] == len(tokens)
    assert summary["val_tokens"] == min(val_tokens, len(tokens))
    assert summary["train_tokens"] == len(tokens) - summary["val_tokens"]
    assert "_val_000000." in summary["shards"][0]
    for i, path in enumerate(summary["shards"][1:], start=1):
        assert path.endswith(f"_train_{i:06d}.bin")


def test_prep_text_files_match_tiktoken(worker, enc, tmp_path):
    docs = make_documents(30, seed=2) + ["windows\r\nline ends\r\n", ""]
    inputs = []
    for i, doc in enumerate(docs):
        inputs.append(tmp_path / f"in{i}.dat")
        inputs[-1].write_bytes(doc.encode("utf-8"))
    summary = run_both_thread_counts(worker, tmp_path, inputs, "--shard-tokens", "500", "--val-tokens", "200")
    expected = expected_tokens(enc, docs)
    check_summary(summary, expected, len(docs), 200)
    assert shard_tokens(summary) == expected


def test_prep_directory_matches_tiktoken(worker, enc, tmp_path):
    docs = write_text_files(tmp_path / "corpus", make_documents(60, seed=3))
    summary = run_both_thread_counts(worker, tmp_path, [tmp_path / "corpus"], "--shard-tokens", "1000",
                                     "--val-tokens", "300")
    expected = expected_tokens(enc, docs)
    check_summary(summary, expected, len(docs), 300)
    assert shard_tokens(summary) == expected


def test_prep_jsonl_matches_tiktoken(worker, enc, tmp_path):
    # More documents than one tokenizing batch holds, so that two threads really share the work.
    docs = make_documents(2500, seed=4)
    lines = []
    for i, doc in enumerate(docs):
        lines.append(json.dumps({"id": i, "text": doc}, ensure_ascii=bool(i % 2)))
        if i % 100 == 0:
            lines.append("")  # blank lines are not documents
    (tmp_path / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = run_both_thread_counts(worker, tmp_path, [tmp_path / "corpus.jsonl"], "--shard-tokens", "20000",
                                     "--val-tokens", "5000")
    expected = expected_tokens(enc, docs)
    check_summary(summary, expected, len(docs), 5000)
    assert len(summary["shards"]) > 3
    assert shard_tokens(summary) == expected


def test_prep_mixed_inputs_keep_input_order(worker, enc, tmp_path):
    (tmp_path / "a.txt").write_text("first file")
    (tmp_path / "b.jsonl").write_text('{"text": "second"}\n{"text": "third"}\n')
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "x.md").write_text("fourth")
    summary = prep(worker, tmp_path / "out", [tmp_path / "a.txt", tmp_path / "b.jsonl", tmp_path / "dir"])
    assert shard_tokens(summary) == expected_tokens(enc, ["first file", "second", "third", "fourth"])


def test_prep_reports_bad_jsonl_lines(worker, enc, tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": 1}\n{"text": "also ok"}\n')
    proc = run([worker, "prep", "--out", tmp_path / "out", tmp_path / "bad.jsonl"], check=False)
    assert proc.returncode == 2
    assert f"{tmp_path / 'bad.jsonl'}:2:" in proc.stderr
    assert not list((tmp_path / "out").glob("*.bin"))

    summary = prep(worker, tmp_path / "out", [tmp_path / "bad.jsonl"], "--skip-bad-lines")
    assert summary["skipped_lines"] == 1
    assert shard_tokens(summary) == expected_tokens(enc, ["ok", "also ok"])


def test_prep_refuses_to_overwrite_without_force(worker, tmp_path):
    (tmp_path / "a.txt").write_text("some text")
    prep(worker, tmp_path / "out", [tmp_path / "a.txt"])
    proc = run([worker, "prep", "--out", tmp_path / "out", tmp_path / "a.txt"], check=False)
    assert proc.returncode == 2 and "--force" in proc.stderr
    prep(worker, tmp_path / "out", [tmp_path / "a.txt"], "--force")


# --- (c) the loader against DataLoaderLite -----------------------------------------------------


@pytest.mark.parametrize("world", [1, 2])
def test_loader_matches_dataloaderlite(loader_dump, tmp_path, world):
    rng = np.random.default_rng(world)
    B, T = 2, 5
    shards = []
    # Lengths that leave different remainders at the end of each shard, among them none at all
    # for some rank (100, 110: the last window would need one token more); mixed formats.
    for i, length in enumerate([97, B * T * world + 1, 100, 64, 110, 151]):
        tokens = rng.integers(0, 50257, size=length, dtype=np.uint16)
        path = tmp_path / f"data_train_{i:06d}.{'npy' if i % 2 else 'bin'}"
        if i % 2:
            np.save(path, tokens)
        else:
            write_llmc(path, tokens)
        shards.append(str(path))
    steps = 60  # several passes over all shards
    for rank in range(world):
        reference = DataLoaderLite(shards, B, T, rank, world)
        proc = run([loader_dump, "--B", B, "--T", T, "--rank", rank, "--world", world, "--steps", steps, *shards])
        lines = proc.stdout.splitlines()
        assert len(lines) == steps
        seen_shards = set()
        for step, line in enumerate(lines):
            batch = json.loads(line)
            assert (batch["shard"], batch["offset"]) == (reference.current_shard, reference.current_position), step
            seen_shards.add(batch["shard"])
            x, y = reference.next_batch()
            assert batch["x"] == x.reshape(-1).tolist(), step
            assert batch["y"] == y.reshape(-1).tolist(), step
        assert seen_shards == set(range(len(shards)))


def test_loader_rejects_a_shard_too_short_for_one_step(loader_dump, tmp_path):
    write_llmc(tmp_path / "short.bin", np.arange(20))
    proc = run([loader_dump, "--B", 2, "--T", 5, "--rank", 0, "--world", 2, "--steps", 1, tmp_path / "short.bin"],
               check=False)
    assert proc.returncode == 2
    assert "short.bin" in proc.stderr and "20 tokens" in proc.stderr
