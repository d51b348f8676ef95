"""The CPU stack of deploy/docker-compose.yml, run for real: gpt2d, three CPU workers and
Prometheus, each container its own host on the stack's network. From the host, gpt2ctl trains a
2-rank job across two containers, a deployment follows it and generates, a worker container is
killed mid-job and comes back, the stack goes down and up with its history, and every dashboard
and alert expression is evaluated by the stack's Prometheus."""
import json
import time

import pytest
import yaml

import deploylib as dl

cl = dl.clusterlib
STEPS = 150  # long enough to be scraped a few times (~30 s) and to crash a rank mid-job


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    dl.docker("info")  # the daemon (scripts/test.sh starts one when none runs)
    dl.remove_stale_stacks()
    dl.build_images()
    data = tmp_path_factory.mktemp("data")
    cl.random_shards(data)
    dl.shutil.copy(dl.ROOT / "tests" / "data" / "hellaswag_sample.jsonl", data / "hellaswag.jsonl")
    for f in data.iterdir():
        f.chmod(0o644)
    data.chmod(0o755)
    s = dl.Stack(tmp_path_factory.mktemp("stack"), data)
    s.started = time.time()
    s.down(volumes=True)
    try:
        s.up()
        yield s
    finally:
        print(s.logs())
        s.down(volumes=True)


@pytest.fixture(scope="module")
def job(stack, tmp_path_factory):
    """A 2-rank job, submitted with gpt2ctl from the host; its paths are the containers'."""
    spec = cl.small_spec("/var/lib/gpt2d/data", steps=STEPS, checkpoint_every=25, accum=2)
    spec["eval"].update(hellaswag_every=50, hellaswag_path="/var/lib/gpt2d/data/hellaswag.jsonl")
    path = cl.write_yaml(tmp_path_factory.mktemp("spec") / "job.yaml", spec)
    out = stack.ctl("jobs", "submit", "-f", path, "-o", "json").stdout
    return json.loads(out)["id"]


def test_the_ranks_run_in_two_containers_and_rendezvous_across_the_network(stack, job):
    cl.wait_for(lambda: stack.api.get(job).step >= 1, 120, "the first step")
    j = stack.api.get(job)
    assert len(j.worker_ids) == 2 and len(set(j.worker_ids)) == 2
    hosts = {w.split("/")[0] for w in j.worker_ids}
    assert hosts <= set(dl.CPU_WORKERS), hosts
    workers = {w.id: w for w in stack.api.cluster().ListWorkers(
        __import__("gpt2d.v1.cluster_pb2", fromlist=["x"]).ListWorkersRequest(), metadata=stack.api.metadata(),
        timeout=10).workers}
    # Each advertises its own container name (its own address), not loopback.
    assert {workers[w].host for w in j.worker_ids} == hosts


def test_a_deployment_follows_the_job(stack, job):
    stack.ctl("deploy", "create", "demo", "--follow-job", job)
    cl.wait_for(lambda: "1/1" in stack.ctl("deploy", "list").stdout, 120, "the deployment's replica to be ready",
                interval=0.5)


def test_a_crashed_worker_container_comes_back_and_the_job_resumes_from_its_checkpoint(stack, job):
    cl.wait_for(lambda: any(c.step >= 25 for c in stack.api.checkpoints(job)), 300, "the checkpoint at step 25",
                interval=0.5)
    j = stack.api.get(job)
    assert j.step < STEPS, "the job ended before it could be interrupted: make it longer"
    victim = j.worker_ids[1].split("/")[0]
    before = stack.restart_count(victim)
    # A crash as Docker sees one: the worker process dies of SIGKILL (as from the OOM killer), so the
    # container exits by itself. (`docker kill` is a manual stop: Docker applies no restart policy.)
    stack.crash(victim)
    stack.api.wait_state(job, {"RESTARTING", "RUNNING"}, timeout=60)
    cl.wait_for(lambda: stack.restart_count(victim) > before and stack.running(victim), 60,
                f"{victim}'s restart policy to bring it back", interval=0.5)
    # gpt2ctl watches it to the end: exit 0 only when the job SUCCEEDED.
    watch = stack.ctl("jobs", "watch", job, "-o", "json", check=False, timeout=600)
    assert watch.returncode == 0, watch.stdout[-2000:] + watch.stderr[-2000:]
    events = [json.loads(line) for line in watch.stdout.splitlines()]
    assert any("checkpoint" in e for e in events) and any("eval" in e for e in events), events[-3:]
    final = stack.api.get(job)
    assert final.restarts == 1 and final.attempt == 2 and final.step == STEPS
    notes = [e.message for e in stack.api.events(job) if e.HasField("message")]
    assert any("resuming from step" in n for n in notes), notes


