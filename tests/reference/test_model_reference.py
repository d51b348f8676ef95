"""Our GPT-2 against Hugging Face transformers: same checkpoints, same logits, same loss."""
import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from transformers import GPT2Config, GPT2LMHeadModel

from conftest import run

SMALL = dict(n_layer=3, n_head=4, n_embd=64, n_positions=64, vocab_size=50257)


def hf_model(seed=0, **config):
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(**config))
    # Random weights at GPT-2's init scale give tiny logits; widen them so that errors would show.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".weight") and ".ln_" not in name and "ln_f" not in name:
                p.mul_(5.0)
    return model.eval()


def our_logits(logits_tool, model_dir, rows, tmp_path):
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps(rows))
    out = tmp_path / "logits.safetensors"
    run([logits_tool, model_dir, tokens, out])
    return load_file(str(out))["logits"]


def hf_logits(model, rows):
    with torch.no_grad():
        return model(torch.tensor(rows)).logits.float().numpy()


def max_rel_err(ours, ref):
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("config", [SMALL, dict()], ids=["small", "gpt2-124M"])
def test_logits_match_transformers(config, logits_tool, tmp_path):
    model = hf_model(**config)
    model_dir = tmp_path / "hf"
    model.save_pretrained(model_dir)
    rng = np.random.default_rng(1)
    rows = rng.integers(0, 50257, size=(2, 48)).tolist()
    ours, ref = our_logits(logits_tool, model_dir, rows, tmp_path), hf_logits(model, rows)
    assert ours.shape == ref.shape == (2, 48, 50257)
    assert max_rel_err(ours, ref) <= 1e-5


def test_our_checkpoint_loads_in_transformers(worker, logits_tool, tmp_path):
    ckpt = tmp_path / "ours"
    run([worker, "init", "--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--n-positions", "32",
         "--seed", "7", "--out", ckpt])
    model = GPT2LMHeadModel.from_pretrained(ckpt).eval()
    assert model.config.vocab_size == 50257 and model.config.n_layer == 2
    rows = [[50256, 464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290]]
    ours, ref = our_logits(logits_tool, ckpt, rows, tmp_path), hf_logits(model, rows)
    assert max_rel_err(ours, ref) <= 1e-5
    # Tied head: transformers sees one tensor for both.
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


def test_checkpoint_without_prefix_and_with_mask_buffers_loads(logits_tool, tmp_path):
    """OpenAI's released model.safetensors has names without 'transformer.' and .attn.bias buffers."""
    from safetensors.torch import save_file
    model = hf_model(**SMALL)
    state = {k.removeprefix("transformer."): v.contiguous() for k, v in model.state_dict().items()
             if k != "lm_head.weight"}
    n = SMALL["n_positions"]
    for i in range(SMALL["n_layer"]):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
    d = tmp_path / "released"
    d.mkdir()
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
    model.config.to_json_file(str(d / "config.json"))
    rows = [[1, 2, 3, 4, 5, 6, 7, 8]]
    assert max_rel_err(our_logits(logits_tool, d, rows, tmp_path), hf_logits(model, rows)) <= 1e-5


def hf_sliding_window_loss(model, ids, ctx, stride):
    """Each target scored once with as much left context as fits: the windows `score` documents."""
    total, count, prev_end, end = 0.0, 0, 1, min(ctx, len(ids))
    while prev_end < len(ids):
        begin = max(0, end - ctx)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids[begin:end]])).logits[0].double(), -1)
        for t in range(prev_end, end):
            total -= logp[t - 1 - begin, ids[t]].item()
            count += 1
        prev_end, end = end, min(end + stride, len(ids))
    return total / count, count


def test_score_matches_transformers_loss(worker, enc, tmp_path):
    model = hf_model(**SMALL)
    model_dir = tmp_path / "hf"
    model.save_pretrained(model_dir)
    texts = ["The quick brown fox jumps over the lazy dog. " * 6,
             "Python's standard library is very extensive, offering a wide range of facilities."]
    files = []
    for i, t in enumerate(texts):
        f = tmp_path / f"doc{i}.txt"
        f.write_text(t)
        files.append(f)
    ids = []
    for t in texts:
        ids += [50256] + enc.encode_ordinary(t)
    assert len(ids) > SMALL["n_positions"]  # several windows
    for stride in (16, 64):
        got = json.loads(run([worker, "score", "--model", model_dir, "--stride", stride, *files]).stdout)
        want, count = hf_sliding_window_loss(model, ids, SMALL["n_positions"], stride)
        assert got["tokens"] == count == len(ids) - 1
        assert got["mean_loss"] == pytest.approx(want, rel=1e-5)
        assert got["perplexity"] == pytest.approx(np.exp(want), rel=1e-5)
