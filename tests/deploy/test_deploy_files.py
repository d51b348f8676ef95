"""The deployment files, checked as the tools that read them would: docker-compose, promtool,
Grafana's provisioning layout, the Kubernetes API schemas (kubernetes-validate)."""
import json
import pathlib
import subprocess

import pytest
import yaml

import deploylib as dl

DEPLOY = dl.DEPLOY
K8S_MANIFESTS = ["namespace.yaml", "storage.yaml", "gpt2d.yaml", "workers.yaml", "prometheus.yaml", "dashboards.yaml"]


def compose_config(tmp_path, profiles):
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    for name in ("gpt2d_token", "grafana_admin_password"):
        (secrets / name).write_text("x\n")
    env = dict(dl.os.environ, COMPOSE_PROFILES=profiles, GPT2D_SECRETS_DIR=str(secrets))
    out = dl.run(["docker-compose", "-f", dl.COMPOSE_FILE, "config"], env=env).stdout
    return yaml.safe_load(out)


def test_the_gpu_node_has_eight_workers_each_reserving_one_distinct_gpu(tmp_path):
    config = compose_config(tmp_path, "gpu")
    gpu_workers = {n: s for n, s in config["services"].items() if "gpu" in s.get("profiles", [])}
    assert sorted(gpu_workers) == [f"worker-{i}" for i in range(8)]
    reserved = []
    for name, s in gpu_workers.items():
        devices = s["deploy"]["resources"]["reservations"]["devices"]
        assert len(devices) == 1, name
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"], name
        assert "count" not in devices[0], name
        assert len(devices[0]["device_ids"]) == 1, name
        reserved.append(devices[0]["device_ids"][0])
        cmd = s["command"]
        assert cmd[cmd.index("--device") + 1] == "cuda:0", name  # its one GPU, as the container sees it
        assert s["ipc"] == "host", name  # NCCL's shared memory
        assert s["restart"] == "unless-stopped" and s["healthcheck"]["test"][-1] == "9401", name
        assert s["hostname"] == name
        assert "checkpoints:/var/lib/gpt2d/checkpoints" in " ".join(map(str, s["volumes"])), name
    assert sorted(reserved) == [str(i) for i in range(8)]
    gpt2d = config["services"]["gpt2d"]
    assert any("checkpoints:/var/lib/gpt2d/checkpoints" in str(v) for v in gpt2d["volumes"])
    assert "--auth-token-file" in gpt2d["command"]


def test_the_cpu_variant_reserves_no_device(tmp_path):
    config = compose_config(tmp_path, "cpu")
    cpu = {n: s for n, s in config["services"].items() if "cpu" in s.get("profiles", [])}
    assert sorted(cpu) == dl.CPU_WORKERS
    for name, s in cpu.items():
        assert "deploy" not in s, name
        assert s["command"][s["command"].index("--device") + 1] == "cpu"


def test_the_token_comes_from_a_file_the_operator_creates(tmp_path):
    config = compose_config(tmp_path, "gpu")
    assert config["secrets"]["gpt2d_token"]["file"] == str(tmp_path / "secrets" / "gpt2d_token")
    for name in ["gpt2d", *(f"worker-{i}" for i in range(8))]:
        s = config["services"][name]
        assert [x["source"] for x in s["secrets"]] == ["gpt2d_token"], name
        assert "/run/secrets/gpt2d_token" in s["command"], name
        assert "--token" not in s["command"] and "GPT2D_CLUSTER_TOKEN" not in s.get("environment", {}), name
    tracked = subprocess.run(["git", "ls-files", "deploy/secrets"], cwd=dl.ROOT, capture_output=True, text=True)
    assert tracked.stdout == "", "a secret is committed"


def test_prometheus_config_and_alert_rules_pass_promtool():
    dl.run(["promtool", "check", "config", DEPLOY / "prometheus" / "prometheus.yml"])
    out = dl.run(["promtool", "check", "rules", DEPLOY / "prometheus" / "alerts.yml"]).stdout
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {"GPT2JobStoppedStepping", "GPT2WorkerDown", "GPT2TimeToFirstTokenHigh", "GPT2KVCacheFull",
            "GPT2CheckpointLoadFailed"} <= names
    assert f"SUCCESS: {len(names)} rules found" in out


