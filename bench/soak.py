"""The soak: a real gpt2d cluster on loopback under steady load while things go wrong, for a given
time (default 20 minutes). Not a test: a run takes the machine; its result goes to
docs/reliability.md.

  .venv/bin/python bench/soak.py                       # 20 minutes
  .venv/bin/python bench/soak.py --minutes 3 --kill-every 60 --json runs/soak.json

What runs: gpt2d and four CPU workers. One trains a small GPT-2 (1 rank, a checkpoint every
--checkpoint-every steps, the last 3 kept) for the whole run; a deployment of 2 replicas follows
the job, so the replicas hot-load each new checkpoint; the fourth worker is idle, ready to refill
the deployment. --streams clients (default 32) send streamed Generate requests through gpt2d
back to back (a random short prompt, 24 tokens, temperature 0.8, a 60 s deadline; after an error a
client waits 0.5 s). Every --kill-every seconds one serving worker is killed (SIGKILL) and
started again; halfway through, gpt2d itself is killed and started again on the same database.

What it reports: requests sent, completed, failed by status code (and how many of those failed
mid-stream, after tokens had arrived), tokens received, the job's steps and checkpoints, the
serving step the deployment reached, and the resident memory (VmRSS) of every process at the
start of the measured window (after --warmup seconds) and at the end. A process restarted on
purpose is measured over its last life, from 30 s after its start. The bound it checks: no process that lived through the
window grew by more than 25% + 64 MiB.
"""
import argparse
import collections
import json
import os
import pathlib
import random
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "cluster"))
import clusterlib as cl  # noqa: E402

WORDS = "the of and to in a is that for it as was with be by on not he this are or his from at which".split()


