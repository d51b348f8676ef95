#!/usr/bin/env bash
# The main job, on this machine with embedded defaults: set up, build, turn real text (the Python
# documentation from Debian's python3-doc) into token shards, train a small GPT-2 on it for a few
# minutes with progress and metrics, evaluate it (validation loss, HellaSwag on the sample file),
# and sample from it.
#   GPT2_DEMO_STEPS=N   optimizer steps (default 150: a few minutes on 2 cores)
#   GPT2_RUN_DIR=DIR    where shards, checkpoints and metrics go (default runs/demo)
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
batch: {total_tokens: 2048, micro_batch: 8, seq_len: 256}
optimizer: {max_lr: 2.0e-3, warmup_steps: 15, max_steps: $STEPS}
eval: {val_every: 50, val_batches: 8, sample_every: 50, sample_count: 1, sample_tokens: 24,
       hellaswag_every: 50, hellaswag_path: tests/data/hellaswag_sample.jsonl,
       sample_prompt: "The Python interpreter"}
checkpoint: {dir: $RUN/checkpoints, every: 50, keep_last: 2}
device: cpu
log_every: 10
YAML
echo "== train: $RUN/job.yaml ($STEPS steps; every event also in $RUN/metrics.jsonl)"
$W train --spec "$RUN/job.yaml" --metrics-jsonl "$RUN/metrics.jsonl"

CKPT=$(ls -d "$RUN"/checkpoints/step_* | tail -n1)
echo "== evaluate $CKPT"
echo "   perplexity on the tutorial:"
$W score --model "$CKPT" "$DOCS"/tutorial/*.txt
echo "   HellaSwag (the 8-example sample file; the real one: see README):"
$W eval-hellaswag --model "$CKPT" --data tests/data/hellaswag_sample.jsonl
echo "== sample"
$W sample --model "$CKPT" --prompt "The Python interpreter" --max-new-tokens 48 --temperature 0.8 --top-k 50 --seed 42
echo "== done: checkpoints in $RUN/checkpoints (load them with transformers' GPT2LMHeadModel.from_pretrained)"
