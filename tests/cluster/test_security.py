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


def test_replica_ports_take_tls_and_gpt2d_relays_over_it(tmp_path):
    """A worker's serving port with --serve-tls-cert takes TLS only; gpt2d, given the CA
    (--replica-tls-ca), verifies the replica and relays to it."""
    from gpt2d.v1 import cluster_pb2, cluster_pb2_grpc, generate_pb2, generate_pb2_grpc
    key, cert = make_cert(tmp_path)
    model = tmp_path / "step_00000001"
    subprocess.run([str(cl.WORKER), "init", "--config", "gpt2", "--n-layer", "1", "--n-head", "2", "--n-embd", "32",
                    "--n-positions", "64", "--seed", "1", "--out", str(model)], check=True, capture_output=True)
    c = cl.Cluster(tmp_path / "c", gpt2d_args=["--replica-tls-ca", cert])
    try:
        c.start_gpt2d()
        c.start_worker("w0", extra=["--serve-tls-cert", cert, "--serve-tls-key", key])
        deployments = cluster_pb2_grpc.DeploymentServiceStub(c.channel())
        deployments.CreateDeployment(cluster_pb2.CreateDeploymentRequest(
            deployment=cluster_pb2.Deployment(name="default", checkpoint=str(model))), timeout=10)
        cl.wait_for(lambda: deployments.GetDeployment(cluster_pb2.GetDeploymentRequest(name="default"),
                                                      timeout=10).ready_replicas == 1, 120, "a ready replica")
        address = c.cluster().GetWorker(cluster_pb2.GetWorkerRequest(id="w0"), timeout=5).serve_address
        req = generate_pb2.GenerateRequest(prompt="Hello", sampling=generate_pb2.SamplingParams(
            max_tokens=3, temperature=0, ignore_eos=True))
        with pytest.raises(grpc.RpcError) as e:
            generate_pb2_grpc.GenerateServiceStub(grpc.insecure_channel(address)).Complete(req, timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        secure = grpc.secure_channel(address, grpc.ssl_channel_credentials(cert.read_bytes()))
        direct = generate_pb2_grpc.GenerateServiceStub(secure).Complete(req, timeout=30)
        relayed = generate_pb2_grpc.GenerateServiceStub(c.channel()).Complete(req, timeout=30)
        assert list(direct.choices[0].token_ids) == list(relayed.choices[0].token_ids)
        assert len(relayed.choices[0].token_ids) == 3
    finally:
        c.stop()

    # A CA file gpt2d cannot read: refused at start, naming the flag.
    p = subprocess.run([str(cl.GPT2D), "--db", str(tmp_path / "bad.db"), "--listen", "127.0.0.1:0",
                        "--replica-tls-ca", str(tmp_path / "missing.crt")], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "--replica-tls" in p.stderr and "missing.crt" in p.stderr, p.stderr


def every_method(service_names=None):
    """(service full name, method descriptor, request class) for every RPC in proto/gpt2d/v1, read
    from the compiled descriptors, so that a new method is covered without editing this test."""
    import importlib
    from google.protobuf import message_factory
    out = []
    for proto in sorted((cl.ROOT / "proto" / "gpt2d" / "v1").glob("*.proto")):
        module = importlib.import_module(f"gpt2d.v1.{proto.stem}_pb2")
        for service in module.DESCRIPTOR.services_by_name.values():
            if service_names is None or service.name in service_names:
                for m in service.methods:
                    out.append((service.full_name, m, message_factory.GetMessageClass(m.input_type)))
    return out


def call_method(channel, service, method, request_class, metadata):
    """Calls `method` with an empty request; returns its status code (OK when it succeeded)."""
    path = f"/{service}/{method.name}"
    ser, de = request_class.SerializeToString, (lambda b: b)
    try:
        if method.client_streaming:  # WorkerService.Connect: one empty message, then read
            responses = channel.stream_stream(path, ser, de)(iter([request_class()]), metadata=metadata, timeout=5)
            next(iter(responses), None)
        elif method.server_streaming:
            list(channel.unary_stream(path, ser, de)(request_class(), metadata=metadata, timeout=5))
        else:
            channel.unary_unary(path, ser, de)(request_class(), metadata=metadata, timeout=5)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


WRONG = ([], [("authorization", "Bearer wrong")], [("authorization", "Bearer " + TOKEN + "x")])


def test_every_method_of_every_process_refuses_a_missing_or_wrong_token(tmp_path):
    """gpt2d (every service), a worker's replica port, and `gpt2-worker serve --auth-token-file`
    (gRPC and its OpenAI API): no token or a wrong one is UNAUTHENTICATED / 401 on every method,
    health and metrics excepted (docs/reliability.md says what those expose)."""
    model = tmp_path / "step_00000001"
    subprocess.run([str(cl.WORKER), "init", "--config", "gpt2", "--n-layer", "1", "--n-head", "2", "--n-embd", "32",
                    "--n-positions", "64", "--seed", "1", "--out", str(model)], check=True, capture_output=True)
    c = cl.Cluster(tmp_path / "c", token=TOKEN)
    serve = None
    try:
        c.start_gpt2d()
        c.start_worker("w0")
        from gpt2d.v1 import cluster_pb2, cluster_pb2_grpc, generate_pb2, generate_pb2_grpc
        deployments = cluster_pb2_grpc.DeploymentServiceStub(c.channel())
        deployments.CreateDeployment(cluster_pb2.CreateDeploymentRequest(
            deployment=cluster_pb2.Deployment(name="default", checkpoint=str(model))), metadata=c.metadata(), timeout=10)
        cl.wait_for(lambda: deployments.GetDeployment(cluster_pb2.GetDeploymentRequest(name="default"),
                                                      metadata=c.metadata(), timeout=10).ready_replicas == 1,
                    120, "a ready replica")
        methods = every_method()
        assert len(methods) >= 15 and any(m.name == "Connect" for _, m, _ in methods)
        for service, method, request in methods:
            for md in WRONG:
                assert call_method(c.channel(), service, method, request, md) == grpc.StatusCode.UNAUTHENTICATED, \
                    (service, method.name, md)

        # The replica's own port takes the cluster token (gpt2d's relay presents it: Generate works).
        worker = c.cluster().GetWorker(cluster_pb2.GetWorkerRequest(id="w0"), metadata=c.metadata(), timeout=5)
        assert worker.serve_address
        replica = grpc.insecure_channel(worker.serve_address)
        generate_methods = every_method({"GenerateService"})
        for service, method, request in generate_methods:
            for md in WRONG:
                assert call_method(replica, service, method, request, md) == grpc.StatusCode.UNAUTHENTICATED, \
                    (method.name, md)
        req = generate_pb2.GenerateRequest(prompt="Hello", sampling=generate_pb2.SamplingParams(max_tokens=2, temperature=0, ignore_eos=True))
        direct = generate_pb2_grpc.GenerateServiceStub(replica).Complete(req, metadata=c.metadata(), timeout=30)
        relayed = generate_pb2_grpc.GenerateServiceStub(c.channel()).Complete(req, metadata=c.metadata(), timeout=30)
        assert list(direct.choices[0].token_ids) == list(relayed.choices[0].token_ids) and len(relayed.choices[0].token_ids) == 2

        # HTTP: the OpenAI API needs the token on every endpoint but /health; /metrics is open.
        def http(port, method, path, body=None, token=None):
            import http.client
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            headers = {"Content-Type": "application/json"}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            r.read()
            return r.status

        endpoints = [("GET", "/v1/models", None), ("GET", "/v1/models/default", None),
                     ("POST", "/v1/completions", '{"prompt": "a", "max_tokens": 1}'),
                     ("POST", "/tokenize", '{"prompt": "a"}'), ("POST", "/detokenize", '{"tokens": [64]}'),
                     ("GET", "/tokenizer_info", None)]

        def check_http(port):
            for method, path, body in endpoints:
                for token in (None, "wrong"):
                    assert http(port, method, path, body, token) == 401, (port, path, token)
                assert http(port, method, path, body, TOKEN) in (200, 404), (port, path)  # 404: a model id it lacks
            assert http(port, "GET", "/health") == 200

        check_http(c.openai_port)
        assert cl.http_get(c.http_port, "/metrics")[0] == 200

        # `gpt2-worker serve` on its own, with --auth-token-file: gRPC and its OpenAI API alike.
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        port, openai_port, http_port = cl.free_port(), cl.free_port(), cl.free_port()
        serve = cl.Proc("serve", [cl.WORKER, "serve", "--model", model, "--listen", f"127.0.0.1:{port}",
                                  "--openai-listen", f"127.0.0.1:{openai_port}", "--http-listen",
                                  f"127.0.0.1:{http_port}", "--auth-token-file", token_file], tmp_path).start()
        cl.wait_for(lambda: not serve.alive() or c._http_ok(http_port), 60, "gpt2-worker serve")
        assert serve.alive(), serve.output()
        alone = grpc.insecure_channel(f"127.0.0.1:{port}")
        for service, method, request in generate_methods:
            for md in WRONG:
                assert call_method(alone, service, method, request, md) == grpc.StatusCode.UNAUTHENTICATED
        assert generate_pb2_grpc.GenerateServiceStub(alone).Complete(req, metadata=c.metadata(), timeout=30).choices
        check_http(openai_port)
    finally:
        if serve:
            serve.stop()
        c.stop()
