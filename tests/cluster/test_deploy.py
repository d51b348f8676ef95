"""Deployments on gpt2d: workers serve a checkpoint or follow a training job (hot-loading each new
checkpoint), and gpt2d routes Generate streams to them."""
import subprocess
import threading

import grpc
import pytest

import clusterlib as cl


def deployments(cluster):
    from gpt2d.v1 import cluster_pb2_grpc
    return cluster_pb2_grpc.DeploymentServiceStub(cluster.channel())


def create(cluster, **fields):
    from gpt2d.v1 import cluster_pb2
    return deployments(cluster).CreateDeployment(
        cluster_pb2.CreateDeploymentRequest(deployment=cluster_pb2.Deployment(**fields)), timeout=10)


def get(cluster, name):
    from gpt2d.v1 import cluster_pb2
    return deployments(cluster).GetDeployment(cluster_pb2.GetDeploymentRequest(name=name), timeout=10)


def generate(cluster, prompt, deployment="", **sampling):
    from gpt2d.v1 import generate_pb2, generate_pb2_grpc
    stub = generate_pb2_grpc.GenerateServiceStub(cluster.channel())
    req = generate_pb2.GenerateRequest(deployment=deployment, prompt=prompt,
                                       sampling=generate_pb2.SamplingParams(**sampling))
    return list(stub.Generate(req, timeout=120))


def test_a_deployment_follows_its_job_and_gpt2d_relays_streams_through_the_switches(cluster, shards):
    """32 streams through gpt2d while the job writes checkpoints that the deployment hot-loads."""
    cluster.start_gpt2d()
    cluster.start_worker("w0")
    cluster.start_worker("w1")
    spec = cl.small_spec(shards, steps=24, world=1, checkpoint_every=8, accum=4)
    spec["checkpoint"]["keep_last"] = 3
    job = cluster.submit(spec)
    d = create(cluster, name="live", follow_job=job.id)
    assert d.replicas == 1 and d.follow_job == job.id
    cl.wait_for(lambda: get(cluster, "live").ready_replicas == 1, 120, "a ready replica (after the first checkpoint)")
    assert cluster.worker_state("w1") == "SERVING" or cluster.worker_state("w0") == "SERVING"

    results, errors, done = [], [], threading.Event()

    def client(i):
        while not done.is_set():
            try:
                msgs = generate(cluster, "Once upon a time", deployment="live", temperature=0.7, seed=i,
                                max_tokens=16, ignore_eos=True)
                results.append((i, msgs[-1].model.step, msgs[-1].done, sum(len(m.token_ids) for m in msgs)))
            except grpc.RpcError as e:
                errors.append(e)
            done.wait(0.2)  # leave the trainer some of this machine's two cores
    threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    try:
        cluster.events(job.id)
        assert cluster.state(job.id) == "SUCCEEDED"
        cl.wait_for(lambda: get(cluster, "live").serving_step == 24, 60, "the replica to serve step 24")
        n = len(results)
        cl.wait_for(lambda: len([r for r in results[n:] if r[1] == 24]) >= 32, 60, "responses from step 24")
    finally:
        done.set()
        for t in threads:
            t.join(60)
    assert not errors, errors[:3]
    assert all(ok and tokens == 16 for _, _, ok, tokens in results)
    assert 24 in {s for _, s, _, _ in results} and {s for _, s, _, _ in results} <= {8, 16, 24}
    for i in range(32):
        mine = [s for j, s, *_ in results if j == i]
        assert mine == sorted(mine)
    assert all(r.model.job_id == job.id for r in generate(cluster, "Hi", max_tokens=2)[-1:])


