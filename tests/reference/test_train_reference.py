"""The training recipe against a straightforward PyTorch implementation of it, started from the
same weights and data: the first 20 steps' losses agree."""
import math

import numpy as np
import torch
from transformers import GPT2LMHeadModel

from conftest import run
from train_helpers import events, random_shards, tensors, train, write_spec

B, T, ACCUM, STEPS, WARMUP, MAX_LR = 4, 32, 2, 20, 5, 1e-3


def reference_losses(init_dir, shard_dir):
    """build-nanogpt's loop, by hand: same data order, AdamW groups, schedule, clipping."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel.from_pretrained(init_dir).train()
    tokens = np.fromfile(shard_dir / "shard_train_000001.bin", dtype=np.uint16, offset=1024).astype(np.int64)
    tokens = torch.from_numpy(tokens)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=MAX_LR, betas=(0.9, 0.95), eps=1e-8, fused=True)

    def lr_at(step):
        min_lr = MAX_LR * 0.1
        if step < WARMUP:
            return MAX_LR * (step + 1) / WARMUP
        ratio = (step - WARMUP) / (STEPS - WARMUP)
        return min_lr + 0.5 * (1 + math.cos(math.pi * ratio)) * (MAX_LR - min_lr)

    pos, losses, norms = 0, [], []
    for step in range(STEPS):
        opt.zero_grad()
        loss_accum = 0.0
        for _ in range(ACCUM):
            buf = tokens[pos:pos + B * T + 1]
            x, y = buf[:-1].view(B, T), buf[1:].view(B, T)
            pos += B * T
            if pos + B * T + 1 > len(tokens):
                pos = 0
            logits = model(x).logits
            loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1)) / ACCUM
            loss_accum += loss.item()
            loss.backward()
        norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item())
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        opt.step()
        losses.append(loss_accum)
    return losses, norms, model


def test_first_20_steps_match_pytorch(worker, tmp_path):
    shards = random_shards(tmp_path / "data")
    init = tmp_path / "init"
    run([worker, "init", "--n-layer", "2", "--n-head", "2", "--n-embd", "64", "--n-positions", "64", "--seed", "3", "--out", init])
    spec = write_spec(tmp_path / "job.yaml", name="ref",
                      model={"n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 64, "init_from": str(init)},
                      data={"dir": str(shards)},
                      batch={"total_tokens": B * T * ACCUM, "micro_batch": B, "seq_len": T},
                      optimizer={"max_lr": MAX_LR, "warmup_steps": WARMUP, "max_steps": STEPS},
                      eval={"val_every": 0, "sample_every": 0, "hellaswag_every": 0},
                      checkpoint={"dir": str(tmp_path / "ckpt")}, device="cpu")
    train(worker, spec, tmp_path / "m.jsonl")
    ours = events(tmp_path / "m.jsonl")
    ref_losses, ref_norms, ref_model = reference_losses(init, shards)
    assert [e["step"] for e in ours] == list(range(1, STEPS + 1))
    np.testing.assert_allclose([e["loss"] for e in ours], ref_losses, rtol=0, atol=1e-4)
    np.testing.assert_allclose([e["grad_norm"] for e in ours], ref_norms, rtol=1e-3)
    assert ours[-1]["loss"] < ours[0]["loss"] - 0.5  # it learned something
    # The final weights agree too (Conv1D layout in the file, as transformers keeps them).
    final = tensors(tmp_path / "ckpt" / f"step_{STEPS:08d}")
    ref_state = ref_model.state_dict()
    for name, value in final.items():
        np.testing.assert_allclose(value, ref_state[name].numpy(), rtol=0, atol=2e-4, err_msg=name)
