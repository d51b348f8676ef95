"""Exact resume and data-parallel equivalence, with real processes."""
import shutil
import signal
import time

import numpy as np
import pytest

from train_helpers import events, random_shards, start_ranks, tensors, train, wait_for_step, write_spec


def spec(tmp_path, name, shards, *, steps, total, micro, world=1, every=0, ckpt=None, val_every=0):
    return write_spec(tmp_path / f"{name}.yaml", name=name,
                      model={"n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 64},
                      data={"dir": str(shards)},
                      batch={"total_tokens": total, "micro_batch": micro, "seq_len": 32},
                      optimizer={"max_lr": 1e-3, "warmup_steps": 3, "max_steps": steps},
                      eval={"val_every": val_every, "val_batches": 2, "sample_every": 0, "hellaswag_every": 0},
                      checkpoint={"dir": str(ckpt or tmp_path / f"{name}-ckpt"), "every": every, "keep_last": 5},
                      world_size=world, device="cpu", seed=1234)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return random_shards(tmp_path_factory.mktemp("data"), n_train=12_000)


def test_resume_is_bit_exact(worker, shards, tmp_path):
    """20 steps straight == 10 steps, checkpoint, a new process resuming from it, 10 more steps."""
    straight = spec(tmp_path, "straight", shards, steps=20, total=256, micro=4, every=10)
    train(worker, straight, tmp_path / "straight.jsonl")
    resumed_ckpt = tmp_path / "resumed-ckpt"
    resumed_ckpt.mkdir()
    shutil.copytree(tmp_path / "straight-ckpt" / "step_00000010", resumed_ckpt / "step_00000010")
    resumed = spec(tmp_path, "resumed", shards, steps=20, total=256, micro=4, every=10, ckpt=resumed_ckpt)
    train(worker, resumed, tmp_path / "resumed.jsonl", "--resume", "latest")

    a, b = events(tmp_path / "straight.jsonl"), events(tmp_path / "resumed.jsonl")
    assert [e["step"] for e in b] == list(range(11, 21))
    assert [e["loss"] for e in a[10:]] == [e["loss"] for e in b]  # bit for bit
    assert [e["grad_norm"] for e in a[10:]] == [e["grad_norm"] for e in b]
    for name in ("model.safetensors", "optimizer.safetensors"):
        x, y = tensors(tmp_path / "straight-ckpt" / "step_00000020", name), tensors(resumed_ckpt / "step_00000020", name)
        assert x.keys() == y.keys()
        for k in x:
            assert np.array_equal(x[k], y[k]), f"{name}:{k}"


def test_two_ranks_equal_one_rank_with_accumulation(worker, shards, tmp_path):
    single = spec(tmp_path, "single", shards, steps=8, total=256, micro=4, world=1, val_every=4)
    train(worker, single, tmp_path / "single.jsonl")

    ddp = spec(tmp_path, "ddp", shards, steps=8, total=256, micro=4, world=2, val_every=4)
    procs = start_ranks(worker, ddp, timeout=60, metrics=tmp_path / "ddp-{rank}.jsonl")
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err

    one, two = events(tmp_path / "single.jsonl"), events(tmp_path / "ddp-0.jsonl")
    np.testing.assert_allclose([e["loss"] for e in two], [e["loss"] for e in one], rtol=1e-6)
    assert [e["loss"] for e in events(tmp_path / "ddp-1.jsonl")] == [e["loss"] for e in two]  # all-reduced
    # Validation covers each rank's own strided batches (build-nanogpt): the value differs from one
    # rank's, but is the same all-reduced mean on every rank.
    val0 = [e["val_loss"] for e in events(tmp_path / "ddp-0.jsonl", "eval")]
    assert len(val0) == 2 and val0 == [e["val_loss"] for e in events(tmp_path / "ddp-1.jsonl", "eval")]
    x = tensors(tmp_path / "single-ckpt" / "step_00000008")
    y = tensors(tmp_path / "ddp-ckpt" / "step_00000008")
    for k in x:
        np.testing.assert_allclose(y[k], x[k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_a_dead_rank_fails_the_other_within_the_timeout(worker, shards, tmp_path):
    """kill -9 of one rank mid-run: the other fails with an error instead of hanging."""
    rank0, rank1 = start_ranks(worker, spec(tmp_path, "dead", shards, steps=200, total=256, micro=4, world=2), timeout=20)
    wait_for_step(rank0, 3)
    rank1.kill()
    rank1.wait()
    _, err = rank0.communicate(timeout=60)  # well within the 20 s collective timeout + start-up
    assert rank0.returncode != 0
    assert "error: rank 0" in err and ("peer" in err or "collective" in err or "Connection" in err), err


def test_a_hung_rank_fails_the_other_at_the_timeout(worker, shards, tmp_path):
    """A rank that is alive but silent (SIGSTOP) is noticed when the collective times out."""
    rank0, rank1 = start_ranks(worker, spec(tmp_path, "hung", shards, steps=200, total=256, micro=4, world=2), timeout=8)
    try:
        wait_for_step(rank0, 3)
        rank1.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        _, err = rank0.communicate(timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        rank1.kill()
        rank1.wait()
    assert rank0.returncode != 0 and "error: rank 0" in err, err
    assert elapsed < 8 + 20, f"took {elapsed:.1f} s to notice a hung peer with an 8 s timeout"