def test_deployment_validation_routing_errors_and_delete(cluster, shards, tmp_path):
    cluster.start_gpt2d()
    from gpt2d.v1 import cluster_pb2
    with pytest.raises(grpc.RpcError) as e:
        generate(cluster, "Hello", max_tokens=2)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    for fields, field in [(dict(name="Bad_Name", checkpoint="/x"), "deployment.name"),
                          (dict(name="a"), "deployment.checkpoint"),
                          (dict(name="a", checkpoint="/x", follow_job="job-000001"), "deployment.checkpoint"),
                          (dict(name="a", follow_job="job-424242"), "deployment.follow_job"),
                          (dict(name="a", checkpoint="/x", replicas=100), "deployment.replicas")]:
        with pytest.raises(grpc.RpcError) as e:
            create(cluster, **fields)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details().startswith(field), fields
    model = tmp_path / "step_00000007"
    subprocess.run([str(cl.WORKER), "init", "--config", "gpt2", "--n-layer", "2", "--n-head", "4", "--n-embd", "64",
                    "--n-positions", "64", "--out", str(model)], check=True, capture_output=True)
    create(cluster, checkpoint=str(model))  # "default"
    with pytest.raises(grpc.RpcError) as e:
        create(cluster, checkpoint=str(model))
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as e:
        generate(cluster, "Hello", max_tokens=2)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE  # no worker yet
    cluster.start_worker("w0", wait=False)  # it goes straight to serving the waiting deployment
    cl.wait_for(lambda: get(cluster, "default").ready_replicas == 1, 60, "the replica")
    msgs = generate(cluster, "Hello", temperature=0, max_tokens=5, ignore_eos=True)
    assert msgs[-1].done and msgs[-1].model.step == 7 and msgs[-1].usage.completion_tokens == 5
    # gpt2ctl against the same cluster: deploy list/get and a streamed generate.
    listed = cluster.ctl("deploy", "list", "-o", "json")
    assert listed.returncode == 0 and '"default"' in listed.stdout, listed.stderr
    assert cluster.ctl("deploy", "get", "nope").returncode == 6
    gen = cluster.ctl("generate", "Hello", "--max-tokens", "4", "--temperature", "0", "--ignore-eos")
    assert gen.returncode == 0, gen.stderr
    assert "finish: length" in gen.stderr and "4 tokens" in gen.stderr and "step_00000007" in gen.stderr
    bad = cluster.ctl("generate", "Hello", "--max-tokens", "500")
    assert bad.returncode == 2 and "sampling.max_tokens" in bad.stderr
    page = cl.http_get(cluster.http_port, "/metrics")[1]  # gpt2d measures what it relays
    assert 'gpt2_generate_requests_total{api="grpc",code="OK"} 2' in page
    assert 'gpt2_generate_requests_total{api="grpc",code="INVALID_ARGUMENT"} 1' in page
    assert "gpt2_generate_time_to_first_token_seconds_count 2" in page
    assert 'gpt2_generate_tokens_total{kind="completion"} 9' in page
    check = subprocess.run(["promtool", "check", "metrics"], input=page, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # Without --max-tokens gpt2ctl leaves the number to the server, whose one default is 16.
    default = cluster.ctl("generate", "Hello", "--temperature", "0", "--ignore-eos")
    assert default.returncode == 0 and "| 16 tokens |" in default.stderr, default.stderr
    with pytest.raises(grpc.RpcError) as e:
        generate(cluster, "Hello", max_tokens=500)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "sampling.max_tokens" in e.value.details()

    # A client that goes away frees the replica's slot.
    from gpt2d.v1 import generate_pb2, generate_pb2_grpc
    call = generate_pb2_grpc.GenerateServiceStub(cluster.channel()).Generate(
        generate_pb2.GenerateRequest(prompt="x", sampling=generate_pb2.SamplingParams(max_tokens=60, ignore_eos=True)),
        timeout=60)
    next(call)
    call.cancel()
    http = cluster.worker_http["w0"]

    def batch():
        for line in cl.http_get(http, "/metrics")[1].splitlines():
            if line.startswith("gpt2_serve_batch_size "):
                return float(line.split()[1])
    cl.wait_for(lambda: batch() == 0, 10, "the slot to be freed")

    deployments(cluster).DeleteDeployment(cluster_pb2.DeleteDeploymentRequest(name="default"), timeout=10)
    cl.wait_for(lambda: cluster.worker_state("w0") == "IDLE", 10, "the worker to be released")
    assert list(deployments(cluster).ListDeployments(cluster_pb2.ListDeploymentsRequest(), timeout=5).deployments) == []
