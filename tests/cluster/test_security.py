"""Bearer tokens, TLS, and the standard health and reflection services."""
import subprocess

import grpc
import pytest

import clusterlib as cl

TOKEN = "s3cret-token"


def test_token_is_required_on_every_rpc_but_health(tmp_path, shards):
    c = cl.Cluster(tmp_path / "c", token=TOKEN)
    try:
        c.start_gpt2d()
        from gpt2d.v1 import jobs_pb2, cluster_pb2
        jobs, clus = c.jobs(), c.cluster()
        calls = [lambda md: jobs.ListJobs(jobs_pb2.ListJobsRequest(), metadata=md, timeout=5),
                 lambda md: clus.ListWorkers(cluster_pb2.ListWorkersRequest(), metadata=md, timeout=5),
                 lambda md: list(jobs.WatchJob(jobs_pb2.WatchJobRequest(id="job-000001"), metadata=md, timeout=5))]
        for call in calls:
            for md in ([], [("authorization", "Bearer wrong")], [("authorization", TOKEN)]):
                with pytest.raises(grpc.RpcError) as e:
                    call(md)
                assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, md
        # A refused submit writes nothing.
        with pytest.raises(grpc.RpcError) as e:
            jobs.SubmitJob(jobs_pb2.SubmitJobRequest(), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert list(jobs.ListJobs(jobs_pb2.ListJobsRequest(), metadata=c.metadata(), timeout=5).jobs) == []

        from grpc_health.v1 import health_pb2, health_pb2_grpc
        health = health_pb2_grpc.HealthStub(c.channel()).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING

        # gpt2ctl: no token -> exit 3 and advice; with the token (env) it works.
        out = subprocess.run([str(cl.GPT2CTL), "--server", c.address, "jobs", "list"], capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin"})
        assert out.returncode == 3 and "token" in out.stderr
        assert c.ctl("jobs", "list").returncode == 0

        # A worker with the wrong cluster token is refused and says why.
        bad = c.start_worker("intruder", token="nope", wait=False)
        assert bad.p.wait(30) == 1
        assert "token" in bad.output()
        good = c.start_worker("w0")
        job = c.submit(cl.small_spec(shards, steps=2, world=1, checkpoint_every=0))
        c.events(job.id)
        assert c.state(job.id) == "SUCCEEDED" and good.alive()
    finally:
        c.stop()


def test_reflection_lists_our_services(cluster):
    cluster.start_gpt2d()
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    stub = reflection_pb2_grpc.ServerReflectionStub(cluster.channel())
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"gpt2d.v1.JobService", "gpt2d.v1.ClusterService", "gpt2d.v1.WorkerService",
            "grpc.health.v1.Health"} <= names


def make_cert(d):
    key, cert = d / "server.key", d / "server.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    return key, cert


def test_tls_serves_clients_and_workers_and_refuses_plaintext(tmp_path, shards):
    key, cert = make_cert(tmp_path)
    c = cl.Cluster(tmp_path / "c", gpt2d_args=["--tls-cert", cert, "--tls-key", key])
    try:
        c.start_gpt2d()
        from gpt2d.v1 import jobs_pb2, jobs_pb2_grpc
        plain = jobs_pb2_grpc.JobServiceStub(grpc.insecure_channel(c.address))
        with pytest.raises(grpc.RpcError) as e:
            plain.ListJobs(jobs_pb2.ListJobsRequest(), timeout=3)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        secure = grpc.secure_channel(c.address, grpc.ssl_channel_credentials(cert.read_bytes()))
        assert list(jobs_pb2_grpc.JobServiceStub(secure).ListJobs(jobs_pb2.ListJobsRequest(), timeout=5).jobs) == []
        out = c.ctl("--tls-ca", cert, "jobs", "list", "-o", "json")
        assert out.returncode == 0, out.stderr

        # The worker reaches gpt2d over TLS too.
        c._channel = secure
        http = c.worker_http.setdefault("w0", cl.free_port())
        w = cl.Proc("w0", [cl.WORKER, "run", "--coordinator", c.address, "--device", "cpu", "--id", "w0",
                           "--advertise-host", "127.0.0.1", "--http-listen", f"127.0.0.1:{http}", "--tls-ca", cert],
                    c.root).start()
        c.workers["w0"] = w
        cl.wait_for(lambda: c.worker_state("w0") == "IDLE" or not w.alive(), 60, "the TLS worker to register")
        assert w.alive(), w.output()
    finally:
        c.stop()


def test_mutual_tls_requires_a_client_certificate_signed_by_the_ca(tmp_path):
    key, cert = make_cert(tmp_path)
    ca_key, ca_crt = tmp_path / "ca.key", tmp_path / "ca.crt"
    client_key, client_csr, client_crt = tmp_path / "client.key", tmp_path / "client.csr", tmp_path / "client.crt"
    for cmd in (["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca_crt, "-days", "2",
                 "-subj", "/CN=gpt2d-test-ca"],
                ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", client_key, "-out", client_csr, "-subj", "/CN=ops"],
                ["x509", "-req", "-in", client_csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-out",
                 client_crt, "-days", "2"]):
        subprocess.run(["openssl", *map(str, cmd)], check=True, capture_output=True)
    c = cl.Cluster(tmp_path / "c", gpt2d_args=["--tls-cert", cert, "--tls-key", key, "--tls-client-ca", ca_crt])
    try:
        c.start_gpt2d()
        from gpt2d.v1 import jobs_pb2, jobs_pb2_grpc
        anonymous = grpc.secure_channel(c.address, grpc.ssl_channel_credentials(cert.read_bytes()))
        with pytest.raises(grpc.RpcError) as e:
            jobs_pb2_grpc.JobServiceStub(anonymous).ListJobs(jobs_pb2.ListJobsRequest(), timeout=3)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        mutual = grpc.secure_channel(c.address, grpc.ssl_channel_credentials(
            cert.read_bytes(), private_key=client_key.read_bytes(), certificate_chain=client_crt.read_bytes()))
        assert list(jobs_pb2_grpc.JobServiceStub(mutual).ListJobs(jobs_pb2.ListJobsRequest(), timeout=5).jobs) == []
        assert c.ctl("--tls-ca", cert, "jobs", "list").returncode == 5
        out = c.ctl("--tls-ca", cert, "--tls-cert", client_crt, "--tls-key", client_key, "jobs", "list")
        assert out.returncode == 0, out.stderr
    finally:
        c.stop()
