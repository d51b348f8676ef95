"""`gpt2-worker prep` on the files corpora are distributed as: parquet (FineWeb-EDU's sample-10BT),
gzip'd JSONL, and what it must refuse rather than tokenize as bytes (zstd, archives, binary files).
The parquet files are written here by pyarrow (the reference), with several row groups and the
codecs such datasets use; their tokens must equal the same texts prepped from JSONL and tiktoken's.

Run: .venv/bin/python -m pytest tests/reference/test_prep_formats.py
"""
import gzip
import json
import os
import random
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run
from test_data import expected_tokens, load_tokens, make_documents, prep, run_both_thread_counts


def shards(summary):
    return [open(p, "rb").read() for p in summary["shards"]]


def tokens(summary):
    return np.concatenate([load_tokens(p) for p in summary["shards"]]).tolist()


def write_parquet(path, docs, compression, column="text", row_group_size=300):
    """FineWeb-EDU's layout: text beside id, url, score columns; several row groups."""
    table = pa.table({
        "id": [f"<urn:uuid:{i}>" for i in range(len(docs))],
        column: docs,
        "url": [f"https://example.org/{i}" for i in range(len(docs))],
        "score": [float(i % 5) for i in range(len(docs))],
    })
    pq.write_table(table, path, compression=compression, row_group_size=row_group_size)
    assert pq.ParquetFile(path).num_row_groups > 1 or len(docs) <= row_group_size


def write_jsonl(path, docs):
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")


@pytest.mark.parametrize("compression", ["snappy", "zstd", "gzip", "none"])
def test_parquet_equals_the_same_text_from_jsonl(worker, enc, tmp_path, compression):
    docs = make_documents(1200, seed=11)
    write_parquet(tmp_path / "part-00000.parquet", docs, compression)
    write_jsonl(tmp_path / "same.jsonl", docs)
    options = ("--shard-tokens", "20000", "--val-tokens", "4000")
    from_parquet = run_both_thread_counts(worker, tmp_path / "pq", [tmp_path / "part-00000.parquet"], *options)
    from_jsonl = prep(worker, tmp_path / "jsonl", [tmp_path / "same.jsonl"], *options)
    assert from_parquet["documents"] == len(docs)
    assert len(from_parquet["shards"]) > 2
    assert shards(from_parquet) == shards(from_jsonl)
    assert tokens(from_parquet) == expected_tokens(enc, docs)


def test_parquet_files_of_a_directory_in_order_and_a_named_column(worker, enc, tmp_path):
    corpus = tmp_path / "sample" / "10BT"
    corpus.mkdir(parents=True)
    parts = [make_documents(150, seed=20 + i) for i in range(3)]
    for i, docs in enumerate(parts):
        write_parquet(corpus / f"{i:03d}_00000.parquet", docs, "snappy", column="content", row_group_size=40)
    summary = prep(worker, tmp_path / "out", [tmp_path / "sample"], "--column", "content")
    assert tokens(summary) == expected_tokens(enc, [d for docs in parts for d in docs])


def test_null_cells_are_skipped(worker, enc, tmp_path):
    pq.write_table(pa.table({"text": ["one", None, "three"]}), tmp_path / "nulls.parquet")
    summary = prep(worker, tmp_path / "out", [tmp_path / "nulls.parquet"])
    assert tokens(summary) == expected_tokens(enc, ["one", "three"])


def test_a_parquet_file_under_any_name_is_read_as_parquet(worker, enc, tmp_path):
    # The bug this guards: its compressed bytes tokenized as one huge "document".
    docs = make_documents(50, seed=5)
    write_parquet(tmp_path / "download", docs, "snappy")
    summary = prep(worker, tmp_path / "out", [tmp_path / "download"])
    assert summary["documents"] == len(docs)
    assert tokens(summary) == expected_tokens(enc, docs)


def failing_prep(worker, tmp_path, inputs, *options):
    proc = run([worker, "prep", "--out", tmp_path / "refused", *options, *inputs], check=False)
    assert not list((tmp_path / "refused").glob("*.bin")), "nothing is written for bad input"
    return proc


def test_a_missing_column_names_the_file_and_the_columns(worker, tmp_path):
    write_parquet(tmp_path / "p.parquet", ["a", "b"], "snappy", column="body")
    proc = failing_prep(worker, tmp_path, [tmp_path / "p.parquet"])
    assert proc.returncode == 2
    assert f"{tmp_path / 'p.parquet'}: no column 'text'" in proc.stderr
    assert "body" in proc.stderr and "--column" in proc.stderr


