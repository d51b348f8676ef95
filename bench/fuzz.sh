#!/usr/bin/env bash
# Runs every fuzzer (tests/fuzz) for longer than the test command does, two at a time (one per
# core), and prints executions and coverage per target (docs/reliability.md records a run).
#   bench/fuzz.sh [--time SECONDS_PER_TARGET (default 180) | --runs N] [--seed S]
set -euo pipefail
cd "$(dirname "$0")/.."
args=("$@")
((${#args[@]})) || args=(--time 180)
# Build once, then the two halves of the targets side by side.
scripts/fuzz.sh --runs 1 hf_config_fuzz >/dev/null
mapfile -t targets < <(cd tests/fuzz && ls *_fuzz.cc | sed 's/\.cc$//')
half=$(((${#targets[@]} + 1) / 2))
out=$(mktemp -d)
GPT2_FUZZ_NO_BUILD=1 scripts/fuzz.sh "${args[@]}" "${targets[@]:0:half}" >"$out/a" 2>&1 &
a=$!
GPT2_FUZZ_NO_BUILD=1 scripts/fuzz.sh "${args[@]}" "${targets[@]:half}" >"$out/b" 2>&1 &
b=$!
rc=0
wait $a || rc=1
wait $b || rc=1
cat "$out/a"
grep -v '^target ' "$out/b"
total=$(($(cat "$out/a" "$out/b" | sed -n "s/^total executions: //p" | paste -sd+)))
echo "all targets: $total executions"
rm -rf "$out"
exit $rc
