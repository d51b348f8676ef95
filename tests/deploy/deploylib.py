"""The compose stack of deploy/ run for real: images built here, docker-compose, and a client on
the host. Everything stays on this machine: host loopback and the stack's own bridge network."""
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
sys.path.insert(0, str(ROOT / "tests" / "cluster"))
import clusterlib  # noqa: E402  (the grpcio client, specs and wait_for of the cluster tests)

# Debian's docker client has BuildKit built in (newer clients need the buildx plugin for it).
DOCKER = os.environ.get("DOCKER") or ("/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker")
IMAGE = "gpt2d:test"
PROMETHEUS_IMAGE = "gpt2d-test/prometheus:latest"
CPU_WORKERS = ["cpu-worker-0", "cpu-worker-1", "cpu-worker-2"]


def run(cmd, *, check=True, timeout=600, env=None, input=None):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env, input=input)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {p.returncode}:\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
    return p


def docker(*args, **kw):
    return run([DOCKER, *args], **kw)


def build_images():
    """gpt2d's image (the runtime stage over this checkout's build) and the test Prometheus image."""
    old = docker("image", "inspect", "-f", "{{.Id}}", IMAGE, check=False).stdout.strip()
    out = run(["bash", ROOT / "scripts" / "image.sh", IMAGE], env=dict(os.environ, DOCKER=DOCKER), timeout=1800)
    if old and docker("image", "inspect", "-f", "{{.Id}}", IMAGE).stdout.strip() != old:
        docker("rmi", old, check=False)  # the previous run's image, now untagged
    # BuildKit keeps each build context it was sent (3.5 GB of libraries from every checkout that
    # ran the tests): bound what it keeps, so that runs on one machine do not fill its disk.
    docker("builder", "prune", "-f", "--keep-storage", "8GB", check=False)
    base = run(["bash", ROOT / "scripts" / "docker-base.sh"], env=dict(os.environ, DOCKER=DOCKER)).stdout.strip()
    ctx = ROOT / "build" / "prometheus-image"
    ctx.mkdir(parents=True, exist_ok=True)
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not (ctx / "prometheus").exists() or (ctx / "prometheus").stat().st_mtime < os.stat(binary).st_mtime:
        shutil.copy2(binary, ctx / "prometheus")
    docker("build", "-q", "-f", ROOT / "tests" / "deploy" / "prometheus.Dockerfile", "--build-arg", f"BASE={base}",
           "-t", PROMETHEUS_IMAGE, ctx, env=dict(os.environ, DOCKER_BUILDKIT="1"))
    return out.stdout.strip()


def remove_stale_stacks():
    """Containers, volumes and networks of earlier test stacks that were never torn down (a run that
    was killed): their restart policies would bring them back with the daemon."""
    for kind in ("container", "volume", "network"):
        listed = docker(kind, "ls", *(["-a"] if kind == "container" else []), "--filter",
                        "label=com.docker.compose.project", "--format",
                        '{{.Label "com.docker.compose.project"}} {{.%s}}' % ("ID" if kind != "volume" else "Name"),
                        check=False).stdout.split("\n")
        stale = [line.split()[1] for line in listed if line.startswith("gpt2dtest")]
        if stale:
            docker(kind, "rm", *(["-f"] if kind != "network" else []), *stale, check=False)


