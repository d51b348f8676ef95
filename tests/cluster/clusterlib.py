"""A real gpt2d cluster on loopback for tests: gpt2d, gpt2-worker daemons, gpt2ctl, and Python
gRPC stubs generated from proto/ with grpcio-tools (a client nobody here wrote)."""
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import shards  # noqa: E402  (tests/shards.py)

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("GPT2_BUILD_DIR", ROOT / "build"))
GPT2D = BUILD / "server" / "gpt2d"
WORKER = BUILD / "worker" / "gpt2-worker"
GPT2CTL = BUILD / "client" / "gpt2ctl"


def generate_stubs():
    """Python modules for proto/gpt2d/v1/*.proto, importable as gpt2d.v1.*_pb2(_grpc)."""
    out = pathlib.Path(tempfile.mkdtemp(prefix="gpt2d-stubs-"))
    from grpc_tools import protoc
    import grpc_tools
    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto" / "gpt2d" / "v1").glob("*.proto"))
    include = str(pathlib.Path(grpc_tools.__file__).parent / "_proto")
    rc = protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"-I{include}", f"--python_out={out}",
                      f"--grpc_python_out={out}", *protos])
    assert rc == 0, "grpc_tools.protoc failed"
    sys.path.insert(0, str(out))
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_shards(dirpath):
    return shards.random_shards(dirpath, n_train=40_000, n_val=4_000, vocab=1000)


def small_spec(data_dir, *, steps=20, world=2, checkpoint_every=5, accum=1, n_layer=2, n_embd=64, **over):
    """A tiny GPT-2 job: T=32, B=4 per rank, `accum` micro-steps per optimizer step."""
    spec = {
        "name": "test",
        "model": {"preset": "gpt2", "n_layer": n_layer, "n_head": 4, "n_embd": n_embd, "n_positions": 64},
        "data": {"dir": str(data_dir)},
        "batch": {"total_tokens": 4 * 32 * world * accum, "micro_batch": 4, "seq_len": 32},
        "optimizer": {"max_lr": 1e-3, "warmup_steps": 2, "max_steps": steps},
        "eval": {"val_every": checkpoint_every, "val_batches": 2, "hellaswag_every": 0, "sample_every": 0},
        "checkpoint": {"every": checkpoint_every, "keep_last": 2},
        "world_size": world,
    }
    for k, v in over.items():
        spec[k] = v
    return spec


class Proc:
    """A daemon process whose combined output goes to a log file."""

    def __init__(self, name, cmd, log_dir, env=None):
        self.name, self.cmd = name, [str(c) for c in cmd]
        self.log = pathlib.Path(log_dir) / f"{name}.log"
        self.env = env
        self.p = None

    def start(self):
        self.logf = open(self.log, "ab")
        self.p = subprocess.Popen(self.cmd, stdout=self.logf, stderr=subprocess.STDOUT, env=self.env)
        return self

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def kill9(self):
        self.p.send_signal(signal.SIGKILL)
        self.p.wait(10)

    def stop(self, timeout=20):
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)
        self.logf.close()

    def output(self):
        return self.log.read_text(errors="replace")


FREEZE = r"""
import ctypes, os, sys
PTRACE_SEIZE, PTRACE_INTERRUPT, WALL = 0x4206, 0x4207, 0x40000000
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
tid = int(sys.argv[1])
for request in (PTRACE_SEIZE, PTRACE_INTERRUPT):
    if libc.ptrace(request, tid, None, None) != 0:
        sys.exit(f"ptrace({request:#x}, {tid}): {os.strerror(ctypes.get_errno())}")
os.waitpid(tid, WALL)  # the thread has stopped
print("frozen", flush=True)
while True:  # until it dies with its process (the kernel hands its exit to us, its tracer)
    _, status = os.waitpid(tid, WALL)
    if os.WIFEXITED(status) or os.WIFSIGNALED(status):
        break
"""


def freeze_thread(pid, name, timeout=10):
    """Stops one thread of process `pid` (by its name, pthread_setname_np) while the others run:
    a thread hung as in a stuck device call. ptrace from a helper process, which holds the thread
    stopped until the helper is killed (the thread resumes) or the process exits. Returns the
    helper's Popen."""
    # Threads a named thread creates inherit its name: the named one is the oldest (lowest id).
    tids = sorted((t.name for t in pathlib.Path(f"/proc/{pid}/task").iterdir()
                   if (t / "comm").read_text().strip() == name), key=int)
    assert tids, f"process {pid} has no thread named {name}"
    helper = subprocess.Popen([sys.executable, "-c", FREEZE, tids[0]], stdout=subprocess.PIPE, text=True)
    line = helper.stdout.readline()
    assert line.strip() == "frozen", f"could not stop thread {tids[0]} of {pid}: helper exited {helper.wait(timeout)}"
    return helper


