"""The OpenAI-compatible API on gpt2d, driven by clients nobody here wrote: the official `openai`
SDK, plain HTTP for server-sent events and disconnects, transformers for the prompt's
log-probabilities, and lm-eval's `local-completions` model for a HellaSwag-format task."""
import json
import math
import random
import socket
import subprocess
import threading
import time
import urllib.request

import grpc
import pytest

import clusterlib as cl

TOKEN = "openai-test-token"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("openai") / "step_00000007"
    subprocess.run([str(cl.WORKER), "init", "--config", "gpt2", "--n-layer", "2", "--n-head", "4", "--n-embd", "64",
                    "--n-positions", "128", "--seed", "5", "--out", str(d)], check=True, capture_output=True)
    return d


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, model):
    c = cl.Cluster(tmp_path_factory.mktemp("cluster"), token=TOKEN)
    c.start_gpt2d()
    c.start_worker("w0")
    from gpt2d.v1 import cluster_pb2, cluster_pb2_grpc
    stub = cluster_pb2_grpc.DeploymentServiceStub(c.channel())
    stub.CreateDeployment(cluster_pb2.CreateDeploymentRequest(
        deployment=cluster_pb2.Deployment(name="default", checkpoint=str(model))), metadata=c.metadata(), timeout=10)
    cl.wait_for(lambda: stub.GetDeployment(cluster_pb2.GetDeploymentRequest(name="default"), metadata=c.metadata(),
                                           timeout=10).ready_replicas == 1, 120, "a ready replica")
    yield c
    c.stop()
    for log in sorted(c.root.glob("*.log")):
        print(f"==== {log.name}\n{log.read_text(errors='replace')[-4000:]}")


@pytest.fixture(scope="module")
def client(cluster):
    import openai
    return openai.OpenAI(base_url=f"http://127.0.0.1:{cluster.openai_port}/v1", api_key=TOKEN, max_retries=0)


def grpc_generate(cluster, prompt, **sampling):
    from gpt2d.v1 import generate_pb2, generate_pb2_grpc
    stub = generate_pb2_grpc.GenerateServiceStub(cluster.channel())
    req = generate_pb2.GenerateRequest(prompt=prompt, sampling=generate_pb2.SamplingParams(**sampling))
    return list(stub.Generate(req, metadata=cluster.metadata(), timeout=60))


def gpt2d_metric(cluster, series):
    for line in cl.http_get(cluster.http_port, "/metrics")[1].splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_models_health_and_auth(cluster, client, model):
    import openai
    models = client.models.list().data
    assert [m.id for m in models] == ["default"]
    assert models[0].model_extra["checkpoint"]["path"] == str(model)
    assert cl.http_get(cluster.openai_port, "/health")[0] == 200  # no token needed
    bad = openai.OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.completions.create(model="default", prompt="Hi", max_tokens=2)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="no-such-model", prompt="Hi", max_tokens=2)
    assert "no-such-model" in str(e.value)


def test_streamed_and_whole_completions_equal_each_other_and_grpc(cluster, client):
    args = dict(model="default", prompt="The meaning of life is", max_tokens=12, temperature=0.8, seed=5,
                logprobs=0, extra_body={"ignore_eos": True})
    whole = client.completions.create(**args)
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **args))
    streamed_text = "".join(c.choices[0].text for c in chunks if c.choices)
    streamed_tokens = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.tokens]
    streamed_lps = [lp for c in chunks if c.choices and c.choices[0].logprobs
                    for lp in c.choices[0].logprobs.token_logprobs]
    ref = grpc_generate(cluster, "The meaning of life is", max_tokens=12, temperature=0.8, seed=5, ignore_eos=True,
                        logprobs=True)
    c = whole.choices[0]
    assert c.text == streamed_text == "".join(m.text for m in ref)
    assert c.logprobs.tokens == streamed_tokens and len(streamed_tokens) == 12
    assert c.logprobs.token_logprobs == streamed_lps == pytest.approx([lp for m in ref for lp in m.logprobs], rel=1e-6)
    assert c.finish_reason == "length" and chunks[-2].choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 12 and whole.usage.prompt_tokens == 5
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 17  # the usage chunk
    assert whole.model_extra["checkpoint"]["step"] == 7
    assert whole.id.startswith("cmpl-") and whole.object == "text_completion"


