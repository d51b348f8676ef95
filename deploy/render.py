#!/usr/bin/env python3
"""Writes the deployment files that repeat another one, so that each fact is written once:
  - our Grafana dashboards (deploy/grafana/dashboards/*.json), from the panel lists below;
  - their Kubernetes ConfigMaps (deploy/k8s/dashboards.yaml);
  - Prometheus's configuration for Kubernetes (deploy/k8s/prometheus.yaml): the alert rules of
    deploy/prometheus/alerts.yml as they are, and a scrape configuration that finds the pods.

    python3 deploy/render.py            # rewrite the files
    python3 deploy/render.py --check    # exit 1 if a file differs from what it would write

Every query is built on the series we export (docs/control-plane.md, docs/serving.md, docs/deploy.md)
and is evaluated against a real Prometheus scraping the compose stack by tests/deploy.
"""
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
GRAFANA = HERE / "grafana" / "dashboards"
K8S = HERE / "k8s"
DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"

# Serving series of a replica carry no deployment label: gpt2_serve_deployment_info{deployment} = 1
# on the replica says which one it serves, and the join below filters by it.
ON_DEPLOYMENT = ' * on(instance) group_left() gpt2_serve_deployment_info{deployment=~"$deployment"}'
BY_DEPLOYMENT = ' * on(instance) group_left(deployment) gpt2_serve_deployment_info{deployment=~"$deployment"}'


def quantiles(metric, where="", join=ON_DEPLOYMENT):
    """p50/p90/p99 of a histogram from its buckets' rates."""
    return [(f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{where}[{RATE}]){join}))", f"p{round(q * 100)}")
            for q in (0.5, 0.9, 0.99)]


def panel(title, targets, unit="short", kind="timeseries", description=""):
    if isinstance(targets, str):
        targets = [(targets, "")]
    return {"title": title, "kind": kind, "unit": unit, "targets": targets, "description": description}


JOB = '{job=~"$job"}'
TRAINING = {
    "uid": "gpt2d-training",
    "title": "gpt2d / Training",
    "variables": [("job", "label_values(gpt2_job_step, job)")],
    "panels": [
        panel("Step", [(f"gpt2_job_step{JOB}", "{{job}}")], kind="stat",
              description="Optimizer steps done (rank 0's latest report)."),
        panel("Progress", [(f"gpt2_job_step{JOB} / gpt2_job_max_steps{JOB}", "{{job}}")], unit="percentunit",
              kind="bargauge", description="Steps done over the job's max_steps."),
        panel("ETA", [(f"(gpt2_job_max_steps{JOB} - gpt2_job_step{JOB}) / deriv(gpt2_job_step{JOB}[5m])", "{{job}}")],
              unit="s", kind="stat", description="Steps left at the step rate of the last 5 minutes."),
        panel("Restarts", [(f"gpt2_job_restarts{JOB}", "{{job}}")], kind="stat",
              description="Group restarts from the last checkpoint after a lost rank."),
        panel("Training loss", [(f"gpt2_job_loss{JOB}", "{{job}}")], description="nats/token, mean over ranks."),
        panel("Validation loss", [(f"gpt2_job_val_loss{JOB}", "{{job}}")], description="nats/token."),
        panel("HellaSwag accuracy (acc_norm)", [(f"gpt2_job_hellaswag_accuracy{JOB}", "{{job}}")], unit="percentunit"),
        panel("MFU", [(f"gpt2_job_mfu_ratio{JOB}", "{{job}}")], unit="percentunit",
              description="Model FLOPs utilisation against the spec's peak_flops."),
        panel("Tokens/s, job", [(f"gpt2_job_tokens_per_second{JOB}", "{{job}}")]),
        panel("Tokens/s, per rank",
              [(f"gpt2_train_tokens_per_second{JOB} / on(job) group_left() "
                f"count by (job) (gpt2_train_tokens_per_second{JOB})", "{{job}} rank {{rank}}")],
              description="Each rank's share of the job's throughput, from the ranks' own reports."),
        panel("Learning rate", [(f"gpt2_job_learning_rate{JOB}", "{{job}}")]),
        panel("Gradient norm (before clipping)", [(f"gpt2_job_grad_norm{JOB}", "{{job}}")]),
        panel("Jobs failed and restarting", [('gpt2_jobs{state=~"FAILED|RESTARTING"}', "{{state}}")]),
    ],
}

