"""Nothing is lost when a process dies: kill -9 of a worker or of gpt2d mid-job."""
import numpy as np
import pytest
from safetensors.numpy import load_file

import clusterlib as cl

STEPS = 24


def spec(shards):
    # Two micro-steps per rank per step: slow enough (~0.3 s/step) to kill a process mid-job.
    return cl.small_spec(shards, steps=STEPS, checkpoint_every=4, accum=2)


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory):
    """Final weights of the same job run without interruption."""
    c = cl.Cluster(tmp_path_factory.mktemp("reference"))
    try:
        c.start_gpt2d()
        c.start_worker("w0")
        c.start_worker("w1")
        job = c.submit(spec(shards))
        c.events(job.id)
        assert c.state(job.id) == "SUCCEEDED"
        return load_file(str(cl.final_checkpoint(c.root, job.id) / "model.safetensors"))
    finally:
        c.stop()


def assert_same_weights(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        assert np.array_equal(a[name], b[name]), name


def test_killed_worker_restarts_the_group_from_its_checkpoint_and_ends_identical(cluster, shards, reference):
    cluster.start_gpt2d()
    cluster.start_worker("w0")
    cluster.start_worker("w1")
    job = cluster.submit(spec(shards))
    cl.wait_for(lambda: any(c.step >= 8 for c in cluster.checkpoints(job.id)), 120, "the checkpoint at step 8")
    assert cluster.get(job.id).step < STEPS
    cluster.workers["w1"].kill9()
    cluster.wait_state(job.id, "RESTARTING", timeout=30)
    cluster.start_worker("w2")  # a replacement; the job needs two workers again
    events = cluster.events(job.id)
    assert cluster.state(job.id) == "SUCCEEDED"
    final = cluster.get(job.id)
    assert final.restarts == 1 and final.attempt == 2 and final.step == STEPS
    notes = [e.message for e in events if e.HasField("message")]
    assert any("resuming from step" in n for n in notes), notes
    assert any("w1" in n and ("lost" in n or "failed" in n) for n in notes), notes
    assert_same_weights(reference, load_file(str(cl.final_checkpoint(cluster.root, job.id) / "model.safetensors")))


def test_killed_gpt2d_recovers_its_history_and_the_job_completes(cluster, shards, reference):
    cluster.start_gpt2d()
    cluster.start_worker("w0")
    cluster.start_worker("w1")
    job = cluster.submit(spec(shards))
    cl.wait_for(lambda: cluster.get(job.id).step >= 4, 120, "step 4")
    cluster.gpt2d.kill9()
    cluster._channel = None
    cluster.start_gpt2d()  # same database, same address
    events = cluster.events(job.id)
    assert cluster.state(job.id) == "SUCCEEDED"
    final = cluster.get(job.id)
    assert final.restarts == 0 and final.attempt == 1, "the running ranks were re-attached, not restarted"
    seqs = [e.sequence for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
    steps = sorted(e.step.step for e in events if e.HasField("step"))
    assert steps == list(range(1, STEPS + 1)), "step reports made while gpt2d was down were delivered later"
    assert any("gpt2d restarted" in e.message for e in events if e.HasField("message"))
    assert_same_weights(reference, load_file(str(cl.final_checkpoint(cluster.root, job.id) / "model.safetensors")))
