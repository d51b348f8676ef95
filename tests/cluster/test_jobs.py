"""Jobs end to end on a real cluster: gpt2d + gpt2-worker daemons on loopback, driven by gpt2ctl and
by a Python grpcio client generated from our protos."""
import json
import subprocess
import threading
import time

import grpc
import numpy as np
import pytest
from safetensors.numpy import load_file

import clusterlib as cl


def test_gpt2ctl_two_rank_job_to_success_and_transformers_loads_the_checkpoint(cluster, shards, tmp_path):
    cluster.start_gpt2d()
    cluster.start_worker("w0")
    cluster.start_worker("w1")
    spec = cl.write_yaml(tmp_path / "job.yaml", cl.small_spec(shards, steps=12, checkpoint_every=6))

    submit = cluster.ctl("jobs", "submit", "-f", spec, "-o", "json", check=True)
    job_id = json.loads(submit.stdout)["id"]
    watch = cluster.ctl("jobs", "watch", job_id)
    assert watch.returncode == 0, watch.stdout + watch.stderr
    assert "SUCCEEDED" in watch.stdout + watch.stderr

    job = json.loads(cluster.ctl("jobs", "get", job_id, "-o", "json", check=True).stdout)
    assert job["state"] == "JOB_STATE_SUCCEEDED" and int(job["step"]) == 12 and job["worker_ids"] == ["w0", "w1"]
    listed = json.loads(cluster.ctl("jobs", "list", "-o", "json", check=True).stdout)
    assert [j["id"] for j in listed["jobs"]] == [job_id]
    workers = json.loads(cluster.ctl("workers", "list", "-o", "json", check=True).stdout)
    assert sorted((w["id"], w["state"]) for w in workers["workers"]) == [("w0", "WORKER_STATE_IDLE"),
                                                                          ("w1", "WORKER_STATE_IDLE")]

    checkpoints = json.loads(cluster.ctl("checkpoints", "list", job_id, "-o", "json", check=True).stdout)
    steps = [int(c["step"]) for c in checkpoints["checkpoints"]]
    assert steps == [6, 12]
    newest = checkpoints["checkpoints"][-1]["path"]

    import torch
    from transformers import GPT2LMHeadModel
    model = GPT2LMHeadModel.from_pretrained(newest).eval()
    ours = load_file(f"{newest}/model.safetensors")
    theirs = model.state_dict()
    wte = ours["wte.weight"] if "wte.weight" in ours else ours["transformer.wte.weight"]
    assert np.array_equal(theirs["transformer.wte.weight"].numpy(), wte[: theirs["transformer.wte.weight"].shape[0]])
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3, 4]])).logits
    assert torch.isfinite(logits).all()


def test_python_grpc_client_submits_and_watches(cluster, shards):
    cluster.start_gpt2d()
    cluster.start_worker("w0")
    spec = cl.small_spec(shards, steps=9, world=1, checkpoint_every=3)
    spec["checkpoint"]["keep_best"] = False  # keep_last 2: step 3 is deleted when step 9 is written
    job = cluster.submit(spec)
    assert job.id.startswith("job-") and job.max_steps == 9 and job.world_size == 1
    events = cluster.events(job.id)
    kinds = [e.WhichOneof("event") for e in events]
    steps = [e.step.step for e in events if e.HasField("step")]
    assert steps == list(range(1, 10))
    assert kinds[0] == "state" and kinds[-1] == "state"
    from gpt2d.v1 import jobs_pb2
    assert events[-1].state == jobs_pb2.JOB_STATE_SUCCEEDED
    assert [e.sequence for e in events] == sorted({e.sequence for e in events})
    assert [e.checkpoint.step for e in events if e.HasField("checkpoint")] == [3, 6, 9]
    assert [c.step for c in cluster.checkpoints(job.id)] == [6, 9]  # what is still on disk
    # Resuming a watch replays only what came after.
    tail = cluster.events(job.id, after=events[-3].sequence)
    assert [e.sequence for e in tail] == [e.sequence for e in events[-2:]]


