#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz: clang, ASan, UBSan) into build-fuzz/ and runs each on
# its seed corpus (tests/fuzz/corpus/<parser>/) with its dictionary (tests/fuzz/dict/), then prints
# executions and coverage per target. A crash stops the run: its input is under
# build-fuzz/artifacts/ (add it to the corpus as a regression input once fixed).
#   scripts/fuzz.sh [--time SECONDS | --runs N] [--seed S] [--jobs J] [TARGET...]
# Defaults: 10 seconds a target, seed 1. The test command runs it this way; bench/fuzz.sh longer.
# New inputs found go to build-fuzz/corpus/<parser>/, never into the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
limit=(-max_total_time=10) seed=1 targets=()
while (($#)); do
  case $1 in
    --time) limit=(-max_total_time="$2"); shift 2 ;;
    --runs) limit=(-runs="$2"); shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
BUILD=${GPT2_FUZZ_BUILD_DIR:-build-fuzz}
if [[ ${GPT2_FUZZ_NO_BUILD:-0} != 1 ]]; then
  CC=clang-14 CXX=clang++-14 GPT2_BUILD_DIR=$BUILD GPT2_BUILD_TARGET=fuzzers scripts/build.sh -DGPT2D_FUZZ=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi
((${#targets[@]})) || mapfile -t targets < <(cd tests/fuzz && ls *_fuzz.cc | sed 's/\.cc$//')
mkdir -p "$BUILD/artifacts"
printf '%-24s %12s %8s %8s %8s\n' target execs exec/s cov ft
total=0
for t in "${targets[@]}"; do
  parser=${t%_fuzz}
  out="$BUILD/corpus/$parser"
  mkdir -p "$out"
  dict=()
  for d in "tests/fuzz/dict/$parser.dict" "tests/fuzz/dict/$(cat "tests/fuzz/dict/$parser.uses" 2>/dev/null || echo none).dict"; do
    [[ -f $d ]] && { dict=(-dict="$d"); break; }
  done
  log="$BUILD/$t.log"
  # Files the file-reading targets write go to memory, not a disk.
  export TMPDIR=${TMPDIR:-/dev/shm}
  # ASan's leak check runs once at exit (a parser that leaks fails there too).
  if ! ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      "$BUILD/tests/fuzz/$t" "${limit[@]}" -seed="$seed" -print_final_stats=1 "${dict[@]}" \
      -artifact_prefix="$BUILD/artifacts/$t-" -timeout=25 -rss_limit_mb=2048 -max_len=65536 \
      "$out" "tests/fuzz/corpus/$parser" >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz: $t failed (log $log; inputs under $BUILD/artifacts/)" >&2
    exit 1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  printf '%-24s %12s %8s %8s %8s\n' "$t" "$execs" "$rate" "${cov:--}" "${ft:--}"
  total=$((total + execs))
done
echo "total executions: $total"