SERVING = {
    "uid": "gpt2d-serving",
    "title": "gpt2d / Serving",
    "variables": [("deployment", "label_values(gpt2_serve_deployment_info, deployment)")],
    "panels": [
        panel("Requests/s by code (replicas)",
              [(f"sum by (code) (rate(gpt2_generate_requests_total[{RATE}]){ON_DEPLOYMENT})", "{{code}}")], unit="reqps"),
        panel("Requests/s by API and code (through gpt2d, all deployments)",
              [(f'sum by (api, code) (rate(gpt2_generate_requests_total{{job="gpt2d"}}[{RATE}]))', "{{api}} {{code}}")],
              unit="reqps"),
        panel("Time to first token", quantiles("gpt2_generate_time_to_first_token_seconds"), unit="s",
              description="Arrival to the first token: queue + prefill."),
        panel("Inter-token latency", quantiles("gpt2_generate_inter_token_latency_seconds"), unit="s",
              description="Between consecutive tokens of a request (decode steps)."),
        panel("Request duration", quantiles("gpt2_generate_request_duration_seconds"), unit="s"),
        panel("Time to first token through gpt2d",
              quantiles("gpt2_generate_time_to_first_token_seconds", '{job="gpt2d"}', join=""), unit="s",
              description="As clients of gpt2d see it: routing and relay included."),
        panel("Tokens/s",
              [(f"sum by (kind) (rate(gpt2_generate_tokens_total[{RATE}]){ON_DEPLOYMENT})", "{{kind}}")]),
        panel("Batch size", [(f"gpt2_serve_batch_size{BY_DEPLOYMENT}", "{{deployment}} {{instance}}")],
              description="Requests in each replica's running batch."),
        panel("Queue depth", [(f"gpt2_serve_queue_depth{BY_DEPLOYMENT}", "{{deployment}} {{instance}}")],
              description="Requests waiting for a KV-cache slot."),
        panel("KV cache usage", [(f"gpt2_serve_kv_cache_usage_ratio{BY_DEPLOYMENT}", "{{deployment}} {{instance}}")],
              unit="percentunit"),
        panel("Prefix cache (prompt tokens/s)",
              [(f"sum by (result) (rate(gpt2_serve_prefix_cache_tokens_total[{RATE}]){ON_DEPLOYMENT})", "{{result}}")],
              description="hit: KV rows reused from a cached prompt prefix; miss: prompt tokens computed."),
        panel("Checkpoint step served",
              [(f"gpt2_serve_checkpoint_step{BY_DEPLOYMENT}", "{{deployment}} {{instance}}")],
              description="The training step of the weights each replica serves (hot-load moves it)."),
        panel("Engine faults",
              [(f"sum by (step) (increase(gpt2_serve_engine_faults_total[{RATE}]){ON_DEPLOYMENT})", "{{step}}")],
              description="Engine steps that failed; their requests ended with INTERNAL, the replica served on."),
        panel("Checkpoint loads by result",
              [(f"sum by (result) (increase(gpt2_serve_checkpoint_loads_total[{RATE}]){ON_DEPLOYMENT})", "{{result}}")],
              description="error: the checkpoint was refused and the old weights kept serving."),
    ],
}

CLUSTER = {
    "uid": "gpt2d-cluster",
    "title": "gpt2d / Cluster",
    "variables": [],
    "panels": [
        panel("Jobs by state", [("gpt2_jobs", "{{state}}")]),
        panel("Workers by state", [("gpt2_workers", "{{state}}")]),
        panel("Scrape targets up", [("up", "{{job}} {{instance}}")],
              description="1 when Prometheus reached the process's /metrics."),
        panel("Workers connected to gpt2d", [('gpt2_worker_connected', "{{instance}}")]),
        panel("gRPC requests/s by method",
              [(f"sum by (method) (rate(gpt2_grpc_requests_total[{RATE}]))", "{{method}}")], unit="reqps"),
        panel("gRPC requests/s by code",
              [(f"sum by (code) (rate(gpt2_grpc_requests_total[{RATE}]))", "{{code}}")], unit="reqps"),
        panel("gRPC latency p99 by method",
              [(f"histogram_quantile(0.99, sum by (le, method) (rate(gpt2_grpc_request_duration_seconds_bucket[{RATE}])))",
                "{{method}}")], unit="s"),
        panel("gRPC latency p50 by method",
              [(f"histogram_quantile(0.5, sum by (le, method) (rate(gpt2_grpc_request_duration_seconds_bucket[{RATE}])))",
                "{{method}}")], unit="s"),
    ],
}

