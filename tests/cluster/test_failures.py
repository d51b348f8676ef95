"""Nothing is lost when a process dies or hangs: kill -9 of a worker or of gpt2d mid-job, a hung
rank, a partitioned worker, a replica dying under load, a model load that never returns."""
import os
import signal
import time

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


def notes_of(events):
    return [e.message for e in events if e.HasField("message")]


def test_a_hung_rank_is_restarted_from_its_checkpoint_and_ends_identical(tmp_path, shards, reference):
    """One rank's thread stops (ptrace: as a stuck device call would) while its worker heartbeats.
    gpt2d's progress watchdog fails the attempt within --rank-progress-timeout; the stuck rank
    cannot be cancelled, so its worker exits with 75 after --cancel-grace (for its supervisor to
    restart); the peer, stalled in a collective, stops at its collective timeout; the job resumes
    from its checkpoint on the healthy workers and ends with the uninterrupted run's weights."""
    c = cl.Cluster(tmp_path / "c", gpt2d_args=["--rank-progress-timeout", "3"])
    helper = None
    try:
        c.start_gpt2d()
        c.start_worker("w0", collective_timeout=8)  # longer than the watchdog: it, not gloo, notices
        c.start_worker("w1", extra=["--cancel-grace", "4"])
        job = c.submit(spec(shards))
        cl.wait_for(lambda: any(k.step >= 8 for k in c.checkpoints(job.id)), 120, "the checkpoint at step 8")
        assert c.get(job.id).step < STEPS
        helper = cl.freeze_thread(c.workers["w1"].p.pid, "gpt2-rank")
        hung_at = time.monotonic()
        c.wait_state(job.id, "RESTARTING", timeout=30)
        noticed = time.monotonic() - hung_at
        assert noticed < 3 + 4, f"the watchdog took {noticed:.1f}s for a 3s timeout"
        assert c.workers["w1"].p.wait(30) == 75, "the worker with the stuck rank did not exit with 75"
        assert "did not stop within 4s of being cancelled" in c.workers["w1"].output()
        c.start_worker("w2")  # what w1's supervisor would do; the job needs two workers again
        events = c.events(job.id)
        assert c.state(job.id) == "SUCCEEDED", notes_of(events)
        final = c.get(job.id)
        assert final.restarts == 1 and final.attempt == 2 and final.step == STEPS
        notes = notes_of(events)
        # The watchdog names the idle ranks (one hung rank soon stalls the other in a collective).
        assert any("(w1)" in n and "made no progress for" in n and "while heartbeating" in n for n in notes), notes
        assert any("resuming from step" in n for n in notes), notes
        assert_same_weights(reference, load_file(str(cl.final_checkpoint(c.root, job.id) / "model.safetensors")))
    finally:
        if helper and helper.poll() is None:
            helper.kill()
            helper.wait(10)
        c.stop()


def test_a_partitioned_worker_is_lost_and_rejoins_idle_after_the_job_restarted(cluster, shards, reference):
    """SIGSTOP of a whole worker: its stream stays open (the kernel keeps the TCP connection) but
    nothing arrives. gpt2d loses it at the heartbeat timeout and restarts the group from its
    checkpoint on the others; resumed (SIGCONT), the worker finds its stream gone, reconnects with a
    stale rank that gpt2d cancels, and is idle again; the job ends with the uninterrupted weights."""
    cluster.start_gpt2d()
    cluster.start_worker("w0", collective_timeout=6)
    w1 = cluster.start_worker("w1", collective_timeout=6)
    job = cluster.submit(spec(shards))
    cl.wait_for(lambda: any(k.step >= 8 for k in cluster.checkpoints(job.id)), 120, "the checkpoint at step 8")
    os.kill(w1.p.pid, signal.SIGSTOP)
    try:
        cluster.wait_state(job.id, "RESTARTING", timeout=30)
        cl.wait_for(lambda: cluster.worker_state("w1") == "LOST", 10, "w1 LOST")
        cluster.start_worker("w2")
        events = cluster.events(job.id)
    finally:
        os.kill(w1.p.pid, signal.SIGCONT)
    assert cluster.state(job.id) == "SUCCEEDED", notes_of(events)
    final = cluster.get(job.id)
    assert final.restarts == 1 and final.attempt == 2 and final.step == STEPS
    notes = notes_of(events)
    assert any("w1" in n and "no heartbeat" in n for n in notes), notes
    assert_same_weights(reference, load_file(str(cl.final_checkpoint(cluster.root, job.id) / "model.safetensors")))
    cl.wait_for(lambda: cluster.worker_state("w1") == "IDLE", 60, "w1 idle again after SIGCONT")
    assert w1.alive()


