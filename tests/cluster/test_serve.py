"""A serving replica (`gpt2-worker serve`) called by a Python grpcio client: streamed completions
equal the offline sampler, batching changes nothing, stop sequences, cancellation, a full queue,
bad parameters, metrics."""
import json
import subprocess
import threading

import grpc
import pytest

import clusterlib as cl


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve") / "step_00000042"
    subprocess.run([str(cl.WORKER), "init", "--config", "gpt2", "--n-layer", "3", "--n-head", "4", "--n-embd", "128",
                    "--n-positions", "128", "--seed", "3", "--out", str(d)], check=True, capture_output=True)
    return d


class Replica:
    def __init__(self, model, root, *extra):
        self.port, self.http = cl.free_port(), cl.free_port()
        self.proc = cl.Proc("replica", [cl.WORKER, "serve", "--model", model, "--listen", f"127.0.0.1:{self.port}",
                                        "--http-listen", f"127.0.0.1:{self.http}", "--job-id", "job-000007", *extra],
                            root).start()
        cl.wait_for(lambda: self._up() or not self.proc.alive(), 60, "the replica")
        assert self.proc.alive(), self.proc.output()
        from gpt2d.v1 import generate_pb2_grpc
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = generate_pb2_grpc.GenerateServiceStub(self.channel)

    def _up(self):
        try:
            return cl.http_get(self.http, "/healthz")[0] == 200
        except OSError:
            return False

    def request(self, prompt, **sampling):
        from gpt2d.v1 import generate_pb2
        return generate_pb2.GenerateRequest(prompt=prompt, sampling=generate_pb2.SamplingParams(**sampling))

    def stream(self, prompt, **sampling):
        return list(self.stub.Generate(self.request(prompt, **sampling), timeout=120))

    def metric(self, name):
        for line in cl.http_get(self.http, "/metrics")[1].splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return None

    def stop(self):
        self.channel.close()
        self.proc.stop()


@pytest.fixture
def replica(model, tmp_path):
    r = Replica(model, tmp_path, "--max-slots", "16")
    yield r
    r.stop()