def rss_mib(pid):
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class Load:
    """--streams clients, each sending one streamed Generate after another until stopped."""

    def __init__(self, cluster, streams, max_tokens):
        self.c, self.streams, self.max_tokens = cluster, streams, max_tokens
        self.lock = threading.Lock()
        self.sent = 0
        self.codes = collections.Counter()
        self.mid_stream = collections.Counter()
        self.tokens = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(streams)]

    def client(self, i):
        import grpc
        from gpt2d.v1 import generate_pb2, generate_pb2_grpc
        rng = random.Random(i)
        while not self.stop.is_set():
            prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12)))
            req = generate_pb2.GenerateRequest(prompt=prompt, sampling=generate_pb2.SamplingParams(
                max_tokens=self.max_tokens, temperature=0.8, seed=rng.randint(0, 1 << 30)))
            got = 0
            with self.lock:
                self.sent += 1
            try:
                channel = self.c.channel()
                for m in generate_pb2_grpc.GenerateServiceStub(channel).Generate(req, timeout=60):
                    got += len(m.token_ids)
                code = "OK"
            except grpc.RpcError as e:
                code = e.code().name
            except ValueError:  # the channel was closed under us (gpt2d restarted)
                code = "CHANNEL_CLOSED"
            with self.lock:
                self.codes[code] += 1
                self.tokens += got
                if code != "OK" and got > 0:
                    self.mid_stream[code] += 1
            if code != "OK":
                time.sleep(0.5)

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(90)
        return sum(t.is_alive() for t in self.threads)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--streams", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--kill-every", type=float, default=180, help="seconds between serving-worker kills")
    ap.add_argument("--checkpoint-every", type=int, default=100, help="training steps between checkpoints")
    ap.add_argument("--warmup", type=float, default=90, help="seconds before the first memory reading")
    ap.add_argument("--json", help="also write the report here")
    ap.add_argument("--root", help="cluster directory (default: a temporary one)")
    args = ap.parse_args()

    cl.generate_stubs()
    from gpt2d.v1 import cluster_pb2, cluster_pb2_grpc, jobs_pb2

    root = pathlib.Path(args.root or tempfile.mkdtemp(prefix="gpt2d-soak-"))
    data = cl.random_shards(root / "data")
    c = cl.Cluster(root / "cluster")
    events = []

    def log(msg):
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        events.append(line)
        print(line, flush=True)

    try:
        c.start_gpt2d()
        c.start_worker("train")
        spec = cl.small_spec(data, steps=10_000_000, world=1, checkpoint_every=args.checkpoint_every)
        spec["eval"]["val_every"] = 0
        spec["checkpoint"]["keep_last"] = 3
        spec["model"]["n_positions"] = 64
        job = c.submit(spec)
        c.wait_state(job.id, "RUNNING", timeout=60)
        serving = ["s0", "s1", "s2"]
        for name in serving:
            c.start_worker(name, extra=["--max-slots", "16"])
        deployments = lambda: cluster_pb2_grpc.DeploymentServiceStub(c.channel())  # noqa: E731
        cl.wait_for(lambda: c.checkpoints(job.id), 300, "the job's first checkpoint")
        deployments().CreateDeployment(cluster_pb2.CreateDeploymentRequest(
            deployment=cluster_pb2.Deployment(name="default", follow_job=job.id, replicas=2)), timeout=10)
        get = lambda: deployments().GetDeployment(cluster_pb2.GetDeploymentRequest(name="default"),  # noqa: E731
                                                  timeout=10)
        cl.wait_for(lambda: get().ready_replicas == 2, 180, "two ready replicas")
        log(f"job {job.id} training on 'train'; deployment default on {list(get().worker_ids)}")

        load = Load(c, args.streams, args.max_tokens)
        load.start()
        t0 = time.monotonic()
        end = t0 + args.minutes * 60
        next_kill = t0 + args.kill_every
        gpt2d_restart = t0 + args.minutes * 30
        restarted_gpt2d = False
        memory_start = None  # name -> MiB; None: restarted on purpose, read again once it settled
        settle = {}  # name -> when to take its first reading in this life
        kills = 0
        first_step = None
        while time.monotonic() < end:
            time.sleep(1)
            now = time.monotonic()
            if memory_start is None and now - t0 >= args.warmup:
                memory_start = {"gpt2d": rss_mib(c.gpt2d.p.pid),
                                **{n: rss_mib(w.p.pid) for n, w in c.workers.items()}}
                first_step = c.get(job.id).step
                log(f"memory at the start of the window (MiB): {memory_start}")
            for name, when in list(settle.items()):
                if now >= when and memory_start is not None:
                    p = c.gpt2d if name == "gpt2d" else c.workers[name]
                    memory_start[name] = rss_mib(p.p.pid)
                    del settle[name]
            if not restarted_gpt2d and now >= gpt2d_restart:
                log("kill -9 gpt2d; starting it again on the same database")
                c.gpt2d.kill9()
                c._channel = None  # clients reconnect through a new channel
                c.start_gpt2d()
                restarted_gpt2d = True
                settle["gpt2d"] = time.monotonic() + 30
            if now >= next_kill:
                try:
                    victim = random.choice(list(get().worker_ids))
                except Exception as e:  # gpt2d mid-restart: try again next second
                    log(f"could not read the deployment ({type(e).__name__}); kill postponed")
                    continue
                log(f"kill -9 serving worker {victim}; starting it again")
                c.workers[victim].kill9()
                c.start_worker(victim, extra=["--max-slots", "16"], wait=False)
                settle[victim] = time.monotonic() + 30
                kills += 1
                next_kill = now + args.kill_every
        hung = load.finish()
        elapsed = time.monotonic() - t0
        final = c.get(job.id)
        d = get()
        memory_end = {"gpt2d": rss_mib(c.gpt2d.p.pid), **{n: rss_mib(w.p.pid) for n, w in c.workers.items()}}
        growth = {}
        for name, start in (memory_start or {}).items():
            if name in settle or start is None or memory_end.get(name) is None:
                continue  # restarted too recently to have a reading of this life
            growth[name] = {"start_mib": round(start, 1), "end_mib": round(memory_end[name], 1),
                            "within_bound": memory_end[name] <= start * 1.25 + 64}
        report = {
            "minutes": round(elapsed / 60, 1), "streams": args.streams, "sent": load.sent,
            "completed": load.codes.get("OK", 0),
            "failed": {k: v for k, v in load.codes.items() if k != "OK"},
            "failed_mid_stream": dict(load.mid_stream), "tokens": load.tokens, "clients_hung": hung,
            "serving_worker_kills": kills, "gpt2d_restarts": int(restarted_gpt2d),
            "job": {"state": jobs_pb2.JobState.Name(final.state).removeprefix("JOB_STATE_"),
                    "steps": final.step, "steps_in_window": final.step - (first_step or 0),
                    "restarts": final.restarts, "checkpoints_kept": len(c.checkpoints(job.id))},
            "deployment": {"ready_replicas": d.ready_replicas, "serving_step": d.serving_step},
            "memory": growth,
            "memory_bound": "end <= start * 1.25 + 64 MiB for every process alive through the window",
            "events": events,
        }
        report["ok"] = hung == 0 and all(g["within_bound"] for g in growth.values()) and report["completed"] > 0
        print(json.dumps(report, indent=2))
        if args.json:
            pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            pathlib.Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        return 0 if report["ok"] else 1
    finally:
        c.stop()


if __name__ == "__main__":
    sys.exit(main())
