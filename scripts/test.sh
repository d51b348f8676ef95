#!/usr/bin/env bash
# Sets up this machine (scripts/setup.sh), builds, and runs every test:
#   1. C++ unit and integration tests (GoogleTest through ctest)
#   2. the libtorch + gRPC joint test, RowLinear and DecodeAttention again under AddressSanitizer (build-asan/),
#      and every parser's libFuzzer target briefly (build-fuzz/)
#   3. the reference tests against transformers, tiktoken and friends (pytest)
#   4. the cluster tests: gpt2d, gpt2-worker daemons, gpt2ctl, Prometheus, a grpcio client (pytest)
#   5. the deployment: deploy/'s files checked by their tools, the image built on a local Debian
#      base, the CPU compose stack brought up and used (pytest; starts dockerd when none runs)
# Exit status is non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS=0
scripts/setup.sh
scripts/build.sh
echo "== build done after ${SECONDS}s"

ctest --test-dir build --output-on-failure -j "$(nproc)" --timeout 600
echo "== ctest done after ${SECONDS}s"

# ASan: libtorch itself is not instrumented; leak checking would report its intentional
# process-lifetime allocations, so it is off. Everything else (overflows, use-after-free,
# mismatched new/delete across the protobuf boundary) is on.
# RowLinear and DecodeAttention (hand-written SIMD over raw pointers) run here too, and TokenStream
# (events that outlive their consumer).
for target in torch_grpc_joint_test row_linear_test decode_attention_test token_stream_test; do
  GPT2_BUILD_DIR=build-asan GPT2_BUILD_TARGET=$target scripts/build.sh -DGPT2D_ASAN=ON -DCMAKE_BUILD_TYPE=Debug
done
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
build-asan/tests/integration/torch_grpc_joint_test
build-asan/tests/unit/row_linear_test
build-asan/tests/unit/decode_attention_test
build-asan/tests/unit/token_stream_test
unset ASAN_OPTIONS UBSAN_OPTIONS
echo "== asan done after ${SECONDS}s"

# Every parser's fuzzer (clang, ASan, UBSan) on its seed corpus and regression inputs, 5 s each
# with a fixed seed: a parser that crashes on an input it once survived fails here. Longer runs:
# bench/fuzz.sh (docs/reliability.md).
scripts/fuzz.sh --time 5 --seed 1
echo "== fuzz done after ${SECONDS}s"

GPT2_BUILD_DIR=$(pwd)/build .venv/bin/python -m pytest -q -p no:cacheprovider tests/reference "$@"
echo "== reference tests done after ${SECONDS}s"
# A separate run: each directory has its own conftest.py.
GPT2_BUILD_DIR=$(pwd)/build .venv/bin/python -m pytest -q -p no:cacheprovider tests/cluster "$@"
echo "== cluster tests done after ${SECONDS}s"

# A Docker engine for the deployment tests: the one running, or one started here (and stopped at
# exit; nothing else is touched). Debian's client: its BuildKit needs no buildx plugin.
DOCKER=/usr/bin/docker
started_dockerd=""
if ! $DOCKER info >/dev/null 2>&1; then
  dockerd >build/dockerd.log 2>&1 &
  started_dockerd=$!
  trap 'kill "$started_dockerd" 2>/dev/null; wait "$started_dockerd" 2>/dev/null' EXIT
  for _ in $(seq 60); do $DOCKER info >/dev/null 2>&1 && break; sleep 0.5; done
  $DOCKER info >/dev/null 2>&1 || { echo "dockerd did not start:"; tail -20 build/dockerd.log; exit 1; }
fi
DOCKER=$DOCKER GPT2_BUILD_DIR=$(pwd)/build .venv/bin/python -m pytest -q -p no:cacheprovider tests/deploy "$@"
echo "== all tests passed after ${SECONDS}s"
