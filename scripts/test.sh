#!/usr/bin/env bash
# Sets up this machine (scripts/setup.sh), builds, and runs every test:
#   1. C++ unit and integration tests (GoogleTest through ctest)
#   2. the whole ctest suite again under AddressSanitizer + UBSan (a Debug build in build-asan/), and every
#      parser's libFuzzer target briefly (build-fuzz/)
#   3. the reference tests against transformers, tiktoken and friends (pytest)
#   4. the cluster tests: gpt2d, gpt2-worker daemons, gpt2ctl, Prometheus, a grpcio client (pytest),
#      and the GPU check's dry run on the CPU (scripts/gpu-check.sh --device cpu)
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

# The same suite under ASan + UBSan, in a Debug build of everything (about as long to build as the
# main one; the tests take ~2 minutes more). libtorch itself is not instrumented; leak checking
# would report its intentional process-lifetime allocations, so it is off. Everything else
# (overflows, use-after-free, mismatched new/delete across the protobuf boundary, undefined
# behaviour in our SIMD kernels) stops the test that hits it.
GPT2_BUILD_DIR=build-asan scripts/build.sh -DGPT2D_ASAN=ON -DCMAKE_BUILD_TYPE=Debug
ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j "$(nproc)" --timeout 900
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
# The GPU check's dry run (docs/gpu.md): the same checks on the CPU with small shapes, so that the
# script a lent GPU machine runs cannot rot between the sessions that have one.
GPT2_BUILD_DIR=$(pwd)/build scripts/gpu-check.sh --device cpu
echo "== GPU check dry run done after ${SECONDS}s"

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