def test_a_column_that_is_not_text_is_refused(worker, tmp_path):
    write_parquet(tmp_path / "p.parquet", ["a", "b"], "snappy")
    proc = failing_prep(worker, tmp_path, [tmp_path / "p.parquet"], "--column", "score")
    assert proc.returncode == 2
    assert "column 'score' holds double, not text" in proc.stderr


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_a_corrupt_parquet_file_is_refused_naming_it(worker, tmp_path, damage):
    path = tmp_path / "bad.parquet"
    write_parquet(path, make_documents(400, seed=6), "snappy", row_group_size=100)
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]  # no footer
    else:
        rng = random.Random(1)
        for i in range(200, len(data) - 200, 97):  # pages and their headers, not the footer
            data[i] = rng.randrange(256)
    path.write_bytes(bytes(data))
    proc = failing_prep(worker, tmp_path, [path])
    assert proc.returncode == 2, proc.stderr
    assert str(path) in proc.stderr


def test_gzip_jsonl_and_text_are_read_as_if_uncompressed(worker, enc, tmp_path):
    docs = make_documents(300, seed=7)
    with gzip.open(tmp_path / "c.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps({"text": d}) + "\n" for d in docs))
    with gzip.open(tmp_path / "t.txt.gz", "wb") as f:
        f.write("a gzip'd text document".encode())
    summary = prep(worker, tmp_path / "out", [tmp_path / "c.jsonl.gz", tmp_path / "t.txt.gz"])
    assert tokens(summary) == expected_tokens(enc, docs + ["a gzip'd text document"])


def test_corrupt_gzip_is_refused(worker, tmp_path):
    data = gzip.compress(("x" * 100000).encode())
    (tmp_path / "c.jsonl.gz").write_bytes(data[: len(data) // 2])
    proc = failing_prep(worker, tmp_path, [tmp_path / "c.jsonl.gz"])
    assert proc.returncode == 2
    assert f"{tmp_path / 'c.jsonl.gz'}: " in proc.stderr


@pytest.mark.parametrize("name,head,what", [
    ("c.jsonl.zst", b"\x28\xb5\x2f\xfd\x04\x58", "zstd-compressed"),
    ("c.jsonl.xz", b"\xfd7zXZ\x00\x00\x04", "xz-compressed"),
    ("c.txt.bz2", b"BZh91AY&SY", "bzip2-compressed"),
    ("c.zip", b"PK\x03\x04\x14\x00", "a zip archive"),
])
def test_other_compressed_formats_are_refused_naming_the_format(worker, tmp_path, name, head, what):
    rng = random.Random(2)
    (tmp_path / name).write_bytes(head + bytes(rng.randrange(256) for _ in range(4000)))
    proc = failing_prep(worker, tmp_path, [tmp_path / name])
    assert proc.returncode == 2
    assert f"{tmp_path / name}: {what}" in proc.stderr


def test_binary_content_is_refused(worker, tmp_path):
    rng = random.Random(3)
    (tmp_path / "model.bin").write_bytes(bytes(rng.randrange(256) for _ in range(10000)))
    proc = failing_prep(worker, tmp_path, [tmp_path / "model.bin"])
    assert proc.returncode == 2
    assert f"{tmp_path / 'model.bin'}: binary, not text" in proc.stderr

    (tmp_path / "utf16.txt").write_bytes("UTF-16 text".encode("utf-16"))  # NUL in every other byte
    assert "binary, not text" in failing_prep(worker, tmp_path, [tmp_path / "utf16.txt"]).stderr


def test_invalid_utf8_is_tolerated_up_to_one_in_a_thousand_bytes(worker, enc, tmp_path):
    text = "plain ascii words " * 300  # 5400 bytes
    ok = text[:2000].encode() + b"\xe9" + text[2000:].encode()  # one stray Latin-1 byte
    (tmp_path / "ok.txt").write_bytes(ok)
    summary = prep(worker, tmp_path / "out", [tmp_path / "ok.txt"])
    assert tokens(summary) == expected_tokens(enc, [ok.decode("utf-8", "replace")])

    latin1 = ("café crème brûlée à la carte " * 100).encode("latin-1")
    (tmp_path / "latin1.txt").write_bytes(latin1)
    proc = failing_prep(worker, tmp_path, [tmp_path / "latin1.txt"])
    assert proc.returncode == 2
    assert f"{tmp_path / 'latin1.txt'}: not UTF-8 text" in proc.stderr


def test_parquet_without_pyarrow_says_so(worker, tmp_path):
    write_parquet(tmp_path / "p.parquet", ["a"], "snappy")
    env = dict(os.environ, GPT2_PYTHON="/usr/bin/python3")  # Debian's, which has no pyarrow
    proc = subprocess.run([str(worker), "prep", "--out", str(tmp_path / "out"), str(tmp_path / "p.parquet")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    assert "pyarrow" in proc.stderr and str(tmp_path / "p.parquet") in proc.stderr
