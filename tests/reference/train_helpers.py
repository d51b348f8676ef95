"""Helpers for the training tests: shards, specs, and running gpt2-worker train."""
import json
import pathlib
import socket
import subprocess
import sys

import yaml
from safetensors.numpy import load_file

from conftest import run

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from shards import random_shards, write_shard  # noqa: E402,F401  (re-exported for the tests)


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