def test_n_choices_stop_and_lists_of_prompts(cluster, client):
    two = client.completions.create(model="default", prompt="Once upon a time", n=2, max_tokens=6, seed=11,
                                    extra_body={"ignore_eos": True})
    assert [c.index for c in two.choices] == [0, 1]
    for i, c in enumerate(two.choices):  # choice i draws from seed + i
        ref = grpc_generate(cluster, "Once upon a time", max_tokens=6, seed=11 + i, ignore_eos=True)
        assert c.text == "".join(m.text for m in ref)
    assert two.usage.completion_tokens == 12 and two.usage.prompt_tokens == 4
    # stop: cut where the text would first show a piece of what greedy decoding says.
    free = client.completions.create(model="default", prompt="Hello", max_tokens=10, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0].text
    stop = free[len(free) // 2:len(free) // 2 + 2]
    cut = client.completions.create(model="default", prompt="Hello", max_tokens=10, temperature=0, stop=[stop],
                                    extra_body={"ignore_eos": True}).choices[0]
    assert cut.text == free[:free.index(stop)] and cut.finish_reason == "stop"
    # Prompts as a list of strings and as lists of token ids: choices in prompt order.
    many = client.completions.create(model="default", prompt=["Hello", "The"], max_tokens=3, temperature=0,
                                     extra_body={"ignore_eos": True})
    ids = client.completions.create(model="default", prompt=[[15496], [464]], max_tokens=3, temperature=0,
                                    extra_body={"ignore_eos": True})
    single = client.completions.create(model="default", prompt=[464], max_tokens=3, temperature=0,
                                       extra_body={"ignore_eos": True})
    assert [c.text for c in many.choices] == [c.text for c in ids.choices]
    assert many.choices[1].text == single.choices[0].text
    assert many.usage.prompt_tokens == 2


def test_logprobs_with_alternatives(client):
    r = client.completions.create(model="default", prompt="Hello there", max_tokens=5, temperature=0, logprobs=3,
                                  extra_body={"ignore_eos": True})
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 5
    for tok, chosen, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert 3 <= len(top) <= 4 and top[tok] == chosen
        assert chosen == max(top.values())  # greedy picks the most likely
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
    assert "".join(lp.tokens) == r.choices[0].text


def test_echo_scores_the_prompt_as_transformers_does(client, model):
    import torch
    import transformers
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(model)).eval()
    rng = random.Random(3)
    prompt = [rng.randrange(50257) for _ in range(40)]
    r = client.completions.create(model="default", prompt=prompt, max_tokens=0, echo=True, logprobs=2)
    lp = r.choices[0].logprobs
    assert r.usage.completion_tokens == 0 and r.usage.prompt_tokens == 40 and len(lp.token_logprobs) == 40
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    with torch.no_grad():
        ref = torch.log_softmax(hf(torch.tensor([prompt])).logits[0].double(), -1)
    want = [ref[i - 1, prompt[i]].item() for i in range(1, 40)]
    assert lp.token_logprobs[1:] == pytest.approx(want, rel=1e-5)
    for i in range(1, 40):
        best = ref[i - 1].topk(2).values.tolist()
        assert sorted(lp.top_logprobs[i].values(), reverse=True)[:2] == pytest.approx(best, rel=1e-5)
    # echo with generation: the prompt's text comes first, then the completion.
    g = client.completions.create(model="default", prompt="Hi there", max_tokens=3, echo=True, temperature=0,
                                  extra_body={"ignore_eos": True})
    assert g.choices[0].text.startswith("Hi there") and len(g.choices[0].text) > len("Hi there")