def test_promtool_refuses_a_broken_rule(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: rate(gpt2_jobs[5m]\n")
    assert dl.run(["promtool", "check", "rules", bad], check=False).returncode != 0


def test_generated_files_are_up_to_date():
    p = dl.run([dl.sys.executable, DEPLOY / "render.py", "--check"], check=False)
    assert p.returncode == 0, p.stdout


def test_grafana_provisioning_matches_the_layout_grafana_reads():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"] if v.startswith("./"))
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboards_in_container = mounts["./grafana/dashboards"]

    prov = DEPLOY / "grafana" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "prometheus.yaml").read_text())
    assert ds["apiVersion"] == 1
    [source] = ds["datasources"]
    assert source["type"] == "prometheus" and source["access"] == "proxy" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]

    providers = yaml.safe_load((prov / "dashboards" / "gpt2d.yaml").read_text())
    assert providers["apiVersion"] == 1
    [provider] = providers["providers"]
    assert provider["type"] == "file" and provider["folder"] == "gpt2d"
    assert provider["options"]["path"] == dashboards_in_container

    uids = set()
    files = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
    assert [f.stem for f in files] == ["cluster", "serving", "training"]
    for f in files:
        d = json.loads(f.read_text())
        assert d["uid"] not in uids and len(d["uid"]) <= 40
        uids.add(d["uid"])
        variables = {v["name"]: v for v in d["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids))
        for p in d["panels"]:
            assert p["datasource"]["uid"] == "${datasource}", (f.name, p["title"])
            assert p["targets"] and all(t["expr"] for t in p["targets"]), (f.name, p["title"])
            g = p["gridPos"]
            assert g["x"] + g["w"] <= 24, (f.name, p["title"])
    home = compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert pathlib.Path(home).parent == pathlib.Path(dashboards_in_container)
    assert (DEPLOY / "grafana" / "dashboards" / pathlib.Path(home).name).exists()


def test_training_and_serving_dashboards_have_their_variable():
    for name, var in (("training", "job"), ("serving", "deployment")):
        d = json.loads((DEPLOY / "grafana" / "dashboards" / f"{name}.json").read_text())
        assert var in {v["name"] for v in d["templating"]["list"]}
        assert all(f"${var}" in t["expr"] for p in d["panels"] for t in p["targets"]
                   if "through gpt2d" not in p["title"] and "Jobs failed" not in p["title"]), name


def kubernetes_validate(*paths):
    return dl.run([pathlib.Path(dl.sys.executable).parent / "kubernetes-validate", "--strict", "--quiet", *paths],
                  check=False)


def test_kubernetes_manifests_pass_the_api_schemas():
    p = kubernetes_validate(*(DEPLOY / "k8s" / m for m in K8S_MANIFESTS))
    assert p.returncode == 0, p.stdout + p.stderr
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(K8S_MANIFESTS)
    docs = [d for m in K8S_MANIFESTS for d in yaml.safe_load_all((DEPLOY / "k8s" / m).read_text()) if d]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("Deployment", "gpt2d"), ("Service", "gpt2d"), ("StatefulSet", "gpt2-worker"),
            ("Service", "gpt2-workers")} <= kinds
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    c = sts["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    vols = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert vols["dshm"]["emptyDir"]["medium"] == "Memory"
    assert vols["token"]["secret"]["secretName"] == "gpt2d-token"
    pvc = next(d for d in docs if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == "gpt2d-checkpoints")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert sum(d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("gpt2d-dashboard-") for d in docs) == 3


def test_kubernetes_validate_refuses_a_broken_manifest(tmp_path):
    sts = (DEPLOY / "k8s" / "workers.yaml").read_text().replace("serviceName: gpt2-workers", "serviceNam: gpt2-workers")
    bad = tmp_path / "workers.yaml"
    bad.write_text(sts)
    assert kubernetes_validate(bad).returncode != 0