def offline(model, prompt, *args):
    out = subprocess.run([str(cl.WORKER), "sample", "--model", str(model), "--prompt", prompt, "--json", *args],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


PROMPTS = ["Hello, I'm a language model,", "The", "Once upon a time, in a land far away", "def f(x):\n    return",
           "1, 2, 3,", "É ü 日本語", "<|endoftext|>", "The meaning of life is"]


def test_a_streamed_completion_equals_the_offline_sampler(replica, model):
    from gpt2d.v1 import generate_pb2
    msgs = replica.stream(PROMPTS[0], temperature=0, max_tokens=20, ignore_eos=True, logprobs=True)
    ref = offline(model, PROMPTS[0], "--temperature", "0", "--max-new-tokens", "20", "--ignore-eos")
    assert "".join(m.text for m in msgs) == ref["text"]
    assert [t for m in msgs for t in m.token_ids] == ref["tokens"]
    assert sum(len(m.logprobs) for m in msgs) == 20 and all(lp <= 0 for m in msgs for lp in m.logprobs)
    last = msgs[-1]
    assert last.done and last.finish_reason == generate_pb2.FINISH_REASON_LENGTH
    assert last.usage.completion_tokens == 20 and last.usage.prompt_tokens == 8
    assert 0 < last.usage.time_to_first_token_seconds <= last.usage.duration_seconds
    assert (last.model.job_id, last.model.step) == ("job-000007", 42)
    for m in msgs:
        m.text.encode("utf-8")  # every delta is whole characters


def test_sixteen_concurrent_streams_equal_each_alone(replica):
    params = [dict(temperature=0, max_tokens=12 + i % 5, ignore_eos=True) if i % 2 == 0 else
              dict(temperature=0.9, top_k=40, seed=100 + i, max_tokens=10 + i % 7, ignore_eos=True) for i in range(16)]
    prompts = [PROMPTS[i % len(PROMPTS)] * (1 + i % 3) for i in range(16)]
    alone = [[t for m in replica.stream(p, **s) for t in m.token_ids] for p, s in zip(prompts, params)]
    together = [None] * 16

    def call(i):
        together[i] = [t for m in replica.stream(prompts[i], **params[i]) for t in m.token_ids]
    threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone


def test_stop_sequences_cut_the_text_before_them(replica):
    from gpt2d.v1 import generate_pb2
    full = "".join(m.text for m in replica.stream(PROMPTS[2], temperature=0, max_tokens=30, ignore_eos=True))
    stop = full[len(full) // 2: len(full) // 2 + 3]
    assert stop and stop in full
    msgs = replica.stream(PROMPTS[2], temperature=0, max_tokens=30, ignore_eos=True, stop=[stop, "\x00never"])
    assert "".join(m.text for m in msgs) == full[: full.index(stop)]
    assert msgs[-1].finish_reason == generate_pb2.FINISH_REASON_STOP


def test_cancelled_streams_free_their_slots(replica):
    calls = [replica.stub.Generate(replica.request(PROMPTS[i], temperature=0, max_tokens=100, ignore_eos=True),
                                   timeout=120) for i in range(4)]
    for c in calls:
        next(c)  # each is running
    assert replica.metric("gpt2_serve_kv_cache_usage_ratio") is not None
    for c in calls:
        c.cancel()
    cl.wait_for(lambda: replica.metric("gpt2_serve_batch_size") == 0 and
                replica.metric("gpt2_serve_kv_cache_usage_ratio") == 0, 10, "the slots to be freed")
    # And the replica still serves.
    assert replica.stream("Hi", temperature=0, max_tokens=3)[-1].usage.completion_tokens == 3


def test_a_full_queue_is_refused_at_once(tmp_path):
    # A model slow enough (~10 ms a token on this CPU, 1000 tokens) that A surely holds the only slot
    # while B queues and C is refused.
    model = tmp_path / "model"
    subprocess.run([str(cl.WORKER), "init", "--config", "gpt2", "--n-layer", "6", "--n-head", "6", "--n-embd", "384",
                    "--n-positions", "1024", "--out", str(model)], check=True, capture_output=True)
    r = Replica(model, tmp_path, "--max-slots", "1", "--max-queue", "1")
    try:
        running = r.stub.Generate(r.request("A", temperature=0, max_tokens=1000, ignore_eos=True), timeout=60)
        next(running)
        waiting = r.stub.Generate(
            r.request("B", temperature=0, max_tokens=5, ignore_eos=True), timeout=60)
        cl.wait_for(lambda: r.metric("gpt2_serve_queue_depth") == 1, 10, "B to queue")
        with pytest.raises(grpc.RpcError) as e:
            r.stream("C", temperature=0, max_tokens=5)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        running.cancel()
        assert list(waiting)[-1].done
        text = cl.http_get(r.http, "/metrics")[1]
        assert 'gpt2_generate_requests_total{api="grpc",code="RESOURCE_EXHAUSTED"} 1' in text
        p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert p.returncode == 0, p.stdout + p.stderr
    finally:
        r.stop()


def test_bad_parameters_name_the_field(replica):
    from gpt2d.v1 import generate_pb2
    cases = [(dict(temperature=-1), "sampling.temperature"), (dict(top_p=1.5), "sampling.top_p"),
             (dict(max_tokens=500), "sampling.max_tokens"), (dict(top_k=-1), "sampling.top_k"),
             (dict(stop=[""]), "sampling.stop[0]")]
    for sampling, field in cases:
        with pytest.raises(grpc.RpcError) as e:
            replica.stream("Hello", **sampling)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details().startswith(field), sampling
    with pytest.raises(grpc.RpcError) as e:
        list(replica.stub.Generate(generate_pb2.GenerateRequest(prompt_tokens=[60000]), timeout=10))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "prompt_tokens[0]" in e.value.details()
    done = replica.stub.Complete(replica.request("Hello", temperature=0, max_tokens=4), timeout=30)
    assert len(done.choices) == 1 and done.usage.completion_tokens == len(done.choices[0].token_ids) <= 4


def test_hot_load_under_load_fails_nothing_and_reports_each_new_step(tmp_path, shards):
    """32 streams run while a training job writes 3 checkpoints that the replica follows."""
    ckpt = tmp_path / "checkpoints"
    initial = tmp_path / "step_00000000"
    subprocess.run([str(cl.WORKER), "init", "--config", "gpt2", "--n-layer", "2", "--n-head", "4", "--n-embd", "64",
                    "--n-positions", "64", "--seed", "1", "--out", str(initial)], check=True, capture_output=True)
    spec = cl.small_spec(shards, steps=30, world=1, checkpoint_every=10, accum=4)
    spec["checkpoint"].update({"dir": str(ckpt), "keep_last": 3})
    spec_path = cl.write_yaml(tmp_path / "job.yaml", spec)
    r = Replica(initial, tmp_path, "--max-slots", "32", "--follow", ckpt)
    trainer = subprocess.Popen([str(cl.WORKER), "train", "--spec", str(spec_path)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    results, errors, done = [], [], threading.Event()

    def client(i):
        while not done.is_set():
            try:
                msgs = r.stream(PROMPTS[i % len(PROMPTS)], temperature=0 if i % 2 else 0.8, seed=i, max_tokens=24,
                                ignore_eos=True)
                results.append((i, msgs[-1].model.step, msgs[-1].done, msgs[-1].usage.completion_tokens,
                                sum(len(m.token_ids) for m in msgs)))
            except grpc.RpcError as e:
                errors.append(e)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
    try:
        for t in threads:
            t.start()
        assert trainer.wait(300) == 0, trainer.stderr.read()
        cl.wait_for(lambda: r.metric("gpt2_serve_checkpoint_step") == 30, 60, "the replica to serve step 30")
        seen_30 = len([x for x in results if x[1] == 30])
        cl.wait_for(lambda: len([x for x in results if x[1] == 30]) >= seen_30 + 32, 120, "responses from step 30")
        # A corrupt checkpoint: the replica keeps serving step 30 and says why.
        bad = ckpt / "step_00000040"
        bad.mkdir()
        (bad / "config.json").write_text((ckpt / "step_00000030" / "config.json").read_text())
        (bad / "model.safetensors").write_bytes(b"not a safetensors file")
        cl.wait_for(lambda: r.metric('gpt2_serve_checkpoint_loads_total{result="error"}') == 1, 30, "the failed load")
        assert r.metric("gpt2_serve_checkpoint_step") == 30
    finally:
        done.set()
        for t in threads:
            t.join(60)
        trainer.kill()
        r.stop()
    assert not errors, errors[:3]
    assert all(ok and n == 24 and m == 24 for _, _, ok, n, m in results), "a truncated response"
    steps = {s for _, s, _, _, _ in results}
    assert {0, 30} <= steps <= {0, 10, 20, 30}
    for i in range(32):  # each client's responses move forward through the checkpoints, never back
        mine = [s for j, s, *_ in results if j == i]
        assert mine == sorted(mine)
    assert "kept the current weights" in r.proc.output() and "step_00000040" in r.proc.output()
    assert results[-1][1] == 30


def test_grpc_has_the_openai_apis_capabilities_n_echo_and_alternatives(replica):
    """n choices (choice i from seed + i), the prompt echoed with its log-probabilities (the first
    has none: NaN), and the top alternatives at every position, through grpcio."""
    import math
    from gpt2d.v1 import generate_pb2
    req = generate_pb2.GenerateRequest(prompt="Hello, I'm a language model,", n=2, echo=True,
                                       sampling=generate_pb2.SamplingParams(max_tokens=5, seed=9, logprobs=True,
                                                                            top_logprobs=3, ignore_eos=True))
    done = replica.stub.Complete(req, timeout=60)
    assert [c.index for c in done.choices] == [0, 1]
    assert done.usage.prompt_tokens == 8 and done.usage.completion_tokens == 10  # tiktoken: 8 tokens
    for i, c in enumerate(done.choices):
        alone = replica.stream("Hello, I'm a language model,", max_tokens=5, seed=9 + i, ignore_eos=True)
        assert list(c.token_ids) == [t for m in alone for t in m.token_ids]
        assert c.prompt.text == "Hello, I'm a language model," and len(c.prompt.token_ids) == 8
        assert math.isnan(c.prompt.logprobs[0]) and len(c.prompt.logprobs) == 8
        assert len(c.prompt.top_logprobs) == 8 and len(c.prompt.top_logprobs[0].token_ids) == 0
        for tops, lp in zip(c.top_logprobs, c.logprobs):
            assert len(tops.token_ids) == 3 and list(tops.logprobs) == sorted(tops.logprobs, reverse=True)
            assert lp <= tops.logprobs[0]
    # The prompt alone (max_tokens 0 with echo): its log-likelihood, the same in both choices' runs.
    score = replica.stub.Complete(generate_pb2.GenerateRequest(
        prompt="Hello, I'm a language model,", echo=True,
        sampling=generate_pb2.SamplingParams(max_tokens=0, logprobs=True)), timeout=60)
    assert list(score.choices[0].prompt.logprobs)[1:] == list(done.choices[0].prompt.logprobs)[1:]
    assert score.usage.completion_tokens == 0 and not score.choices[0].token_ids
    with pytest.raises(grpc.RpcError) as e:
        replica.stream("Hello", max_tokens=0)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "sampling.max_tokens" in e.value.details()