def test_a_model_load_that_never_returns_stalls_nothing_else(tmp_path):
    """A deployment whose model.safetensors is a FIFO nobody writes: its load blocks in open()
    forever, as on a hung file system. The worker still obeys gpt2d: the deployment is deleted,
    another one is created, and the same worker serves it while the first load is still blocked."""
    import subprocess

    from gpt2d.v1 import cluster_pb2, cluster_pb2_grpc, generate_pb2, generate_pb2_grpc

    model = tmp_path / "good"
    subprocess.run([str(cl.WORKER), "init", "--config", "gpt2", "--n-layer", "1", "--n-head", "2", "--n-embd", "32",
                    "--n-positions", "64", "--seed", "1", "--out", str(model)], check=True, capture_output=True)
    stuck = tmp_path / "stuck"
    stuck.mkdir()
    (stuck / "config.json").write_text((model / "config.json").read_text())
    os.mkfifo(stuck / "model.safetensors")
    c = cl.Cluster(tmp_path / "c")
    try:
        c.start_gpt2d()
        c.start_worker("w0")
        d = cluster_pb2_grpc.DeploymentServiceStub(c.channel())
        md = c.metadata()
        d.CreateDeployment(cluster_pb2.CreateDeploymentRequest(
            deployment=cluster_pb2.Deployment(name="stuck", checkpoint=str(stuck))), metadata=md, timeout=10)
        cl.wait_for(lambda: "serving stuck" in c.workers["w0"].output(), 30, "w0 to start loading the stuck model")
        time.sleep(1)
        d.DeleteDeployment(cluster_pb2.DeleteDeploymentRequest(name="stuck"), metadata=md, timeout=10)
        d.CreateDeployment(cluster_pb2.CreateDeploymentRequest(
            deployment=cluster_pb2.Deployment(name="good", checkpoint=str(model))), metadata=md, timeout=10)
        get = lambda: d.GetDeployment(cluster_pb2.GetDeploymentRequest(name="good"), metadata=md, timeout=10)
        cl.wait_for(lambda: get().ready_replicas == 1, 60, "w0 serving the good deployment")
        stub = generate_pb2_grpc.GenerateServiceStub(c.channel())
        r = stub.Complete(generate_pb2.GenerateRequest(deployment="good", prompt="Hello", sampling=generate_pb2.SamplingParams(
            max_tokens=4, temperature=0, ignore_eos=True)), metadata=md, timeout=30)
        assert r.usage.completion_tokens == 4
        assert c.worker_state("w0") == "SERVING"
    finally:
        # Unblock the stuck load (it then fails on an empty file) so that w0 can leave cleanly.
        try:
            os.close(os.open(stuck / "model.safetensors", os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # ENXIO: no reader (the load never started or already ended)
            pass
        c.stop()


def test_requests_survive_a_dying_replica(tmp_path):
    """Two replicas of 4 slots under 32 concurrent streams; kill -9 one: its requests that had not
    answered yet complete on the other (a retry the client cannot see), the ones mid-stream end
    UNAVAILABLE saying the replica was lost, none hangs, later requests all succeed, and the
    deployment is refilled from the idle worker."""
    import subprocess
    import threading

    import grpc
    from gpt2d.v1 import cluster_pb2, cluster_pb2_grpc, generate_pb2, generate_pb2_grpc

    model = tmp_path / "step_00000001"
    subprocess.run([str(cl.WORKER), "init", "--config", "gpt2", "--n-layer", "2", "--n-head", "2", "--n-embd", "64",
                    "--n-positions", "128", "--seed", "1", "--out", str(model)], check=True, capture_output=True)
    c = cl.Cluster(tmp_path / "c")
    try:
        c.start_gpt2d()
        for name in ("w0", "w1", "w2"):
            c.start_worker(name, extra=["--max-slots", "4"])
        deployments = cluster_pb2_grpc.DeploymentServiceStub(c.channel())
        get = lambda: deployments.GetDeployment(cluster_pb2.GetDeploymentRequest(name="default"),
                                                metadata=c.metadata(), timeout=10)
        deployments.CreateDeployment(cluster_pb2.CreateDeploymentRequest(
            deployment=cluster_pb2.Deployment(name="default", checkpoint=str(model), replicas=2)),
            metadata=c.metadata(), timeout=10)
        cl.wait_for(lambda: get().ready_replicas == 2, 120, "two ready replicas")
        serving = list(get().worker_ids)
        idle = ({"w0", "w1", "w2"} - set(serving)).pop()
        victim = serving[0]

        stub = generate_pb2_grpc.GenerateServiceStub(c.channel())
        results, streaming, lock = {}, set(), threading.Lock()
        both_busy = threading.Event()  # 8 streams have tokens: each replica's 4 slots are streaming

        def run(i):
            req = generate_pb2.GenerateRequest(prompt=f"Request {i}:", sampling=generate_pb2.SamplingParams(
                max_tokens=100, temperature=0, ignore_eos=True))
            got = 0
            try:
                for m in stub.Generate(req, timeout=120):
                    got += len(m.token_ids)
                    with lock:
                        streaming.add(i)
                        if len(streaming) >= 8:
                            both_busy.set()
                results[i] = ("OK", got, "")
            except grpc.RpcError as e:
                results[i] = (e.code().name, got, e.details())

        threads = [threading.Thread(target=run, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        assert both_busy.wait(60), "8 streams did not start"
        c.workers[victim].kill9()
        later = [threading.Thread(target=run, args=(100 + i,)) for i in range(8)]
        for t in later:
            t.start()
        for t in threads + later:
            t.join(180)
            assert not t.is_alive(), "a request hangs"
        failed = {i: r for i, r in results.items() if r[0] != "OK"}
        for i, (code, got, details) in failed.items():
            assert code == "UNAVAILABLE" and got > 0 and "lost mid-stream" in details, (i, code, got, details)
        assert all(results[100 + i] == ("OK", 100, "") for i in range(8)), results
        ok = [r for r in results.values() if r[0] == "OK"]
        assert all(got == 100 for _, got, _ in ok)
        assert 1 <= len(failed) <= 4, failed  # at most the victim's 4 slots were mid-stream
        # The victim's queued requests (beyond its 4 slots) were retried on the other replica.
        assert retries_seen(c) >= 1
        cl.wait_for(lambda: get().ready_replicas == 2 and idle in get().worker_ids, 120,
                    "the deployment refilled from the idle worker")
    finally:
        c.stop()


def retries_seen(c):
    """gpt2d's gpt2_generate_retries_total."""
    for line in cl.http_get(c.http_port, "/metrics")[1].splitlines():
        if line.startswith("gpt2_generate_retries_total"):
            return float(line.rsplit(" ", 1)[1])
    return None
