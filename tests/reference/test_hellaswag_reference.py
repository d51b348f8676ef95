"""HellaSwag per-example scores equal build-nanogpt's scoring done with transformers on the same
random model; accuracy is reported as in training."""
import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from conftest import ROOT, run

DATA = ROOT / "tests" / "data" / "hellaswag_sample.jsonl"


def reference_scores(model, example, enc):
    """hellaswag.py's render_example + the masked, shifted cross-entropy."""
    ctx = enc.encode_ordinary(example["ctx"])
    rows, masks = [], []
    for ending in example["endings"]:
        end = enc.encode_ordinary(" " + ending)
        rows.append(ctx + end)
        masks.append([0] * len(ctx) + [1] * len(end))
    width = max(map(len, rows))
    tokens = torch.zeros(4, width, dtype=torch.long)
    mask = torch.zeros(4, width)
    for i, (r, m) in enumerate(zip(rows, masks)):
        tokens[i, :len(r)] = torch.tensor(r)
        mask[i, :len(m)] = torch.tensor(m, dtype=torch.float)
    with torch.no_grad():
        logits = model(tokens).logits.double()
    losses = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1),
                                               reduction="none").view(4, -1)
    shift_mask = mask[:, 1:].double()
    sums = (losses * shift_mask).sum(1)
    return sums.tolist(), (sums / shift_mask.sum(1)).tolist()


def test_per_example_scores_match_transformers(worker, enc, tmp_path):
    torch.manual_seed(5)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=128)).eval()
    with torch.no_grad():  # widen the random weights so the endings' losses differ visibly
        for name, p in model.named_parameters():
            if name.endswith("weight") and "ln" not in name:
                p.mul_(4.0)
    model.save_pretrained(tmp_path / "m")
    per = tmp_path / "per.jsonl"
    got = json.loads(run([worker, "eval-hellaswag", "--model", tmp_path / "m", "--data", DATA, "--per-example", per]).stdout)
    examples = [json.loads(l) for l in DATA.read_text().splitlines()]
    ours = [json.loads(l) for l in per.read_text().splitlines()]
    assert len(ours) == len(examples) == got["examples"] == 8
    correct = correct_norm = 0
    for ex, o in zip(examples, ours):
        sums, means = reference_scores(model, ex, enc)
        assert o["sum_loss"] == pytest.approx(sums, rel=1e-5)
        assert o["mean_loss"] == pytest.approx(means, rel=1e-5)
        assert o["pred"] == min(range(4), key=lambda i: sums[i])
        assert o["pred_norm"] == min(range(4), key=lambda i: means[i])
        correct += o["pred"] == ex["label"]
        correct_norm += o["pred_norm"] == ex["label"]
    assert got["acc"] == pytest.approx(correct / 8)
    assert got["acc_norm"] == pytest.approx(correct_norm / 8)


def test_bad_hellaswag_file_is_refused(worker, tmp_path):
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=1, n_embd=16, n_positions=64)).save_pretrained(tmp_path / "m")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ctx": "a", "endings": ["b", "c"], "label": 0}\n')
    proc = run([worker, "eval-hellaswag", "--model", tmp_path / "m", "--data", bad], check=False)
    assert proc.returncode == 2 and "bad.jsonl:1" in proc.stderr and "endings" in proc.stderr


def test_the_official_file_names_are_checked(worker, tmp_path):
    """hellaswag_val.jsonl must be the whole validation split (10,042 rows); the test split, which has
    no labels, is refused by name. Other names take any number of rows (as the sample above)."""
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=1, n_embd=16, n_positions=64)).save_pretrained(tmp_path / "m")
    truncated = tmp_path / "hellaswag_val.jsonl"
    truncated.write_text(DATA.read_text())
    proc = run([worker, "eval-hellaswag", "--model", tmp_path / "m", "--data", truncated], check=False)
    rows = sum(1 for line in DATA.read_text().splitlines() if line.strip())
    assert proc.returncode == 2
    assert f"hellaswag_val.jsonl: {rows} examples; the official hellaswag_val.jsonl has 10042" in proc.stderr
    # --limit scores a prefix of it, so the row count is not checked then.
    assert run([worker, "eval-hellaswag", "--model", tmp_path / "m", "--data", truncated, "--limit", "2"]).returncode == 0

    test_split = tmp_path / "hellaswag_test.jsonl"
    test_split.write_text(DATA.read_text())
    proc = run([worker, "eval-hellaswag", "--model", tmp_path / "m", "--data", test_split], check=False)
    assert proc.returncode == 2 and "test split has no labels" in proc.stderr
