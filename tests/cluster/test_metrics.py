"""A real Prometheus server scrapes gpt2d and both workers; promtool checks every /metrics page."""
import json
import pathlib
import subprocess
import time
import urllib.parse
import urllib.request

import clusterlib as cl


def promtool_check(text):
    p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def query(port, q):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_scrapes_training_and_cluster_metrics(cluster, shards, tmp_path):
    cluster.start_gpt2d()
    cluster.start_worker("w0")
    cluster.start_worker("w1")
    targets = [f"127.0.0.1:{cluster.http_port}"] + [f"127.0.0.1:{p}" for p in cluster.worker_http.values()]
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        # Our series carry a "job" label (the training job): honor_labels keeps it from being renamed
        # to exported_job by the scrape job's own label.
        "scrape_configs": [{"job_name": "gpt2d", "honor_labels": True, "static_configs": [{"targets": targets}]}],
    }))
    prom_port = cl.free_port()
    prom = cl.Proc("prometheus", ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                  f"--web.listen-address=127.0.0.1:{prom_port}"], tmp_path).start()
    try:
        cl.wait_for(lambda: _ready(prom_port), 60, "prometheus to start")
        job = cluster.submit(cl.small_spec(shards, steps=40, checkpoint_every=20, accum=2))
        cl.wait_for(lambda: cluster.get(job.id).step >= 15, 120, "step 15")

        # While it trains: every page passes promtool, and carries what it should.
        pages = {t: cl.http_get(int(t.split(":")[1]), "/metrics")[1] for t in targets}
        for page in pages.values():
            promtool_check(page)
        assert f'gpt2_job_loss{{job="{job.id}"}}' in pages[targets[0]]
        assert 'gpt2_workers{state="TRAINING"} 2' in pages[targets[0]]
        assert f'gpt2_train_loss{{job="{job.id}",rank="0"}}' in pages[targets[1]] + pages[targets[2]]

        def loss_series():
            r = query(prom_port, f'gpt2_train_loss{{job="{job.id}"}}[1m]')
            return r if len(r) == 2 and all(len(s["values"]) >= 3 for s in r) else None
        series = cl.wait_for(loss_series, 60, "Prometheus to hold the loss series of both ranks", interval=1)
        for s in series:
            values = [float(v) for _, v in s["values"]]
            assert all(0 < v < 12 for v in values)
        assert {s["metric"]["rank"] for s in series} == {"0", "1"}
        cluster.events(job.id)
        assert cluster.state(job.id) == "SUCCEEDED"
        cl.wait_for(lambda: query(prom_port, 'gpt2_jobs{state="SUCCEEDED"} == 1'), 30, "the job count", interval=1)
        rpc = query(prom_port, 'gpt2_grpc_requests_total{method="SubmitJob",code="OK"}')
        assert rpc and float(rpc[0]["value"][1]) >= 1
        status, health = cl.http_get(cluster.http_port, "/healthz")
        assert status == 200 and health.strip() == "ok"
    finally:
        prom.stop()


def _ready(port):
    try:
        return cl.http_get(port, "/-/ready")[0] == 200
    except OSError:
        return False
