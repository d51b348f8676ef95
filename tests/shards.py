"""Token shards for tests, in llm.c's .bin format (shared by tests/reference and tests/cluster)."""
import pathlib

import numpy as np

MAGIC, VERSION = 20240520, 1


def write_shard(path, tokens):
    header = np.zeros(256, dtype=np.int32)
    header[:3] = [MAGIC, VERSION, len(tokens)]
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype=np.uint16).tobytes())


def random_shards(dirpath, n_train=20_000, n_val=5_000, vocab=2000, seed=0):
    """Token shards drawn from a skewed distribution over `vocab` ids (so there is something to learn)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1)
    p /= p.sum()
    dirpath = pathlib.Path(dirpath)
    dirpath.mkdir(parents=True, exist_ok=True)
    write_shard(dirpath / "shard_val_000000.bin", rng.choice(vocab, size=n_val, p=p))
    write_shard(dirpath / "shard_train_000001.bin", rng.choice(vocab, size=n_train, p=p))
    return dirpath