def test_bad_requests_name_the_field(cluster, client):
    import openai
    before = gpt2d_metric(cluster, 'gpt2_generate_requests_total{api="openai",code="INVALID_ARGUMENT"}')
    cases = [(dict(temperature=-1), "temperature"), (dict(max_tokens=500), "max_tokens"), (dict(n=0), "n"),
             (dict(top_p=1.5), "top_p"), (dict(logprobs=50), "logprobs"), (dict(stop=[""]), "stop"),
             (dict(extra_body={"bogus_field": 1}), "bogus_field"), (dict(extra_body={"min_tokens": 99}), "min_tokens"),
             (dict(prompt=[70000]), "prompt"), (dict(max_tokens="many"), "max_tokens")]
    for args, field in cases:
        args = dict(dict(model="default", prompt="Hi", max_tokens=2), **args)
        with pytest.raises(openai.BadRequestError) as e:
            client.completions.create(**args)
        assert e.value.body["param"] == field and e.value.body["message"].startswith(field), (args, e.value.body)
    # OpenAI's own fields we do not implement are accepted and ignored.
    ok = client.completions.create(model="default", prompt="Hi", max_tokens=2, user="u1", presence_penalty=0.0)
    assert ok.usage.completion_tokens <= 2
    after = gpt2d_metric(cluster, 'gpt2_generate_requests_total{api="openai",code="INVALID_ARGUMENT"}')
    assert after - before == len(cases)


def sse_client(port, body, read_chunks):
    """Streams a completion over a raw socket; reads `read_chunks` events (None: all) and closes.
    Returns the events read and whether [DONE] came."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    data = json.dumps(body).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              + f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
    f = s.makefile("rb")
    events, done = [], False
    status = f.readline()
    assert b" 200 " in status, status
    while True:  # headers
        if f.readline() in (b"\r\n", b""):
            break
    while read_chunks is None or len(events) < read_chunks:
        size = f.readline().strip()
        if not size or int(size, 16) == 0:
            break
        chunk = f.read(int(size, 16)).decode()
        f.readline()
        for line in chunk.split("\n"):
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                events.append(json.loads(line[6:]))
        if done:
            break
    s.close()
    return events, done


def test_64_streaming_clients_with_disconnects_free_every_slot(cluster):
    worker_http = cluster.worker_http["w0"]

    def worker_metric(name):
        for line in cl.http_get(worker_http, "/metrics")[1].splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    cancelled = 'gpt2_generate_requests_total{api="openai",code="CANCELLED"}'
    before = gpt2d_metric(cluster, cancelled)
    rng = random.Random(1)
    plan = [rng.choice([None, None, 1, 3]) for _ in range(64)]  # None: read to the end
    results = [None] * 64

    def run(i):
        body = {"model": "default", "prompt": f"Client {i} says", "max_tokens": 100, "stream": True, "seed": i,
                "ignore_eos": True}
        results[i] = sse_client(cluster.openai_port, body, plan[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    for i, (events, done) in enumerate(results):
        if plan[i] is None:
            assert done and sum(len(e["choices"][0]["text"]) > 0 for e in events) > 0, i
            assert events[-1]["choices"][0]["finish_reason"] == "length", events[-1]
    # Every request left the engine: nothing running, nothing queued, no KV cache held.
    cl.wait_for(lambda: worker_metric("gpt2_serve_batch_size") == 0 and worker_metric("gpt2_serve_queue_depth") == 0
                and worker_metric("gpt2_serve_kv_cache_usage_ratio") == 0, 10, "the engine to be empty")
    gone = sum(p is not None for p in plan)
    cl.wait_for(lambda: gpt2d_metric(cluster, cancelled) - before == gone, 10, f"{gone} cancelled requests")


def test_a_client_leaving_a_whole_completion_cancels_it(cluster):
    cancelled = 'gpt2_generate_requests_total{api="openai",code="CANCELLED"}'
    before = gpt2d_metric(cluster, cancelled)
    s = socket.create_connection(("127.0.0.1", cluster.openai_port), timeout=30)
    # 16 choices of 120 tokens: long enough on this small model that it cannot end first.
    data = json.dumps({"model": "default", "prompt": "A long story:", "max_tokens": 120, "n": 16,
                       "ignore_eos": True}).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n" + f"Authorization: Bearer {TOKEN}\r\n".encode()
              + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    time.sleep(0.1)
    s.close()
    cl.wait_for(lambda: gpt2d_metric(cluster, cancelled) - before == 1, 10, "the request to be cancelled")


def test_lm_eval_local_completions_scores_hellaswag_as_we_do(cluster, model, tmp_path):
    """lm-eval's local-completions model (its tokenizer: our /tokenize) on a local HellaSwag-format
    task gives the loglikelihoods and accuracies our own eval-hellaswag computes."""
    lm_eval = pytest.importorskip("lm_eval")
    data = cl.ROOT / "tests" / "data" / "hellaswag_sample.jsonl"
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "hellaswag_local.yaml").write_text(f"""task: hellaswag_local
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
validation_split: validation
output_type: multiple_choice
doc_to_text: "{{{{ctx}}}}"
doc_to_target: "{{{{label}}}}"
doc_to_choice: "{{{{endings}}}}"
target_delimiter: " "
metric_list:
  - metric: acc
  - metric: acc_norm
