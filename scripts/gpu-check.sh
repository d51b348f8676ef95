#!/usr/bin/env bash
# The GPU check (docs/gpu.md): the CUDA paths against the CPU's and against PyTorch/transformers on
# the same GPU, within one short lease. One line per check (PASS/FAIL and figures) and a JSON report.
#
#   scripts/gpu-deps.sh                      # here, once: Debian's libraries into .gpu-deps/ (~60 MiB)
#   run(command="scripts/gpu-check.sh", carry=[".gpu-deps"], timeout_s=540)    # on the lent machine
#   scripts/gpu-check.sh --device cpu        # the dry run, part of scripts/test.sh: build/, small shapes
#
# On the GPU machine (CUDA 13 with nvcc, CMake, ninja, a Python with torch and transformers; no
# Debian -dev packages, no network) it builds gpt2-worker and gpt2_logits into build-gpu/ against
# that machine's torch and the unpacked .debs, then runs scripts/gpu_check.py on cuda. The report
# goes to $OUT/gpu-check.json when the device tool's $OUT is set, else runs/gpu-check.json.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
[[ "${1:-}" == --device ]] && DEVICE=${2:?--device cpu|cuda}
REPORT=${OUT:-runs}/gpu-check${DEVICE/cuda/}.json

if [[ $DEVICE == cpu ]]; then
  BUILD=${GPT2_BUILD_DIR:-build}
  exec .venv/bin/python scripts/gpu_check.py --build "$BUILD" --device cpu --small --report "runs/gpu-check-dry.json"
fi

PY=$(command -v "${PYTHON:-python3}")
DEPS=$(pwd)/.gpu-deps/root
[[ -d $DEPS ]] || { echo "FAIL setup: no $DEPS (scripts/gpu-deps.sh, then carry .gpu-deps)"; exit 1; }
LIB=$DEPS/usr/lib/x86_64-linux-gnu
export PATH=$DEPS/usr/bin:$PATH LD_LIBRARY_PATH=$LIB:$DEPS/usr/lib:${LD_LIBRARY_PATH:-}
export PKG_CONFIG_SYSROOT_DIR=$DEPS PKG_CONFIG_PATH=$LIB/pkgconfig:$DEPS/usr/share/pkgconfig
echo "gpu-check: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
echo "gpu-check: torch $("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)'), $(nproc) cores"
start=$SECONDS
# The build: this machine's torch (GPT2D_PYTHON), Hopper's SASS only (the check's GPU), Release.
cmake -S . -B build-gpu -G Ninja -Wno-dev -DCMAKE_BUILD_TYPE=Release -DGPT2D_PYTHON="$PY" \
  -DCMAKE_PREFIX_PATH="$DEPS/usr;$LIB/cmake" -DTORCH_CUDA_ARCH_LIST=9.0 \
  -DProtobuf_PROTOC_EXECUTABLE="$DEPS/usr/bin/protoc" >build-gpu.configure.log 2>&1 ||
  { tail -40 build-gpu.configure.log; echo "FAIL build: configure (build-gpu.configure.log)"; exit 1; }
cmake --build build-gpu -j "$(nproc)" --target gpt2-worker gpt2_logits >build-gpu.log 2>&1 ||
  { grep -m20 -B2 -A6 'error' build-gpu.log; echo "FAIL build (build-gpu.log)"; exit 1; }
echo "PASS build: {\"seconds\": $((SECONDS - start))}"
exec "$PY" scripts/gpu_check.py --build build-gpu --device cuda --report "$REPORT"