class Stack:
    """One compose project of deploy/docker-compose.yml, CPU profile, with its own name, ports,
    secrets and data folder (several can run on one machine)."""

    def __init__(self, root, data_dir):
        self.root = pathlib.Path(root)
        self.name = f"gpt2dtest{os.getpid()}"
        self.token = os.urandom(16).hex()
        secrets = self.root / "secrets"
        secrets.mkdir(parents=True, exist_ok=True)
        (secrets / "gpt2d_token").write_text(self.token + "\n")
        (secrets / "grafana_admin_password").write_text(os.urandom(8).hex() + "\n")
        for f in secrets.iterdir():
            f.chmod(0o644)  # the containers' user must read them
        self.grpc_port, self.http_port, self.prom_port, self.openai_port = (clusterlib.free_port() for _ in range(4))
        self.env = dict(os.environ, COMPOSE_PROFILES="cpu", GPT2D_IMAGE=IMAGE, PROMETHEUS_IMAGE=PROMETHEUS_IMAGE,
                        GPT2D_BIND="127.0.0.1", GPT2D_GRPC_PORT=str(self.grpc_port),
                        GPT2D_HTTP_PORT=str(self.http_port), GPT2D_OPENAI_PORT=str(self.openai_port),
                        PROMETHEUS_PORT=str(self.prom_port),
                        GRAFANA_PORT=str(clusterlib.free_port()), GPT2D_SECRETS_DIR=str(secrets),
                        GPT2D_DATA_DIR=str(data_dir), GPT2D_CPU_THREADS="1")
        # The API from the host, through gpt2d's published port (the cluster tests' grpcio client).
        self.api = clusterlib.Cluster(self.root / "client", token=self.token)
        self.api.port, self.api.address = self.grpc_port, f"127.0.0.1:{self.grpc_port}"

    def compose(self, *args, check=True, timeout=600):
        return run(["docker-compose", "-f", COMPOSE_FILE, "-p", self.name, *args], check=check, timeout=timeout,
                   env=self.env)

    def up(self):
        """gpt2d, the three CPU workers and Prometheus (Grafana has no image here: docs/deploy.md)."""
        self.compose("up", "-d", "gpt2d", *CPU_WORKERS, "prometheus")
        clusterlib.wait_for(self.gpt2d_healthy, 60, "gpt2d's /healthz on the published port", interval=0.5)
        # IDLE, or SERVING a deployment that was there before a `down`.
        clusterlib.wait_for(lambda: all(self.api.worker_state(f"{w}/cpu") in ("IDLE", "SERVING") for w in CPU_WORKERS),
                            90, "three CPU workers to register", interval=0.5)

    def down(self, *, volumes=False):
        self.compose("down", "--remove-orphans", *(["-v"] if volumes else []), check=False, timeout=300)

    def gpt2d_healthy(self):
        try:
            return clusterlib.http_get(self.http_port, "/healthz")[0] == 200
        except OSError:
            return False

    def container(self, service):
        return f"{self.name}_{service}_1"

    def restart_count(self, service):
        return int(docker("inspect", "-f", "{{.RestartCount}}", self.container(service)).stdout.strip())

    def crash(self, service):
        """SIGKILL to the service's gpt2 process, from the host (the container's init is its parent)."""
        init = docker("inspect", "-f", "{{.State.Pid}}", self.container(service)).stdout.strip()
        [child] = run(["pgrep", "-P", init]).stdout.split()
        os.kill(int(child), 9)

    def running(self, service):
        return docker("inspect", "-f", "{{.State.Running}}", self.container(service), check=False).stdout.strip() == "true"

    def logs(self):
        return self.compose("logs", "--no-color", "--tail", "150", check=False).stdout

    def ctl(self, *args, check=True, timeout=600):
        return self.api.ctl(*args, check=check, timeout=timeout)

    # ---- Prometheus of the stack, from the host
    def prom(self, path, **params):
        url = f"http://127.0.0.1:{self.prom_port}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:  # 400/422: a bad query; the body says why
            return json.loads(e.read())

    def query_range(self, expr, start, end, step=5):
        return self.prom("/api/v1/query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=str(step))


def substitute(expr, variables):
    """A Grafana expression with its variables as a dashboard set to "All" gives them."""
    for name, value in variables.items():
        expr = expr.replace(f"${name}", value).replace(f"${{{name}}}", value)
    assert not re.search(r"\$\w", expr), f"unsubstituted variable in {expr}"
    return expr


def dashboard_queries():
    """(dashboard, panel title, expression) for every target of every dashboard we ship."""
    out = []
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        d = json.loads(path.read_text())
        for p in d["panels"]:
            for t in p["targets"]:
                out.append((path.stem, p["title"], t["expr"]))
    return out
