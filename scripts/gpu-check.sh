#!/usr/bin/env bash
# The GPU check (docs/gpu.md): the CUDA paths against the CPU's and against PyTorch/transformers on
# the same GPU, within one short lease. One line per check (PASS/FAIL and figures) and a JSON report.
#
#   scripts/gpu-deps.sh                      # here, once: Debian's libraries and the vocabulary into .gpu-deps/
#   run(command="scripts/gpu-check.sh", carry=[".gpu-deps"], timeout_s=540)    # on the lent machine
#   scripts/gpu-check.sh --device cpu        # the dry run, part of scripts/test.sh: build/, small shapes
#   scripts/gpu-check.sh --rehearse          # the lent machine's build, then the checks on its CPU
#                                            # (scripts/gpu-rehearsal.sh runs it in a Debian 13 root)
#
# On the GPU machine (CUDA 13 with nvcc, CMake, ninja, a Python with torch and transformers; no
# Debian -dev packages, no network) it builds gpt2-worker, gpt2_logits and collectives into
# build-gpu/ against that machine's torch and the unpacked .debs, then runs scripts/gpu_check.py on
# cuda. The report goes to $OUT/gpu-check.json when the device tool's $OUT is set, else runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=cuda
case "${1:-}" in
  --device) MODE=${2:?--device cpu|cuda} ;;
  --rehearse) MODE=rehearse ;;
  "") ;;
  *) echo "usage: gpu-check.sh [--device cpu|cuda | --rehearse]" >&2; exit 2 ;;
esac

if [[ $MODE == cpu ]]; then
  BUILD=${GPT2_BUILD_DIR:-build}
  exec .venv/bin/python scripts/gpu_check.py --build "$BUILD" --device cpu --small --report "runs/gpu-check-dry.json"
fi
REPORT=${OUT:-runs}/gpu-check.json
[[ $MODE == rehearse ]] && REPORT=${OUT:-runs}/gpu-check-rehearse.json

PY=$(command -v "${PYTHON:-python3}")
DEPS=$(pwd)/.gpu-deps/root
[[ -d $DEPS ]] || { echo "FAIL setup: no $DEPS (scripts/gpu-deps.sh, then carry .gpu-deps)"; exit 1; }
# The vocabulary is not in git (scripts/setup.sh fetches it): it travels in .gpu-deps.
if [[ ! -s assets/gpt2.tiktoken ]]; then
  mkdir -p assets && cp .gpu-deps/gpt2.tiktoken assets/ ||
    { echo "FAIL setup: no .gpu-deps/gpt2.tiktoken (rerun scripts/gpu-deps.sh)"; exit 1; }
fi
LIB=$DEPS/usr/lib/x86_64-linux-gnu
# The bundle's libraries are older than a newer machine's own (its libssl, say): they are never put
# on the whole environment's LD_LIBRARY_PATH, where the machine's cmake and python would load them.
# The bundle's programs run through wrappers that set it for themselves alone (grpc_cpp_plugin
# inherits protoc's), the linker finds them through -rpath-link, and our binaries through their
# DT_RPATH (which, unlike RUNPATH, also serves the libraries' own dependencies: gRPC's abseil).
TOOLS=$(pwd)/build-gpu-tools
mkdir -p "$TOOLS"
for tool in protoc pkgconf; do
  printf '#!/bin/sh\nLD_LIBRARY_PATH=%s:%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} exec %s "$@"\n' \
    "$LIB" "$DEPS/usr/lib" "$DEPS/usr/bin/$tool" >"$TOOLS/$tool"
  chmod +x "$TOOLS/$tool"
done
export PKG_CONFIG_SYSROOT_DIR=$DEPS PKG_CONFIG_PATH=$LIB/pkgconfig:$DEPS/usr/share/pkgconfig PKG_CONFIG_LIBDIR=$LIB/pkgconfig
echo "gpu-check: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
echo "gpu-check: torch $("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)'), $(nproc) cores, $(c++ --version | head -1)"
# The build's logs come back with the report ($OUT) when the build fails.
keep_logs() { [[ -n ${OUT:-} ]] && cp build-gpu.configure.log build-gpu.log "$OUT/" 2>/dev/null; return 0; }
start=$SECONDS
# The build: this machine's torch (GPT2D_PYTHON), Hopper's SASS only (the check's GPU), Release.
LINK="-Wl,-rpath-link,$LIB -Wl,--disable-new-dtags"
# Debian's multiarch headers (openssl/opensslconf.h) are in a directory the compiler searches only
# under /usr, never under a prefix.
INC="-isystem $DEPS/usr/include/x86_64-linux-gnu"
cmake -S . -B build-gpu -G Ninja -Wno-dev -DCMAKE_BUILD_TYPE=Release -DGPT2D_PYTHON="$PY" \
  -DCMAKE_PREFIX_PATH="$DEPS/usr;$LIB/cmake" -DTORCH_CUDA_ARCH_LIST=9.0 \
  -DPKG_CONFIG_EXECUTABLE="$TOOLS/pkgconf" -DProtobuf_PROTOC_EXECUTABLE="$TOOLS/protoc" \
  -DGRPC_CPP_PLUGIN="$DEPS/usr/bin/grpc_cpp_plugin" \
  -DCMAKE_C_FLAGS="$INC" -DCMAKE_CXX_FLAGS="$INC" -DCMAKE_EXE_LINKER_FLAGS="$LINK" -DCMAKE_SHARED_LINKER_FLAGS="$LINK" -DCMAKE_BUILD_RPATH="$LIB" \
  >build-gpu.configure.log 2>&1 ||
  { tail -40 build-gpu.configure.log; keep_logs; echo "FAIL build: configure (build-gpu.configure.log)"; exit 1; }
cmake --build build-gpu -j "$(nproc)" --target gpt2-worker gpt2_logits collectives >build-gpu.log 2>&1 ||
  { grep -m20 -B2 -A6 'error' build-gpu.log; keep_logs; echo "FAIL build (build-gpu.log)"; exit 1; }
echo "PASS build: {\"seconds\": $((SECONDS - start))}"
if [[ $MODE == rehearse ]]; then
  exec "$PY" scripts/gpu_check.py --build build-gpu --device cpu --small --report "$REPORT"
fi
exec "$PY" scripts/gpu_check.py --build build-gpu --device cuda --report "$REPORT"