def test_cancel_stops_the_ranks_and_frees_the_workers(cluster, shards, tmp_path):
    cluster.start_gpt2d()
    cluster.start_worker("w0")
    cluster.start_worker("w1")
    spec = cl.write_yaml(tmp_path / "long.yaml", cl.small_spec(shards, steps=5000, checkpoint_every=0))
    job_id = json.loads(cluster.ctl("jobs", "submit", "-f", spec, "-o", "json", check=True).stdout)["id"]
    watcher = subprocess.Popen([str(cl.GPT2CTL), "--server", cluster.address, "jobs", "watch", job_id],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cl.wait_for(lambda: cluster.get(job_id).step >= 2, 60, "two steps")
    cancel = cluster.ctl("jobs", "cancel", job_id)
    assert cancel.returncode == 0, cancel.stderr
    assert watcher.wait(30) == 4  # the watch ends with the job's outcome: cancelled
    assert cluster.state(job_id) == "CANCELLED"
    t0 = time.monotonic()
    cl.wait_for(lambda: cluster.worker_state("w0") == "IDLE" and cluster.worker_state("w1") == "IDLE", 20,
                "workers to become idle")
    assert time.monotonic() - t0 < 20
    assert cluster.get(job_id).step < 5000
    # Cancelling again is harmless; a job that does not exist is NOT_FOUND.
    assert cluster.ctl("jobs", "cancel", job_id).returncode == 0
    assert cluster.ctl("jobs", "cancel", "job-999999").returncode == 6


def test_requests_are_validated_and_nothing_is_written(cluster, shards):
    cluster.start_gpt2d()
    from gpt2d.v1 import jobs_pb2
    jobs = cluster.jobs()
    bad = cl.small_spec(shards)
    bad["batch"]["total_tokens"] = 1000
    with pytest.raises(grpc.RpcError) as e:
        cluster.submit(bad)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "batch.total_tokens" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        cluster.submit({"model": {"preset": "gpt3"}, "data": {"dir": "/x"}})
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "model.preset" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        jobs.SubmitJob(jobs_pb2.SubmitJobRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "spec" in e.value.details()
    assert list(jobs.ListJobs(jobs_pb2.ListJobsRequest(), timeout=5).jobs) == []

    with pytest.raises(grpc.RpcError) as e:
        jobs.ListJobs(jobs_pb2.ListJobsRequest(page_size=1000), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_size" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        jobs.GetJob(jobs_pb2.GetJobRequest(id="job-424242"), timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        jobs.ListJobs(jobs_pb2.ListJobsRequest(page_token="garbage"), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # No workers: jobs queue. Idempotency keys and paging.
    a = cluster.submit(cl.small_spec(shards), key="k1")
    again = cluster.submit(cl.small_spec(shards), key="k1")
    assert again.id == a.id
    b = cluster.submit(cl.small_spec(shards))
    c = cluster.submit(cl.small_spec(shards))
    page = jobs.ListJobs(jobs_pb2.ListJobsRequest(page_size=2), timeout=5)
    assert [j.id for j in page.jobs] == [c.id, b.id] and page.next_page_token
    rest = jobs.ListJobs(jobs_pb2.ListJobsRequest(page_size=2, page_token=page.next_page_token), timeout=5)
    assert [j.id for j in rest.jobs] == [a.id] and not rest.next_page_token
    queued = jobs.ListJobs(jobs_pb2.ListJobsRequest(states=[jobs_pb2.JOB_STATE_QUEUED]), timeout=5)
    assert len(queued.jobs) == 3
    assert a.spec.checkpoint.dir.endswith(a.id)
    # gpt2ctl reports INVALID_ARGUMENT with exit 2 and the server's message.
    bad_yaml = cluster.root / "bad.yaml"
    cl.write_yaml(bad_yaml, bad)
    out = cluster.ctl("jobs", "submit", "-f", bad_yaml)
    assert out.returncode == 2 and "batch.total_tokens" in out.stderr
