#!/usr/bin/env bash
# The main job, on this machine with embedded defaults: set up, build, prepare real text (the Python
# tutorial from Debian's python3-doc), load a GPT-2 (yours, via GPT2_MODEL=DIR with config.json +
# model.safetensors, e.g. OpenAI's gpt2 in Hugging Face format; otherwise a freshly initialised
# small one), measure its perplexity on the text, and sample from it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
W=build/worker/gpt2-worker
RUN=${GPT2_RUN_DIR:-runs/demo}
mkdir -p "$RUN"

DOCS=$(ls -d /usr/share/doc/python3/html/_sources/tutorial 2>/dev/null || ls -d /usr/share/doc/python3*/html/_sources/tutorial | head -n1)
mapfile -t TEXTS < <(ls "$DOCS"/*.txt)
echo "== text: ${#TEXTS[@]} files of the Python tutorial ($DOCS)"
echo "   $(cat "${TEXTS[@]}" | wc -c) bytes -> $(cat "${TEXTS[@]}" | $W tokenize | wc -w) GPT-2 tokens"

MODEL=${GPT2_MODEL:-}
if [[ -z "$MODEL" ]]; then
  MODEL=$RUN/init-model
  echo "== model: none given (GPT2_MODEL=DIR), initialising a small GPT-2 (4 layers, 256 channels, context 256)"
  $W init --n-layer 4 --n-head 4 --n-embd 256 --n-positions 256 --seed 1337 --out "$MODEL"
else
  echo "== model: $MODEL"
fi

echo "== score: loss and perplexity on the tutorial (an untrained model sits near ln(50257) = 10.8 nats)"
$W score --model "$MODEL" "${TEXTS[@]}"

echo "== sample: 48 tokens, temperature 0.8, top-k 50"
$W sample --model "$MODEL" --prompt "The Python tutorial explains" --max-new-tokens 48 --temperature 0.8 --top-k 50 --seed 42
echo "== done: model in $MODEL"