def wait_for(predicate, timeout, what, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def http_get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.status, r.read().decode()


class Cluster:
    """gpt2d plus workers on loopback, all in `root` (database, checkpoints, logs)."""

    def __init__(self, root, *, token=None, gpt2d_args=()):
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.db = self.root / "gpt2d.db"
        self.port, self.http_port, self.openai_port = free_port(), free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.token = token
        self.gpt2d_args = list(gpt2d_args)
        self.gpt2d = None
        self.workers = {}
        self.worker_http = {}
        self._channel = None

    # ---- processes
    def start_gpt2d(self):
        args = [GPT2D, "--listen", self.address, "--http-listen", f"127.0.0.1:{self.http_port}",
                "--openai-listen", f"127.0.0.1:{self.openai_port}", "--db", self.db,
                "--checkpoint-root", self.root / "runs", "--heartbeat-interval", "0.5", "--heartbeat-timeout", "4",
                "--recovery-grace", "15", "--rendezvous-ports", self.rendezvous_ports(),
                *self.gpt2d_args]
        if self.token:
            tf = self.root / "token"
            tf.write_text(self.token + "\n")
            args += ["--auth-token-file", tf]
        self.gpt2d = Proc("gpt2d", args, self.root).start()
        wait_for(lambda: self._http_ok(self.http_port) or not self.gpt2d.alive(), 30, "gpt2d's /healthz")
        assert self.gpt2d.alive(), self.gpt2d.output()
        return self.gpt2d

    @staticmethod
    def rendezvous_ports():
        """100 ports below the kernel's ephemeral range (so no outgoing connection holds one),
        different for concurrent test runs."""
        base = 20000 + (os.getpid() % 100) * 100
        return f"{base}-{base + 99}"

    def start_worker(self, name, *, token=None, wait=True, extra=(), collective_timeout=20):
        http = self.worker_http.setdefault(name, free_port())
        args = [WORKER, "run", "--coordinator", self.address, "--device", "cpu", "--id", name,
                "--advertise-host", "127.0.0.1", "--http-listen", f"127.0.0.1:{http}",
                "--collective-timeout", collective_timeout, *extra]
        tok = token if token is not None else self.token
        if tok:
            args += ["--token", tok]
        # One intra-op thread each: several workers share this machine's cores (as in scripts/demo.sh).
        w = Proc(name, args, self.root, env=dict(os.environ, OMP_NUM_THREADS="1")).start()
        self.workers[name] = w
        if wait:
            wait_for(lambda: self.worker_state(name) == "IDLE" or not w.alive(), 60, f"worker {name} to register")
            assert w.alive(), w.output()
        return w

    def stop(self):
        for w in self.workers.values():
            if w.alive():
                w.stop()
        if self.gpt2d and self.gpt2d.alive():
            self.gpt2d.stop()
        if self._channel:
            self._channel.close()

    def _http_ok(self, port):
        try:
            return http_get(port, "/healthz")[0] == 200
        except OSError:
            return False

    # ---- API (Python grpcio client)
    def channel(self):
        import grpc
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.address)
        return self._channel

    def metadata(self):
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    def jobs(self):
        from gpt2d.v1 import jobs_pb2_grpc
        return jobs_pb2_grpc.JobServiceStub(self.channel())

    def cluster(self):
        from gpt2d.v1 import cluster_pb2_grpc
        return cluster_pb2_grpc.ClusterServiceStub(self.channel())

    def submit(self, spec, key=""):
        from google.protobuf import json_format
        from gpt2d.v1 import jobs_pb2, train_pb2
        msg = json_format.ParseDict(spec, train_pb2.TrainSpec())
        return self.jobs().SubmitJob(jobs_pb2.SubmitJobRequest(spec=msg, idempotency_key=key),
                                     metadata=self.metadata(), timeout=10).job

    def get(self, job_id):
        from gpt2d.v1 import jobs_pb2
        return self.jobs().GetJob(jobs_pb2.GetJobRequest(id=job_id), metadata=self.metadata(), timeout=10)

    def state(self, job_id):
        from gpt2d.v1 import jobs_pb2
        return jobs_pb2.JobState.Name(self.get(job_id).state).removeprefix("JOB_STATE_")

    def events(self, job_id, after=0):
        from gpt2d.v1 import jobs_pb2
        return list(self.jobs().WatchJob(jobs_pb2.WatchJobRequest(id=job_id, after_sequence=after),
                                         metadata=self.metadata(), timeout=600))

    def checkpoints(self, job_id):
        from gpt2d.v1 import jobs_pb2
        return list(self.jobs().ListCheckpoints(jobs_pb2.ListCheckpointsRequest(job_id=job_id),
                                                metadata=self.metadata(), timeout=10).checkpoints)

    def worker_state(self, worker_id):
        import grpc
        from gpt2d.v1 import cluster_pb2
        try:
            w = self.cluster().GetWorker(cluster_pb2.GetWorkerRequest(id=worker_id), metadata=self.metadata(),
                                         timeout=5)
        except grpc.RpcError:
            return None
        return cluster_pb2.WorkerState.Name(w.state).removeprefix("WORKER_STATE_")

    def wait_state(self, job_id, states, timeout=300):
        states = {states} if isinstance(states, str) else set(states)
        return wait_for(lambda: self.state(job_id) in states and self.state(job_id), timeout,
                        f"{job_id} to reach {states}", interval=0.2)

    def ctl(self, *args, check=False, timeout=600, env=None):
        e = dict(os.environ, **(env or {}))
        e.pop("GPT2D_TOKEN", None)
        if self.token:
            e.setdefault("GPT2D_TOKEN", self.token)
        proc = subprocess.run([str(GPT2CTL), "--server", self.address, *map(str, args)], capture_output=True,
                              text=True, timeout=timeout, env=e)
        if check and proc.returncode != 0:
            raise AssertionError(f"gpt2ctl {args} exited {proc.returncode}: {proc.stdout}\n{proc.stderr}")
        return proc


def write_yaml(path, spec):
    pathlib.Path(path).write_text(yaml.safe_dump(spec))
    return path


def final_checkpoint(root, job_id):
    """The newest step directory of a job (under the cluster's checkpoint root)."""
    steps = sorted((pathlib.Path(root) / "runs" / job_id).glob("step_*"))
    assert steps, f"no checkpoints for {job_id}"
    return steps[-1]