""")
    ours_file = tmp_path / "ours.jsonl"
    out = subprocess.run([str(cl.WORKER), "eval-hellaswag", "--model", str(model), "--data", str(data),
                          "--per-example", str(ours_file)], check=True, capture_output=True, text=True)
    ours = [json.loads(line) for line in ours_file.read_text().splitlines()]
    docs = [json.loads(line) for line in data.read_text().splitlines()]
    script = tmp_path / "run_lm_eval.py"
    script.write_text(f"""
import json, sys
import lm_eval
from lm_eval.tasks import TaskManager
r = lm_eval.simple_evaluate(
    model="local-completions",
    model_args="model=default,base_url=http://127.0.0.1:{cluster.openai_port}/v1/completions,"
               "tokenizer_backend=remote,auth_token={TOKEN},max_length=127,num_concurrent=1,max_retries=1",
    tasks=["hellaswag_local"], task_manager=TaskManager(include_path="{tasks}"), log_samples=True,
    random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)
res = r["results"]["hellaswag_local"]
json.dump({{"acc": res["acc,none"], "acc_norm": res["acc_norm,none"],
           "lls": [[float(x[0][0]) for x in s["resps"]] for s in sorted(r["samples"]["hellaswag_local"], key=lambda s: s["doc_id"])]}},
          open(sys.argv[1], "w"))
""")
    result = tmp_path / "lm_eval.json"
    env = dict(cl.os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               OPENAI_API_KEY=TOKEN, HF_HOME=str(tmp_path / "hf"))
    p = subprocess.run([cl.sys.executable, str(script), str(result)], capture_output=True, text=True, env=env,
                       timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]
    theirs = json.loads(result.read_text())
    # Per ending: lm-eval's log-likelihood is minus our summed loss.
    for doc, mine, lls in zip(docs, ours, theirs["lls"]):
        assert lls == pytest.approx([-x for x in mine["sum_loss"]], rel=1e-5, abs=1e-4), doc["ind"]
    acc = sum(max(range(4), key=lambda i: -m["sum_loss"][i]) == d["label"] for m, d in zip(ours, docs)) / len(docs)
    # lm-eval's acc_norm divides by the ending's length in characters (ours, as build-nanogpt's, by tokens).
    acc_chars = sum(max(range(4), key=lambda i: -m["sum_loss"][i] / len(d["endings"][i])) == d["label"]
                    for m, d in zip(ours, docs)) / len(docs)
    reported = json.loads(out.stdout.strip().splitlines()[-1])
    assert theirs["acc"] == pytest.approx(acc) == pytest.approx(reported["acc"])
    assert theirs["acc_norm"] == pytest.approx(acc_chars)