DASHBOARDS = {"training": TRAINING, "serving": SERVING, "cluster": CLUSTER}


def variable(name, query):
    return {
        "name": name, "label": name, "type": "query", "datasource": DS, "definition": query,
        "query": {"query": query, "refId": f"{name}-values"}, "refresh": 2, "includeAll": True, "multi": True,
        "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "sort": 1,
    }


def render(d):
    panels, x, y = [], 0, 0
    for i, p in enumerate(d["panels"]):
        w, h = (6, 5) if p["kind"] in ("stat", "bargauge") else (12, 8)
        if x + w > 24:
            x, y = 0, y + prev_h
        prev_h = h
        panels.append({
            "id": i + 1, "type": p["kind"], "title": p["title"], "description": p["description"], "datasource": DS,
            "gridPos": {"h": h, "w": w, "x": x, "y": y},
            "fieldConfig": {"defaults": {"unit": p["unit"]}, "overrides": []},
            "options": ({"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                         "tooltip": {"mode": "multi", "sort": "desc"}} if p["kind"] == "timeseries" else
                        {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}),
            "targets": [{"refId": chr(ord("A") + j), "datasource": DS, "expr": expr, "legendFormat": legend or "__auto",
                         "range": True} for j, (expr, legend) in enumerate(p["targets"])],
        })
        x += w
    templating = [{"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
                   "current": {}, "hide": 0}]
    templating += [variable(n, q) for n, q in d["variables"]]
    return {
        "uid": d["uid"], "title": d["title"], "tags": ["gpt2d"], "editable": True, "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"}, "refresh": "10s", "timezone": "",
        "templating": {"list": templating}, "annotations": {"list": []}, "panels": panels,
        "links": [{"title": "gpt2d", "type": "dashboards", "tags": ["gpt2d"], "asDropdown": True}],
    }


def files():
    out = {}
    for name, d in DASHBOARDS.items():
        out[GRAFANA / f"{name}.json"] = json.dumps(render(d), indent=2) + "\n"
    # One ConfigMap per dashboard, labelled for the Grafana sidecar of kube-prometheus-stack.
    docs = ["# Written by deploy/render.py from the same panels as deploy/grafana/dashboards/: do not edit.\n"]
    for name, d in DASHBOARDS.items():
        body = json.dumps(render(d), indent=2)
        indented = "\n".join("    " + line for line in body.splitlines())
        docs.append(f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: gpt2d-dashboard-{name}\n  namespace: gpt2d\n"
                    f"  labels:\n    grafana_dashboard: \"1\"\n    app.kubernetes.io/part-of: gpt2d\n"
                    f"  annotations:\n    grafana_folder: gpt2d\ndata:\n  {name}.json: |\n{indented}\n")
    out[K8S / "dashboards.yaml"] = "---\n".join(docs)
    out[K8S / "prometheus.yaml"] = prometheus_configmap()
    return out


# Kubernetes: pods found through the API (Prometheus needs RBAC to list pods in the namespace),
# kept by their app label and the container port named http; the scrape job names are the ones the
# dashboards and alert rules use.
K8S_SCRAPE = """global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files:
  - /etc/prometheus/alerts.yml
scrape_configs:
"""
for job_name in ("gpt2d", "gpt2-worker"):
    K8S_SCRAPE += f"""  - job_name: {job_name}
    honor_labels: true
    kubernetes_sd_configs:
      - role: pod
        namespaces: {{names: [gpt2d]}}
    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_name]
        regex: {job_name}
        action: keep
      - source_labels: [__meta_kubernetes_pod_container_port_name]
        regex: http
        action: keep
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: pod
"""


def prometheus_configmap():
    def block(text):
        return "\n".join("    " + line if line else "" for line in text.rstrip("\n").splitlines())
    alerts = (HERE / "prometheus" / "alerts.yml").read_text()
    return ("# Written by deploy/render.py (alert rules from deploy/prometheus/alerts.yml): do not edit.\n"
            "# Mount at /etc/prometheus in the Prometheus that scrapes the gpt2d namespace.\n"
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: gpt2d-prometheus\n  namespace: gpt2d\n"
            "  labels: {app.kubernetes.io/part-of: gpt2d}\ndata:\n"
            f"  prometheus.yml: |\n{block(K8S_SCRAPE)}\n  alerts.yml: |\n{block(alerts)}\n")


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for path, text in files().items():
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("out of date (run python3 deploy/render.py):", *map(str, stale), sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
