"""Helpers for the training tests: shards, specs, and running gpt2-worker train."""
import json
import pathlib
import socket
import subprocess

import numpy as np
import yaml
from safetensors.numpy import load_file

from conftest import run

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


def write_spec(path, **spec):
    pathlib.Path(path).write_text(yaml.safe_dump(spec))
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def events(jsonl_path, kind="step"):
    return [e for e in map(json.loads, pathlib.Path(jsonl_path).read_text().splitlines()) if e["event"] == kind]


def tensors(checkpoint_dir, name="model.safetensors"):
    return load_file(str(pathlib.Path(checkpoint_dir) / name))


def train(worker, spec, metrics, *extra, timeout=900):
    return run([worker, "train", "--spec", spec, "--metrics-jsonl", metrics, *extra], timeout=timeout)


def start_ranks(worker, spec_path, *, world=2, timeout=60, metrics=None):
    """Starts `world` rank processes of one job on loopback (pipes for stdout and stderr, text)."""
    port = free_port()
    procs = []
    for r in range(world):
        cmd = [str(worker), "train", "--spec", str(spec_path), "--rank", str(r), "--world-size", str(world),
               "--master-port", str(port), "--timeout", str(timeout)]
        if metrics:
            cmd += ["--metrics-jsonl", str(metrics)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def wait_for_step(rank0, step):
    """Reads rank 0's progress lines ("step   N/M | ...") until it reports `step`."""
    for line in rank0.stdout:
        fields = line.split()
        if line.startswith("step") and "/" in fields[1] and int(fields[1].split("/")[0]) >= step:
            return
    raise AssertionError(f"rank 0 ended before step {step}")
