#!/usr/bin/env bash
# The main job, on this machine with embedded defaults: set up, build, turn real text (the Python
# documentation from Debian's python3-doc) into token shards, start a local cluster (the gpt2d
# coordinator and three CPU gpt2-worker daemons), submit a 2-rank training job of a small GPT-2
# with gpt2ctl, deploy it following the job (the third worker serves and hot-loads each new
# checkpoint), watch it train while generating text from every checkpoint served, then show the
# metrics, evaluate the last checkpoint (perplexity, HellaSwag on the sample file) and sample.
#   GPT2_DEMO_STEPS=N   optimizer steps (default 150: a few minutes on 2 cores)
#   GPT2_RUN_DIR=DIR    where shards, the database, checkpoints and logs go (default runs/demo)
#   GPT2D_PORT=P        gpt2d's gRPC port (default 50051); /metrics on GPT2D_HTTP_PORT (9400) and
#                       the workers' on the two ports after it
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
W=build/worker/gpt2-worker
RUN=${GPT2_RUN_DIR:-runs/demo}
STEPS=${GPT2_DEMO_STEPS:-150}
mkdir -p "$RUN"

DOCS=$(ls -d /usr/share/doc/python3/html/_sources 2>/dev/null || ls -d /usr/share/doc/python3*/html/_sources | head -n1)
echo "== prep: $DOCS -> $RUN/shards (first 100k tokens for validation)"
$W prep --out "$RUN/shards" --shard-tokens 1000000 --val-tokens 100000 --force "$DOCS"

cat >"$RUN/job.yaml" <<YAML
name: demo
model: {n_layer: 4, n_head: 4, n_embd: 256, n_positions: 256}
data: {dir: $RUN/shards}
batch: {total_tokens: 2048, micro_batch: 4, seq_len: 256}
optimizer: {max_lr: 2.0e-3, warmup_steps: 15, max_steps: $STEPS}
eval: {val_every: 50, val_batches: 8, sample_every: 50, sample_count: 1, sample_tokens: 24,
       hellaswag_every: 50, hellaswag_path: tests/data/hellaswag_sample.jsonl,
       sample_prompt: "The Python interpreter"}
checkpoint: {every: 50, keep_last: 2}
world_size: 2
YAML
PORT=${GPT2D_PORT:-50051}
HTTP=${GPT2D_HTTP_PORT:-9400}
export GPT2D_SERVER=127.0.0.1:$PORT
CTL=build/client/gpt2ctl
mkdir -p "$RUN/logs"
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
echo "== cluster: gpt2d on $GPT2D_SERVER (state in $RUN/gpt2d.db) + 3 CPU workers; logs in $RUN/logs"
rm -f "$RUN"/gpt2d.db*
build/server/gpt2d --listen "$GPT2D_SERVER" --http-listen "127.0.0.1:$HTTP" --db "$RUN/gpt2d.db" \
  --checkpoint-root "$RUN/checkpoints" >"$RUN/logs/gpt2d.log" 2>&1 &
PIDS+=($!)
for i in 0 1 2; do
  # One intra-op thread each: two ranks and a serving replica share this machine's cores.
  OMP_NUM_THREADS=1 $W run --coordinator "$GPT2D_SERVER" --device cpu --id "cpu-$i" --advertise-host 127.0.0.1 \
    --http-listen "127.0.0.1:$((HTTP + 1 + i))" >"$RUN/logs/worker-$i.log" 2>&1 &
  PIDS+=($!)
done
for _ in $(seq 100); do
  [[ $($CTL workers list -o json 2>/dev/null | grep -c WORKER_STATE_IDLE) -ge 3 ]] && break
  sleep 0.5
done
$CTL workers list

echo "== submit $RUN/job.yaml ($STEPS steps on 2 ranks), deploy it (following the job), watch it train"
JOB=$($CTL jobs submit -f "$RUN/job.yaml" | awk '{print $1; exit}')  # "job-000001 submitted (QUEUED)"
$CTL deploy create demo --follow-job "$JOB"
$CTL jobs watch "$JOB" &
WATCH=$!
# While it trains: once the first checkpoint is served, generate from each newer one.
SERVED=0
while kill -0 "$WATCH" 2>/dev/null; do
  STEP=$($CTL deploy get demo -o json 2>/dev/null | sed -n 's/.*"serving_step": *"\{0,1\}\([0-9]*\).*/\1/p' | head -n1)
  if [[ -n "$STEP" && "$STEP" -gt "$SERVED" ]]; then
    SERVED=$STEP
    echo "-- generate (deployment demo, step $STEP):"
    $CTL generate "The Python interpreter" --deployment demo --max-tokens 24 --temperature 0.8 --seed 1 || true
  fi
  sleep 2
done
wait "$WATCH" || true
$CTL jobs get "$JOB"
$CTL checkpoints list "$JOB"
sleep 3  # the replica hot-loads the last checkpoint
echo "-- generate from the final checkpoint:"
$CTL generate "The Python interpreter" --deployment demo --max-tokens 32 --temperature 0.8 --seed 1 || true
$CTL deploy list
echo "== metrics: curl 127.0.0.1:$HTTP/metrics (gpt2d), :$((HTTP + 1))/metrics .. :$((HTTP + 3))/metrics (workers)"
curl -s "127.0.0.1:$((HTTP + 1))/metrics" | grep -E '^gpt2_train_(loss|val_loss|tokens_per_second|step)\{' || true
curl -s "127.0.0.1:$HTTP/metrics" | grep -E '^gpt2_generate_(requests_total|time_to_first_token_seconds_(sum|count))' || true

CKPT=$(ls -d "$RUN"/checkpoints/"$JOB"/step_* | tail -n1)
echo "== evaluate $CKPT"
echo "   perplexity on the tutorial:"
$W score --model "$CKPT" "$DOCS"/tutorial/*.txt
echo "   HellaSwag (the 8-example sample file; the real one: see README):"
$W eval-hellaswag --model "$CKPT" --data tests/data/hellaswag_sample.jsonl
echo "== sample"
$W sample --model "$CKPT" --prompt "The Python interpreter" --max-new-tokens 48 --temperature 0.8 --top-k 50 --seed 42
echo "== done: checkpoints in $RUN/checkpoints/$JOB (load them with transformers' GPT2LMHeadModel.from_pretrained)"
