"""Generation (the serving engine behind `gpt2-worker sample`) against transformers' generate."""
import json

import pytest
import torch

from conftest import run

PROMPTS = ["Hello, I'm a language model,", "The quick brown fox", "\n\n", "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16"]


@pytest.fixture(scope="module")
def random_model(worker, tmp_path_factory):
    d = tmp_path_factory.mktemp("generate") / "model"
    run([worker, "init", "--config", "gpt2", "--n-layer", "3", "--n-head", "4", "--n-embd", "128",
         "--n-positions", "128", "--seed", "11", "--out", d])
    return d


def sample(worker, model, prompt, *extra):
    out = run([worker, "sample", "--model", model, "--prompt", prompt, "--json", *extra])
    return json.loads(out.stdout)


def test_greedy_continuation_equals_transformers_generate(worker, random_model, enc):
    from transformers import GPT2LMHeadModel
    hf = GPT2LMHeadModel.from_pretrained(random_model).eval()
    for prompt in PROMPTS:
        ids = enc.encode_ordinary(prompt)
        ours = sample(worker, random_model, prompt, "--temperature", "0", "--max-new-tokens", "40", "--ignore-eos")
        with torch.no_grad():
            theirs = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=40, do_sample=False, eos_token_id=None, pad_token_id=0)
        assert ours["tokens"] == theirs[0, len(ids):].tolist(), prompt
        assert ours["finish_reason"] == "length" and ours["text"] == enc.decode(ours["tokens"])


def test_seeded_sampling_is_reproducible_and_seed_dependent(worker, random_model):
    args = ["--temperature", "1.0", "--top-k", "100", "--top-p", "0.9", "--max-new-tokens", "24", "--ignore-eos"]
    a = sample(worker, random_model, PROMPTS[0], *args, "--seed", "1")
    b = sample(worker, random_model, PROMPTS[0], *args, "--seed", "1")
    c = sample(worker, random_model, PROMPTS[0], *args, "--seed", "2")
    assert a["tokens"] == b["tokens"] and a["tokens"] != c["tokens"]
    assert len(a["tokens"]) == 24


def test_prompt_plus_max_tokens_beyond_the_context_is_refused(worker, random_model):
    out = run([worker, "sample", "--model", random_model, "--prompt", "hi", "--max-new-tokens", "200", "--json"],
              check=False)
    assert out.returncode == 2 and "max_tokens" in out.stderr and "context of 128" in out.stderr