def test_generate_returns_text_from_a_checkpoint_the_job_trained(stack, job):
    def generate():
        p = stack.ctl("generate", "The Python", "--deployment", "demo", "--max-tokens", "8", "--temperature", "0",
                      "--ignore-eos", "-o", "json")
        return [json.loads(line) for line in p.stdout.splitlines()]

    # The deployment follows the job: it hot-loads the final checkpoint.
    msgs = cl.wait_for(lambda: (m := generate()) and int(m[-1]["model"]["step"]) == STEPS and m, 120,
                       f"the deployment to serve step {STEPS}", interval=1)
    done = msgs[-1]
    assert done["done"] and done["usage"]["completion_tokens"] == 8, done
    assert "".join(m.get("text", "") for m in msgs), msgs
    assert done["model"]["job_id"] == job and done["model"]["path"].startswith("/var/lib/gpt2d/checkpoints/"), done

    # The same completion through the OpenAI-compatible API on gpt2d's published port.
    import urllib.request
    req = urllib.request.Request(
        f"http://127.0.0.1:{stack.openai_port}/v1/completions",
        data=json.dumps({"model": "demo", "prompt": "The Python", "max_tokens": 8, "temperature": 0,
                         "ignore_eos": True}).encode(),
        headers={"Authorization": f"Bearer {stack.token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        body = json.loads(r.read())
    assert body["choices"][0]["text"] == "".join(m.get("text", "") for m in msgs), body
    assert body["usage"]["completion_tokens"] == 8 and body["checkpoint"]["step"] == STEPS, body


def series_over_the_run(stack, expr):
    r = stack.query_range(expr, stack.started, time.time())
    assert r["status"] == "success", f"{expr}: {r.get('error')}"
    return r["data"]["result"]


def test_every_dashboard_query_draws_something(stack, job):
    time.sleep(12)  # two scrapes after the last request
    variables = {"job": ".*", "deployment": ".*", "__rate_interval": "1m", "datasource": "x"}
    empty = []
    for dashboard, title, expr in dl.dashboard_queries():
        if not series_over_the_run(stack, dl.substitute(expr, variables)):
            empty.append(f"{dashboard} / {title}: {expr}")
    assert not empty, "panels that draw nothing:\n" + "\n".join(empty)
    # The variables' own queries, and a filter that selects this job and deployment alone.
    assert series_over_the_run(stack, f'gpt2_job_step{{job=~"{job}"}}')
    assert series_over_the_run(stack, 'gpt2_serve_checkpoint_step * on(instance) group_left(deployment) '
                                      'gpt2_serve_deployment_info{deployment=~"demo"}')
    assert not series_over_the_run(stack, 'gpt2_serve_deployment_info{deployment=~"no-such"}')


def test_every_alert_rule_evaluates_in_the_stacks_prometheus(stack):
    rules = yaml.safe_load((dl.DEPLOY / "prometheus" / "alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    for expr in exprs:
        r = stack.prom("/api/v1/query", query=expr)
        assert r["status"] == "success", f"{expr}: {r.get('error')}"
    loaded = stack.prom("/api/v1/rules")["data"]["groups"]
    health = {r["name"]: r["health"] for g in loaded for r in g["rules"]}
    assert len(health) == len(exprs) and all(h == "ok" for h in health.values()), health
    targets = stack.prom("/api/v1/targets")["data"]["activeTargets"]
    up = sorted((t["labels"]["job"], t["health"]) for t in targets)
    assert up == [("gpt2-worker", "up")] * 3 + [("gpt2d", "up")], up


def test_down_and_up_keeps_the_jobs_history_and_checkpoints(stack, job):
    stack.compose("down", "--remove-orphans", timeout=300)  # volumes kept
    stack.up()
    jobs = json.loads(stack.ctl("jobs", "list", "-o", "json").stdout)["jobs"]
    assert [j["id"] for j in jobs] == [job] and jobs[0]["state"] == "JOB_STATE_SUCCEEDED", jobs
    ckpts = stack.api.checkpoints(job)
    assert ckpts and max(c.step for c in ckpts) == STEPS
    # The deployment too: a worker serves it again, from the job's final checkpoint.
    cl.wait_for(lambda: "1/1" in stack.ctl("deploy", "list").stdout, 120, "demo to be served again", interval=0.5)
