"""On the Python documentation (Debian's python3-doc), a small GPT-2 trained for a CPU-minute or
two lowers validation loss well below what a unigram model of the corpus can reach."""
import glob

import numpy as np
import pytest

from conftest import run
from train_helpers import events, train, write_spec

DOCS = sorted(glob.glob("/usr/share/doc/python3*/html/_sources"))


def unigram_cross_entropy(train_tokens, val_tokens):
    counts = np.bincount(train_tokens, minlength=50257).astype(np.float64) + 1.0  # add-one smoothing
    p = counts / counts.sum()
    return float(-np.log(p[val_tokens]).mean())


@pytest.mark.skipif(not DOCS, reason="python3-doc is not installed (scripts/setup.sh installs it)")
def test_small_gpt2_beats_the_unigram_model(worker, tmp_path):
    shards = tmp_path / "shards"
    run([worker, "prep", "--out", shards, "--shard-tokens", "2000000", "--val-tokens", "100000", DOCS[0]])
    read = lambda f: np.fromfile(f, dtype=np.uint16, offset=1024).astype(np.int64)
    train_tokens = np.concatenate([read(f) for f in sorted(shards.glob("*_train_*.bin"))])
    val_tokens = read(next(shards.glob("*_val_*.bin")))
    assert len(train_tokens) > 3_000_000
    unigram = unigram_cross_entropy(train_tokens, val_tokens)

    spec = write_spec(tmp_path / "job.yaml", name="learn",
                      model={"n_layer": 2, "n_head": 4, "n_embd": 128, "n_positions": 128},
                      data={"dir": str(shards)},
                      batch={"total_tokens": 2048, "micro_batch": 16, "seq_len": 128},
                      optimizer={"max_lr": 3e-3, "warmup_steps": 10, "max_steps": 120},
                      eval={"val_every": 60, "val_batches": 16, "sample_every": 0, "hellaswag_every": 0},
                      device="cpu", log_every=20)
    train(worker, spec, tmp_path / "m.jsonl")
    val = [e["val_loss"] for e in events(tmp_path / "m.jsonl", "eval")]
    assert len(val) == 2 and val[1] < val[0]
    assert val[-1] < unigram - 0.5, f"val loss {val[-1]:.3f} vs unigram cross-entropy {unigram:.3f}"
