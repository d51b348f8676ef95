"""Malformed checkpoints give a clear error and a non-zero exit, never a crash."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel

from conftest import run

CONFIG = dict(n_layer=2, n_head=2, n_embd=32, n_positions=32, vocab_size=50257)


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(**CONFIG)).save_pretrained(d)
    return d


def score(worker, model_dir, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("hello world")
    return run([worker, "score", "--model", model_dir, text], check=False)


def variant(good_dir, tmp_path, name):
    d = tmp_path / name
    shutil.copytree(good_dir, d)
    return d


def assert_clean_failure(proc, *needles):
    assert proc.returncode in (1, 2), f"exit {proc.returncode} (negative = killed by a signal): {proc.stderr}"
    assert proc.stderr.startswith("error: "), proc.stderr
    for n in needles:
        assert n in proc.stderr, proc.stderr


def test_good_checkpoint_scores(worker, good_dir, tmp_path):
    assert json.loads(score(worker, good_dir, tmp_path).stdout)["tokens"] == 2


@pytest.mark.parametrize("keep", [0, 7, 100, 4096, -1])
def test_truncated_weights(worker, good_dir, tmp_path, keep):
    d = variant(good_dir, tmp_path, "trunc")
    f = d / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[:keep] if keep >= 0 else data[:-1])
    assert_clean_failure(score(worker, d, tmp_path), "model.safetensors")


def test_garbage_header(worker, good_dir, tmp_path):
    d = variant(good_dir, tmp_path, "garbage")
    f = d / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[8:40] = b"\xff" * 32
    f.write_bytes(bytes(data))
    assert_clean_failure(score(worker, d, tmp_path), "not a valid safetensors file")


def test_missing_tensor(worker, good_dir, tmp_path):
    d = variant(good_dir, tmp_path, "missing")
    state = load_file(str(d / "model.safetensors"))
    del state["transformer.h.1.mlp.c_fc.weight"]
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
    assert_clean_failure(score(worker, d, tmp_path), "h.1.mlp.c_fc.weight")


def test_wrong_shape(worker, good_dir, tmp_path):
    d = variant(good_dir, tmp_path, "shape")
    cfg = json.loads((d / "config.json").read_text())
    cfg["n_embd"], cfg["n_head"] = 64, 2
    (d / "config.json").write_text(json.dumps(cfg))
    assert_clean_failure(score(worker, d, tmp_path), "shape")


def test_unexpected_tensor(worker, good_dir, tmp_path):
    d = variant(good_dir, tmp_path, "extra")
    state = load_file(str(d / "model.safetensors"))
    state["transformer.h.9.attn.c_attn.weight"] = torch.zeros(2, 2)
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
    assert_clean_failure(score(worker, d, tmp_path), "unexpected tensor")


@pytest.mark.parametrize("patch,needle", [
    ({"model_type": "llama"}, "model_type"),
    ({"activation_function": "relu"}, "activation_function"),
    ({"n_layer": None}, "n_layer"),
    ({"n_head": 5}, "n_embd"),
])
def test_unknown_config(worker, good_dir, tmp_path, patch, needle):
    d = variant(good_dir, tmp_path, "config")
    cfg = json.loads((d / "config.json").read_text())
    for k, v in patch.items():
        if v is None:
            del cfg[k]
        else:
            cfg[k] = v
    (d / "config.json").write_text(json.dumps(cfg))
    assert_clean_failure(score(worker, d, tmp_path), needle)


def test_not_json_config_and_missing_dir(worker, good_dir, tmp_path):
    d = variant(good_dir, tmp_path, "notjson")
    (d / "config.json").write_text("{")
    assert_clean_failure(score(worker, d, tmp_path), "config.json")
    assert_clean_failure(score(worker, tmp_path / "nowhere", tmp_path), "does not exist")
